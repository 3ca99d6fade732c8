#!/usr/bin/env bash
# ctest's run of the Redis example: a private redis-server on a unix socket, two workers,
# the client; everything stopped after. Usage: run_example.sh REDIS_SERVER REDIS_POOL
set -euo pipefail
redis_server=$1 program=$2
dir=$(mktemp -d /tmp/mproc-redis-example-XXXXXX)
workers=()
server=
cleanup() {  # the workers first, while Redis is there to take their goodbyes
  for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z $server ]] || { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  rm -rf "$dir"
}
trap cleanup EXIT
"$redis_server" --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" --save "" \
  --logfile "$dir/redis.log" &
server=$!
for _ in $(seq 100); do [[ -S $dir/redis.sock ]] && break; sleep 0.05; done
url="unix://$dir/redis.sock"
"$program" worker "$url" > "$dir/worker1.log" 2>&1 &
workers+=($!)
"$program" worker "$url" > "$dir/worker2.log" 2>&1 &
workers+=($!)
"$program" client "$url"
# The task lines the workers printed, whole.
cat "$dir"/worker*.log | grep -c '^结束执行任务[0-9] (' | sed 's/^/任务行: /'
