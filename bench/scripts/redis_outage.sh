#!/usr/bin/env bash
# Cluster mode under load with Redis killed for 10 s: one node, its Redis, `ocpp-bench events` with 50
# stations for 30 s; Redis is SIGKILLed 11 s after the start and restarted (same AOF dir) 10 s later.
# Prints the node's write-ahead metrics every second, the harness's summary, and how many readings
# Redis holds at the end (every acknowledged MeterValues is one reading).
# Run from the repository root after `cargo build --release`; needs redis-server and redis-cli.
set -u
port=${REDIS_PORT:-6390}
redis_dir=$(mktemp -d)
data_dir=$(mktemp -d)
start_redis() {
  redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync always --save "" \
    --dir "$redis_dir" >>"$redis_dir/log" 2>&1 &
}
start_redis
sleep 1
OCPP_CSS__STORAGE__DATA_DIR=$data_dir OCPP_CSS__LOG__LEVEL=warn \
  OCPP_CSS__LIMITS__STATION_MESSAGES_PER_SEC=1000000 OCPP_CSS__LIMITS__STATION_MESSAGE_BURST=1000000 \
  OCPP_CSS__CLUSTER__REDIS_URL=redis://127.0.0.1:$port/0 OCPP_CSS__SERVER__NODE_ID=bench-1 \
  ./target/release/ocpp-css serve >"$data_dir.log" 2>&1 &
node=$!
sleep 2
./target/release/ocpp-bench events --provision-api http://127.0.0.1:8180/api/v1 --stations 50 \
  --message meter-values --duration 30 --warmup 3 --json redis-outage.json >"$data_dir.bench" 2>&1 &
bench=$!
for t in $(seq 1 45); do
  sleep 1
  if [ "$t" = 11 ]; then pkill -9 -f "redis-server.*:$port" && echo "t=$t redis killed"; fi
  if [ "$t" = 21 ]; then start_redis; echo "t=$t redis restarted"; fi
  echo "t=$t $(curl -s localhost:8180/metrics | grep -E '^ocpp_(wal_pending|wal_oldest_age_seconds|redis_up)' \
    | sed 's/{node="bench-1"}//' | sort | tr '\n' ' ')"
done
wait $bench
grep -vE '^\[' "$data_dir.bench"
sum=0
for k in $(redis-cli -p "$port" --scan --pattern 'ocpp-css:meter:*' | grep -v meter_keys); do
  sum=$((sum + $(redis-cli -p "$port" zcard "$k")))
done
echo "readings in redis: $sum"
kill $node
wait $node
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
rm -rf "$redis_dir" "$data_dir" "$data_dir.log" "$data_dir.bench"
