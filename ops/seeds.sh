#!/usr/bin/env bash
# SASRec, BERT4Rec and their text-started variants over several seeds on one data set, with the
# recipes of docs/benchmarks.md, then mean ± std of the test metrics (history excluded and all
# items) via ops/seeds-table.py (issue 18).
#
#   ops/seeds.sh                                           # Beauty: sasrec llm2sasrec, seeds 42 43 44
#   VARIANTS="bert4rec llm2bert4rec" ops/seeds.sh
#   DATA=../shared/data/ml-1m SEEDS=42 VARIANTS=bert4rec ops/seeds.sh
#   EXTRA="--text-anchor 1" VARIANTS=llm2sasrec NAME=llm2sasrec-anchor1 ops/seeds.sh
#
# Recipes (select on validation only; early stopping on validation NDCG@10):
#   Beauty  SASRec   --max-length 50 --dropout 0.5, eval every 5, patience 3 (docs/benchmarks.md)
#   Beauty  BERT4Rec --max-length 50 --mask-prob 0.6 (BERT4Rec's paper for Beauty) --dropout 0.3, eval every 5, patience 4
#   ML-1M   SASRec   ops/ml1m-sasrec.sh's stage 1; BERT4Rec: ops/bert4rec.sh's defaults
# The llm2 variants add --embeddings $EMB (default var/text/DATA.emb, made with `streamrec embed`
# if missing). STEP=N (default 0): after each run, N more epochs from its last checkpoint at a
# tenth of the learning rate (validated every epoch; the best validated weights win), tabulated as
# NAME+step, as ops/ml1m-sasrec.sh's stage 2. Resumable: a finished run (its .eval.json exists)
# is skipped, an interrupted one continues from its checkpoint. JOBS runs go side by side on
# THREADS threads each (default 2 x 1). FINISH=1 ends unfinished runs where their checkpoints
# are: each is saved with its best validated weights so far and evaluated (a shorter budget than
# early stopping would give it; the log says how many epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
DATA=${DATA:-${SHARED:-../shared}/data/beauty}
SET=$(basename "$DATA")
OUT=${OUT:-var/seeds}
SEEDS=${SEEDS:-42 43 44}
VARIANTS=${VARIANTS:-sasrec llm2sasrec}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
EMB=${EMB:-var/text/$SET.emb}
EXTRA=${EXTRA:-}
NAME=${NAME:-}
STEP=${STEP:-0}
FINISH=${FINISH:-0}
mkdir -p "$OUT" "$(dirname "$EMB")"
[ -x "$B" ] || { echo "seeds: $B not built; run make release" >&2; exit 2; }
case " $VARIANTS " in *" llm2"*)
  [ -s "$EMB" ] || "$B" embed --items "$DATA/items.tsv" --out "$EMB" --threads "$THREADS" ;;
esac

recipe() {  # family -> its arguments on this data set
  case "$SET:$1" in
    beauty:sasrec)   echo --max-length 50 --dropout 0.5 --epochs 200 --eval-every 5 --patience 3 ;;
    beauty:bert4rec) echo --max-length 50 --dropout 0.3 --mask-prob 0.6 --epochs 400 --eval-every 5 --patience 4 ;;
    ml-1m:sasrec)    echo --max-length 200 --batch-size 64 --width 128 --heads 2 --blocks 3 --dropout 0.2 --init-std 0.02 --train-windows 0 --epochs 100 --eval-every 2 --patience 6 ;;
    ml-1m:bert4rec)  echo --max-length 200 --heads 2 --mask-prob 0.2 --dropout 0.1 --init-std 0.02 --epochs 400 --eval-every 5 --patience 6 ;;
    *) echo "seeds: no recipe for $1 on $SET" >&2; return 2 ;;
  esac
}

one() {
  local model=$1 seed=$2 family=${1#llm2} emb=""
  [ "$model" != "$family" ] && emb="--embeddings $EMB"
  local base="$OUT/$SET-${NAME:-$model}-s$seed" args
  args=$(recipe "$family")
  if [ ! -s "$base.eval.json" ]; then
    local resume=""; [ -f "$base.snap.ckpt" ] && resume="--resume"
    if [ "$FINISH" = 1 ]; then
      [ -n "$resume" ] || return 0
      resume="--resume --epochs $(grep -a -o '"epochs_done":"[0-9]*' "$base.snap.ckpt" | head -n 1 | grep -o '[0-9]*$')"
    fi
    echo "$(date +%T) start $base"
    # shellcheck disable=SC2086
    STREAMREC_THREADS=$THREADS "$B" train --model "$model" $emb --data "$DATA" --out "$base.snap" --seed "$seed" \
      $args $EXTRA $resume >> "$base.train.log" 2>&1
    STREAMREC_THREADS=$THREADS "$B" evaluate --snapshot "$base.snap" --data "$DATA" --json "$base.eval.json" > "$base.eval.txt" 2>&1
    echo "$(date +%T) done  $base: $(grep -a 'validation NDCG' "$base.train.log" | tail -n 1)"
  fi
  [ "$STEP" -gt 0 ] || return 0
  local step="$OUT/$SET-${NAME:-$model}+step-s$seed"
  [ -s "$step.eval.json" ] && return 0
  if [ ! -f "$step.target" ]; then
    cp "$base.snap.ckpt" "$step.snap.ckpt"
    echo $(( $(grep -a -o '"epochs_done":"[0-9]*' "$step.snap.ckpt" | head -n 1 | grep -o '[0-9]*$') + STEP )) > "$step.target"
  fi
  local lr; lr=$(python3 -c "import re; a='$args $EXTRA'; m=re.search(r'--(?:lr|learning-rate) (\S+)', a); print(float(m.group(1) if m else 1e-3) / 10)")
  # shellcheck disable=SC2086
  STREAMREC_THREADS=$THREADS "$B" train --model "$model" $emb --data "$DATA" --out "$step.snap" --seed "$seed" \
    $args $EXTRA --epochs "$(cat "$step.target")" --eval-every 1 --patience 1000 --lr "$lr" --resume > "$step.train.log" 2>&1
  STREAMREC_THREADS=$THREADS "$B" evaluate --snapshot "$step.snap" --data "$DATA" --json "$step.eval.json" > "$step.eval.txt" 2>&1
  echo "$(date +%T) done  $step: $(grep -a 'validation NDCG' "$step.train.log" | tail -n 1)"
}

pids=()
for seed in $SEEDS; do
  for v in $VARIANTS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
    one "$v" "$seed" &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
python3 ops/seeds-table.py "$OUT" "$SET"
exit $status
