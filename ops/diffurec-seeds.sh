#!/usr/bin/env bash
# DiffuRec, DiffuRecSys V1 and V2 (and, with EMB=cache, LLM2DiffuRecSys: V2 started from text
# embeddings) over several seeds on one data set, then mean and std of the test metrics under
# the DiffuRecSys protocol (all items) and with the history excluded (issue 5).
#
#   ops/diffurec-seeds.sh                      # Beauty, seeds 42 43 44, 10 epochs
#   SEEDS="42 43" EPOCHS=41 JOBS=1 ops/diffurec-seeds.sh
#   EMB=var/diffurec/beauty.emb ops/diffurec-seeds.sh   # adds llm2diffurecsys runs
#   VARIANTS= EMB=var/diffurec/beauty.emb ops/diffurec-seeds.sh   # llm2diffurecsys only
#
# Resumable: a finished run (its .eval.json exists) is skipped, an interrupted one continues
# from its checkpoint. JOBS runs go side by side, each on STREAMREC_THREADS=THREADS (default
# 2 jobs x 1 thread on 2 cores). Logs, snapshots and reports: $OUT (default var/diffurec).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
DATA=${DATA:-${SHARED:-../shared}/data/beauty}
OUT=${OUT:-var/diffurec}
SEEDS=${SEEDS:-42 43 44}
VARIANTS=${VARIANTS-diffurec diffurecsys-v1 diffurecsys-v2}
EPOCHS=${EPOCHS:-10}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
EMB=${EMB:-}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
[ -x "$B" ] || { echo "diffurec-seeds: $B not built; run make release" >&2; exit 2; }

runs=()
for seed in $SEEDS; do
  for v in $VARIANTS; do runs+=("$v:$seed"); done
  [ -n "$EMB" ] && runs+=("llm2diffurecsys:$seed")
done

one() {
  local name=$1 seed=$2 model=$1 emb=""
  if [ "$name" = llm2diffurecsys ]; then model=diffurecsys-v2; emb="--embeddings $EMB"; fi
  local base="$OUT/$(basename "$DATA")-$name-s$seed"
  [ -s "$base.eval.json" ] && { echo "skip $base (done)"; return 0; }
  local resume=""; [ -f "$base.snap.ckpt" ] && resume="--resume"
  echo "$(date +%T) start $base"
  STREAMREC_THREADS=$THREADS "$B" train --model "$model" $emb --data "$DATA" --out "$base.snap" --seed "$seed" \
    --epochs "$EPOCHS" --eval-every 5 --patience 100 --sample-steps 1 $resume $EXTRA > "$base.train.log" 2>&1
  STREAMREC_THREADS=$THREADS "$B" evaluate --snapshot "$base.snap" --data "$DATA" --json "$base.eval.json" > "$base.eval.txt" 2>&1
  echo "$(date +%T) done  $base: $(grep 'validation NDCG' "$base.train.log" | tail -n 1)"
}

pids=()
for r in "${runs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  one "${r%%:*}" "${r##*:}" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done

python3 ops/seeds-table.py "$OUT" "$(basename "$DATA")"
exit $status
