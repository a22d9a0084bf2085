#!/usr/bin/env bash
# BERT4Rec (or LLM2BERT4Rec) on ML-1M or Beauty, resumable: run it again after an interruption
# and it continues from its checkpoint. Settings are the train.bert4rec.* keys; defaults here
# follow Klenitskiy & Vasilev's BERT4Rec for ML-1M (d 64, 2 blocks, 2 heads, mask 0.2,
# dropout 0.1, N(0, 0.02) init, batch 128, Adam 1e-3), with early stopping on validation.
# Stage 2 (STEP_EPOCHS, default 10; 0 = none): that many more epochs from the last checkpoint at
# a tenth of the learning rate, as ops/ml1m-sasrec.sh; the best validated weights win.
#   DATA=../shared/data/ml-1m MAXLEN=200 ops/bert4rec.sh
#   DATA=../shared/data/beauty MAXLEN=50 MODEL=llm2bert4rec EMBEDDINGS=var/beauty/items.emb ops/bert4rec.sh
# Then: streamrec evaluate --snapshot $OUT/$MODEL.snap --data $DATA (done at the end of each stage)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
D=${DATA:-${SHARED:-../shared}/data/ml-1m}
M=${MODEL:-bert4rec}
O=${OUT:-var/$(basename "$D")-$M-s${SEED:-42}}; mkdir -p "$O"
[ -x "$B" ] || { echo "bert4rec: $B not built; run make release" >&2; exit 2; }
args=(--model "$M" --data "$D" --out "$O/$M.snap" --max-length "${MAXLEN:-200}" --width "${WIDTH:-64}" --blocks "${BLOCKS:-2}"
      --heads "${HEADS:-2}" --mask-prob "${MASK:-0.2}" --dropout "${DROPOUT:-0.1}" --batch-size "${BATCH:-128}"
      --train-windows "${WINDOWS:-1}" --eval-every "${EVAL_EVERY:-5}" --seed "${SEED:-42}")
[ -n "${EMBEDDINGS:-}" ] && args+=(--embeddings "$EMBEDDINGS")
evaluate() { "$B" evaluate --snapshot "$O/$M.snap" --data "$D" --json "$O/$1.eval.json" | tee "$O/$1.eval.txt"; }
if [ ! -f "$O/stage1.done" ]; then
  resume=(); [ -f "$O/$M.snap.ckpt" ] && resume=(--resume)
  "$B" train "${args[@]}" --epochs "${EPOCHS:-400}" --patience "${PATIENCE:-6}" "${resume[@]}" 2>&1 | tee -a "$O/train.log" | grep -v "step .*/"
  evaluate stage1
  touch "$O/stage1.done"
fi
step=${STEP_EPOCHS:-10}
[ "$step" -gt 0 ] || exit 0
if [ ! -f "$O/stage2.target" ]; then
  done_epochs=$(grep -a -o '"epochs_done":"[0-9]*' "$O/$M.snap.ckpt" | head -n 1 | grep -o '[0-9]*$')
  echo $((done_epochs + step)) > "$O/stage2.target"
fi
lr=$(python3 -c "print(${LR:-1e-3} / 10)")
"$B" train "${args[@]}" --epochs "$(cat "$O/stage2.target")" --patience 1000 --lr "$lr" --resume 2>&1 | tee -a "$O/stage2.log" | grep -v "step .*/"
evaluate stage2
