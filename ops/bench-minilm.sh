#!/usr/bin/env bash
# Native MiniLM encoder throughput on ML-1M titles (title + " " + genres), 2 threads, batch 64,
# best of 3. Builds streamrec-textbench in release first. Extra arguments go to the bench, e.g.
#   ops/bench-minilm.sh --threads 1 --batch 32
# Compare with the PyTorch peer in the same session (absolute figures drift between sessions):
#   /work/main/.peer-venv/bin/python ../shared/peers/minilm_peer.py models/all-MiniLM-L6-v2 \
#       ../shared/data/ml-1m/items.tsv --threads 2 --batch 64
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scratch="${STREAMREC_SCRATCH:-.build}"
items="${STREAMREC_ITEMS:-$root/../shared/data/ml-1m/items.tsv}"
model="${STREAMREC_MINILM_DIR:-$root/models/all-MiniLM-L6-v2}"
[ -f "$model/model.safetensors" ] || { echo "bench-minilm: no model in $model; run make setup" >&2; exit 1; }
[ -f "$items" ] || { echo "bench-minilm: no $items; set STREAMREC_ITEMS to an items.tsv" >&2; exit 1; }
swift build -c release --scratch-path "$scratch" --product streamrec-textbench 2>&1 | tail -n 2 >&2
"$scratch/release/streamrec-textbench" --model "$model" --items "$items" --threads 2 --batch 64 --repeats 3 "$@"
