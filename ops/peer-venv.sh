#!/usr/bin/env bash
# Creates .peer-venv with the PyTorch speed peers' dependencies (torch, sentence-transformers),
# idempotently. Only `make bench` needs it; it is large (torch's wheels), so `make test` does not.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.peer-venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
  exit 0
fi
echo "setup: installing the PyTorch peer into .peer-venv (several GB, once)"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$venv/bin/python" -m pip install --quiet torch sentence-transformers
