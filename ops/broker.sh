#!/usr/bin/env bash
# A real Kafka-protocol broker on loopback for tests and local runs: tansu 0.6 storing its data in
# a local S3 server (moto), so data survives a broker restart. Idempotent; state and logs live in
# var/broker/. Usage: ops/broker.sh start|stop|restart|status|env|logs
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# STREAMREC_VENV: a venv elsewhere (e.g. a git worktree using the main checkout's .venv).
venv="${STREAMREC_VENV:-$root/.venv}"
dir="$root/var/broker"
broker_port="${STREAMREC_BROKER_PORT:-19092}"
s3_port="${STREAMREC_S3_PORT:-19000}"
bucket="tansu"
py="$venv/bin/python"

need_venv() {
  [ -x "$venv/bin/tansu" ] && [ -e "$venv/librdkafka/librdkafka.so.1" ] || "$root/ops/python-venv.sh"
}

running() {  # running NAME -> 0 if its pid file names a live process
  local pid_file="$dir/$1.pid"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

wait_port() {  # wait_port PORT SECONDS
  local deadline=$((SECONDS + $2))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

s3_env() {
  export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
  export AWS_ACCESS_KEY_ID=streamrec AWS_SECRET_ACCESS_KEY=streamrec AWS_DEFAULT_REGION=us-east-1
}

start_s3() {
  running s3 && return 0
  mkdir -p "$dir"
  "$py" -m moto.server -H 127.0.0.1 -p "$s3_port" >"$dir/s3.log" 2>&1 &
  echo $! >"$dir/s3.pid"
  wait_port "$s3_port" 30 || { echo "broker.sh: S3 server did not start; see $dir/s3.log" >&2; exit 1; }
  s3_env
  "$py" - "$s3_port" "$bucket" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="streamrec", aws_secret_access_key="streamrec")
s3.create_bucket(Bucket=sys.argv[2])
PY
}

start_tansu() {
  running tansu && return 0
  s3_env
  "$venv/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$broker_port" \
    --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
    --storage-engine "s3://$bucket/" >>"$dir/tansu.log" 2>&1 &
  echo $! >"$dir/tansu.pid"
  wait_port "$broker_port" 30 || { echo "broker.sh: tansu did not open port $broker_port; see $dir/tansu.log" >&2; exit 1; }
  # Ready means a real metadata round trip, through the librdkafka that speaks to tansu.
  LD_LIBRARY_PATH="$venv/librdkafka" "$py" - "$broker_port" <<'PY' || { echo "broker.sh: tansu does not answer metadata requests; see $dir/tansu.log" >&2; exit 1; }
import sys, time
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "log_level": 3})
deadline = time.time() + 30
while True:
    try:
        admin.list_topics(timeout=2)
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.3)
PY
}

stop_one() {
  local pid_file="$dir/$1.pid"
  if running "$1"; then
    local pid; pid="$(cat "$pid_file")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

case "${1:-}" in
  start)
    need_venv
    start_s3
    start_tansu
    echo "broker: 127.0.0.1:$broker_port (tansu, S3 storage on 127.0.0.1:$s3_port)"
    ;;
  stop)
    stop_one tansu
    stop_one s3
    ;;
  restart)  # the broker only; its data stays in S3
    need_venv
    stop_one tansu
    start_s3
    start_tansu
    ;;
  status)
    for p in s3 tansu; do
      if running "$p"; then echo "$p: running (pid $(cat "$dir/$p.pid"))"; else echo "$p: stopped"; fi
    done
    ;;
  env)
    echo "export STREAMREC_BROKERS=127.0.0.1:$broker_port"
    echo "export LD_LIBRARY_PATH=$venv/librdkafka"
    echo "export STREAMREC_STATE_CHANGELOG_ISOLATION=read_uncommitted"
    ;;
  logs)
    tail -n 50 "$dir"/*.log
    ;;
  *)
    echo "usage: ops/broker.sh start|stop|restart|status|env|logs" >&2
    exit 2
    ;;
esac
