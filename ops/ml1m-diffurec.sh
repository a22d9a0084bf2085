#!/usr/bin/env bash
# DiffuRecSys V2 on ML-1M under a budget (issue 5): ML-1M has about a million prefix samples,
# which at 2 cores is hours per epoch, so each epoch trains on a fresh random 10% of them
# (--prefix-fraction 0.1), at max length 50 and batch 256, for 6 epochs, validating after
# each. About 45 min on one core (session 12: docs/benchmarks.md). Resumable: run it again after
# an interruption (EPOCHS=N continues a finished run to N epochs; PATIENCE=N changes the
# early stop, 6 validations without a gain). MODEL=diffurec or diffurecsys-v1 runs the other
# variants the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
D=${DATA:-${SHARED:-../shared}/data/ml-1m}
O=${OUT:-var/ml1m}; mkdir -p "$O"
M=${MODEL:-diffurecsys-v2}
[ -x "$B" ] || { echo "ml1m-diffurec: $B not built; run make release" >&2; exit 2; }
resume=(); [ -f "$O/$M.snap.ckpt" ] && resume=(--resume)
"$B" train --model "$M" --data "$D" --out "$O/$M.snap" --max-length 50 --batch-size 256 --prefix-fraction 0.1 \
  --epochs "${EPOCHS:-6}" --eval-every 1 --patience "${PATIENCE:-6}" "${resume[@]}" 2>&1 | tee "$O/$M.train.log" | grep -v "step .*/"
"$B" evaluate --snapshot "$O/$M.snap" --data "$D" --json "$O/$M.eval.json" | tee "$O/$M.eval.txt"
