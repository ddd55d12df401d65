#!/usr/bin/env bash
# A retention pass beside station traffic, for BENCHMARKS.md: one node whose tenant holds a stopped
# session of N readings from weeks ago (examples/seed_readings.rs with STOPPED=1); the same
# heartbeat fleet runs alone, then while a pass removes those readings (the tenant's meter-values
# period set to 1 day; a pass every INTERVAL seconds). Prints the fleet's heartbeat p50/p99 both
# times, how many readings the pass removed and how long it took.
#
#   bench/scripts/retention.sh OUT_DIR N target/release/ocpp-css
#
# Needs curl, jq; ocpp-bench at OCPP_BENCH; the seed_readings example built.
set -euo pipefail
out=$1
n=$2
bin=$3
seed=${SEED:-target/release/examples/seed_readings}
bench=${OCPP_BENCH:-target/release/ocpp-bench}
email=retention@bench.example
password=bench-pass-1234
port=${PORT:-8320}
fleet=${FLEET:-2000}
hb_rate=${HB_RATE:-1000}
hold=${HOLD:-30}
interval=${INTERVAL:-10}
mkdir -p "$out"
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2> /dev/null || true; }
trap cleanup EXIT
api="http://127.0.0.1:$port/api/v1"
data=$(mktemp -d "${TMPDIR:-/tmp}/retention-data.XXXXXX")
# shellcheck source=bench/scripts/common.sh
source "$(dirname "$0")/common.sh"

start() {
  env OCPP_CSS__STORAGE__DATA_DIR="$data" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=info \
    OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 OCPP_CSS__RETENTION__INTERVAL_SECS="$1" \
    "$bin" serve >> "$out/server.log" 2>&1 &
  pid=$!
  wait_up
}

metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }

fleet() {
  local json="$out/fleet.$1.json"
  "$bench" fleet --provision-api "$api" --tenant "fleet-$1" --stations "$fleet" --connect-rate 1000 --hold "$hold" \
    --heartbeat-rate "$hb_rate" --json "$json" > "$json.txt" 2>&1 || echo "  ocpp-bench exited with $?"
  jq -r --arg b "$1" '"  heartbeats (\($b)): \(.hold.achieved_msgs_per_sec)/s, p50 \(.actions.Heartbeat.latency_ms.p50) ms, p99 \(.actions.Heartbeat.latency_ms.p99) ms, timeouts \(.timeouts)"' "$json" || true
}

# A long interval while seeding and for the fleet alone: no pass runs.
start 86400
curl -s -X POST "$api/accounts" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Retention\",\"slug\":\"retention\"}" > /dev/null
token=$(curl -s -X POST "$api/sessions" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\"}" | jq -r .token)
curl -s -X PUT "$api/account/retention" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"meter_values": 1}' > /dev/null
stop
tx=$(STOPPED=1 "$seed" sled "$data" "$email" "$n" 2> "$out/seed.log")
echo "transaction $tx: $(cat "$out/seed.log")"
start 86400
fleet alone
stop

# Passes every INTERVAL s: the first starts INTERVAL s after start-up, while the fleet connects.
start "$interval"
fleet pruning
for _ in $(seq 600); do
  [ "$(metric 'ocpp_retention_passes_total')" != 0 ] && break
  sleep 1
done
echo "  removed $(metric 'ocpp_retention_pruned_total') readings; last pass $(metric 'ocpp_retention_last_pass_seconds') s"
grep -m1 "retention pass done" "$out/server.log" | cut -c1-300 || true
stop
rm -rf "$data"
