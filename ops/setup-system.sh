#!/usr/bin/env bash
# Installs the Debian packages StreamRec builds and tests with. Idempotent: does nothing when
# they are already installed. Needs root (or sudo) only when something is missing.
# prometheus: for its promtool (make test-alerts).
set -euo pipefail
packages=(librdkafka-dev libleveldb-dev libopenblas-dev kcat pkg-config python3-venv curl prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# We want promtool, not a Prometheus server: on a systemd host the package starts one on :9090.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 \
   && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus
fi
