#!/usr/bin/env bash
# Nightly retrain, for cron (systemd runs `streamrec retrain --config` directly; see
# ops/systemd/streamrec-retrain.service and docs/operations.md, "Retrain runbook").
#
# Default: `streamrec retrain --config $RETRAIN_CONFIG` (default /etc/streamrec/retrain.yaml):
# build the training set from the input topic, train, score the candidate and the current model
# on the same held-out data, publish, and promote + announce only if the gate passes
# (retrain.max_regression). Then remove work directories older than two weeks.
#
# Legacy: with RETRAIN_DATA set, the old file-based flow below (train on a dataset file,
# evaluate, publish, compare, promote). Its settings, from the environment:
#
#   STREAMREC_MODEL_REGISTRY   registry directory (required; the config key model.registry)
#   RETRAIN_DATA               dataset: directory with sequences.txt, ratings.dat, or user,item,ts CSV
#   RETRAIN_MODEL              transition | sasrec (default transition)
#   RETRAIN_TRAIN_ARGS         extra `streamrec train` flags, e.g. "--epochs 200 --max-length 200"
#   RETRAIN_DATA_WINDOW        free text recorded in the manifest (default: the dataset path and today's date)
#   RETRAIN_METRIC             gate metric (default validation_ndcg@10)
#   RETRAIN_MAX_DROP_PCT       largest allowed relative drop, percent (default 2)
#   RETRAIN_KEEP               versions kept by prune (default 10; current and its predecessor always kept)
#   STREAMREC_KAFKA_BROKERS    when set, promote announces on the model-updates topic
#
# Both: RETRAIN_WORK (default /var/lib/streamrec/retrain), STREAMREC_BIN (default: streamrec on
# PATH, else /usr/local/bin/streamrec). Exit codes: 0 promoted (or the same model again), 3 gate
# failed (published, not promoted), anything else: a step failed (its error is in the log).
set -euo pipefail

log() { printf '%s retrain: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

BIN=${STREAMREC_BIN:-$(command -v streamrec || echo /usr/local/bin/streamrec)}
WORK=${RETRAIN_WORK:-/var/lib/streamrec/retrain}
[ -x "$BIN" ] || die "streamrec binary not found at $BIN; set STREAMREC_BIN"

if [ -z "${RETRAIN_DATA:-}" ]; then
    CONFIG=${RETRAIN_CONFIG:-/etc/streamrec/retrain.yaml}
    [ -r "$CONFIG" ] || die "config $CONFIG not readable; set RETRAIN_CONFIG (example: ops/retrain.example.yaml) or RETRAIN_DATA for the file-based flow"
    log "streamrec retrain --config $CONFIG"
    status=0
    "$BIN" retrain --config "$CONFIG" || status=$?
    find "$WORK" -mindepth 1 -maxdepth 1 -type d -mtime +14 -exec rm -rf {} + 2>/dev/null || true
    exit "$status"
fi

# Legacy file-based flow.
REGISTRY=${STREAMREC_MODEL_REGISTRY:?set STREAMREC_MODEL_REGISTRY to the registry directory}
DATA=${RETRAIN_DATA:?set RETRAIN_DATA to the training dataset}
MODEL=${RETRAIN_MODEL:-transition}
METRIC=${RETRAIN_METRIC:-validation_ndcg@10}
MAX_DROP=${RETRAIN_MAX_DROP_PCT:-2}
KEEP=${RETRAIN_KEEP:-10}
WINDOW=${RETRAIN_DATA_WINDOW:-"$DATA as of $(date -u +%Y-%m-%d)"}

[ -e "$DATA" ] || die "dataset $DATA does not exist; set RETRAIN_DATA"

mkdir -p "$WORK"
RUN=$(mktemp -d "$WORK/$(date -u +%Y%m%dT%H%M%SZ)-XXXX")
log "run $RUN: model $MODEL on $DATA"

# 1. Train with the last two items of each user held out, so the evaluation below is honest.
#    The evaluated snapshot is the one served: what passed the gate is what runs.
# shellcheck disable=SC2086
"$BIN" train --model "$MODEL" --data "$DATA" --out "$RUN/candidate.snap" --holdout loo ${RETRAIN_TRAIN_ARGS:-}

# 2. Evaluate the candidate, and the current model on the same validation cases (a fair baseline).
"$BIN" evaluate --snapshot "$RUN/candidate.snap" --data "$DATA" --split validation --json "$RUN/candidate.eval.json"
BASELINE=()
CURRENT=$("$BIN" models current --registry "$REGISTRY" 2>/dev/null || true)
if [ -n "$CURRENT" ]; then
    if "$BIN" evaluate --snapshot "$REGISTRY/versions/$CURRENT/model.snap" --data "$DATA" --split validation \
        --json "$RUN/current.eval.json"; then
        BASELINE=(--baseline-eval "$RUN/current.eval.json")
    else
        log "could not evaluate the current model $CURRENT on $DATA; gating against its manifest metrics"
    fi
fi

# 3. Publish (immutable; the version is the model's content hash, so an unchanged model is a no-op).
VERSION=$("$BIN" models publish --registry "$REGISTRY" --snapshot "$RUN/candidate.snap" \
    --data-window "$WINDOW" --metrics "$RUN/candidate.eval.json")
log "published $VERSION"
if [ "${CURRENT:-}" = "$VERSION" ]; then
    log "$VERSION is already current; nothing to promote"
    exit 0
fi

# 4. Gate, then promote (announcing when brokers are configured).
if ! "$BIN" models compare "$VERSION" --registry "$REGISTRY" --metric "$METRIC" --max-drop-pct "$MAX_DROP" "${BASELINE[@]}"; then
    log "gate failed: $VERSION stays published but not promoted; current is still ${CURRENT:-none}"
    exit 3
fi
ANNOUNCE=()
if [ -n "${STREAMREC_KAFKA_BROKERS:-}" ]; then ANNOUNCE=(--brokers "$STREAMREC_KAFKA_BROKERS"); fi
"$BIN" models promote "$VERSION" --registry "$REGISTRY" "${ANNOUNCE[@]}"
log "promoted $VERSION (was ${CURRENT:-none})"

# 5. Retention: registry versions, and this job's work directories older than two weeks.
"$BIN" models prune --registry "$REGISTRY" --keep "$KEEP"
find "$WORK" -mindepth 1 -maxdepth 1 -type d -mtime +14 -exec rm -rf {} + || true
