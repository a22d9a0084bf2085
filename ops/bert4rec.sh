#!/usr/bin/env bash
# BERT4Rec (or LLM2BERT4Rec) on ML-1M or Beauty, resumable: run it again after an interruption
# and it continues from its checkpoint. Settings are the train.bert4rec.* keys; defaults here
# follow Klenitskiy & Vasilev's BERT4Rec for ML-1M (d 64, 2 blocks, 2 heads, mask 0.2,
# dropout 0.1, N(0, 0.02) init, batch 128, Adam 1e-3), with early stopping on validation.
#   DATA=../shared/data/ml-1m MAXLEN=200 ops/bert4rec.sh
#   DATA=../shared/data/beauty MAXLEN=50 MODEL=llm2bert4rec EMBEDDINGS=var/beauty/items.emb ops/bert4rec.sh
# Then: streamrec evaluate --snapshot $OUT/$MODEL.snap --data $DATA
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
D=${DATA:-${SHARED:-../shared}/data/ml-1m}
M=${MODEL:-bert4rec}
O=${OUT:-var/$(basename "$D")-$M-s${SEED:-42}}; mkdir -p "$O"
[ -x "$B" ] || { echo "bert4rec: $B not built; run make release" >&2; exit 2; }
args=(--model "$M" --data "$D" --out "$O/$M.snap" --max-length "${MAXLEN:-200}" --width "${WIDTH:-64}" --blocks "${BLOCKS:-2}"
      --heads "${HEADS:-2}" --mask-prob "${MASK:-0.2}" --dropout "${DROPOUT:-0.1}" --batch-size "${BATCH:-128}"
      --train-windows "${WINDOWS:-1}" --epochs "${EPOCHS:-400}" --eval-every "${EVAL_EVERY:-5}" --patience "${PATIENCE:-6}"
      --seed "${SEED:-42}")
[ -n "${EMBEDDINGS:-}" ] && args+=(--embeddings "$EMBEDDINGS")
[ -f "$O/$M.snap.ckpt" ] && args+=(--resume)
"$B" train "${args[@]}" 2>&1 | tee -a "$O/train.log" | grep -v "step .*/"
"$B" evaluate --snapshot "$O/$M.snap" --data "$D" --json "$O/$M.eval.json" | tee "$O/$M.eval.txt"
