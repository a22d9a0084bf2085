#!/usr/bin/env bash
# Same-budget comparison of SASRec and LLM2SASRec (issue 4), plus LLMSeqSim; logs to var/llm/.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.build/release/streamrec}
D=${SHARED:-../shared}/data
O=var/llm; mkdir -p $O
$B embed --items $D/ml-1m/items.tsv --out $O/ml1m.emb --threads 2 2>&1 | tail -1
$B embed --items $D/beauty/items.tsv --out $O/beauty.emb --threads 2 2>&1 | tail -1
for m in sasrec llm2sasrec; do
  emb=""; [ $m = llm2sasrec ] && emb="--embeddings $O/beauty.emb"
  $B train --model $m $emb --data $D/beauty --out $O/beauty-$m.snap --max-length 50 --dropout 0.5 --epochs 20 --eval-every 5 --patience 100 2>&1 | grep -v "^epoch .* step" | tail -6
  $B evaluate --snapshot $O/beauty-$m.snap --data $D/beauty --json $O/beauty-$m.eval.json > $O/beauty-$m.eval.txt 2>&1
done
for m in sasrec llm2sasrec; do
  emb=""; [ $m = llm2sasrec ] && emb="--embeddings $O/ml1m.emb"
  $B train --model $m $emb --data $D/ml-1m --out $O/ml1m-$m.snap --max-length 200 --batch-size 32 --epochs 15 --eval-every 5 --patience 100 2>&1 | grep -v "^epoch .* step" | tail -6
  $B evaluate --snapshot $O/ml1m-$m.snap --data $D/ml-1m --json $O/ml1m-$m.eval.json > $O/ml1m-$m.eval.txt 2>&1
done
for d in beauty ml1m; do
  data=$D/$d; [ $d = ml1m ] && data=$D/ml-1m
  $B evaluate --model llmseqsim --embeddings $O/$d.emb --aggregation decay --half-life 1 --data $data --json $O/$d-llmseqsim.eval.json > $O/$d-llmseqsim.eval.txt 2>&1
done
echo DONE
