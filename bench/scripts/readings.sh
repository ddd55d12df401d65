#!/usr/bin/env bash
# One long charging session's meter readings through the API, for BENCHMARKS.md: each binary in
# turn on a fresh data dir where examples/seed_readings.rs wrote one open transaction of N readings
# (a second apart). A binary from before readings were paged answers them whole inside
# GET /transactions/{id}; one after answers GET /transactions/{id}/meter-values a page at a time:
# the first page, a page 90% deep (`from`), and a walk of every page, with the node's RSS peak.
#
#   bench/scripts/readings.sh OUT_DIR N before=<binary> after=target/release/ocpp-css
#
# Needs curl, jq; the seed_readings example built (target/release/examples/seed_readings).
set -euo pipefail
out=$1
n=$2
shift 2
seed=${SEED:-target/release/examples/seed_readings}
email=readings@bench.example
password=bench-pass-1234
port=${PORT:-8310}
requests=${REQUESTS:-20}
mkdir -p "$out"
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2> /dev/null || true; }
trap cleanup EXIT
api="http://127.0.0.1:$port/api/v1"

# shellcheck source=bench/scripts/common.sh
source "$(dirname "$0")/common.sh"

start() {
  env OCPP_CSS__STORAGE__DATA_DIR="$1" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=warn \
    OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 "$2" serve >> "$out/server.$3.log" 2>&1 &
  pid=$!
  wait_up
}

for spec in "$@"; do
  name=${spec%%=*}
  bin=${spec#*=}
  data=$(mktemp -d "${TMPDIR:-/tmp}/readings-data.XXXXXX")
  start "$data" "$bin" "$name"
  curl -s -X POST "$api/accounts" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Readings\",\"slug\":\"readings\"}" > /dev/null
  stop
  tx=$("$seed" sled "$data" "$email" "$n" 2> "$out/seed.$name.log")
  start "$data" "$bin" "$name"
  token=$(curl -s -X POST "$api/sessions" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" | jq -r .token)
  echo "$name: transaction $tx with $n readings ($(cat "$out/seed.$name.log"))"
  if curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "$api/transactions/$tx/meter-values?limit=1" | grep -q 200; then
    deep=$(date -u -d "2026-11-01T00:00:00Z + $((n * 9 / 10)) seconds" +%Y-%m-%dT%H:%M:%SZ)
    echo "  GET /transactions/{id}                             $(timed "$requests" "$api/transactions/$tx")"
    echo "  GET …/meter-values?limit=1000 (first page)         $(timed "$requests" "$api/transactions/$tx/meter-values?limit=1000")"
    echo "  GET …/meter-values?limit=1000&from=… (90% deep)    $(timed "$requests" "$api/transactions/$tx/meter-values?limit=1000&from=$deep")"
    peak=0
    t0=$(date +%s.%N)
    (
      url="$api/transactions/$tx/meter-values?limit=1000"
      while :; do
        next=$(curl -s -H "authorization: Bearer $token" "$url" | grep -o '"next_cursor":"[^"]*"' | cut -d'"' -f4 || true)
        [ -n "$next" ] || break
        url="$api/transactions/$tx/meter-values?limit=1000&cursor=$next"
      done
    ) &
    walker=$!
  else
    echo "  GET /transactions/{id} (every reading)             $(timed "$requests" "$api/transactions/$tx")"
    peak=0
    t0=$(date +%s.%N)
    curl -s -o /dev/null -H "authorization: Bearer $token" "$api/transactions/$tx" &
    walker=$!
  fi
  while kill -0 "$walker" 2> /dev/null; do
    rss=$(rss_kib)
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.05
  done
  echo "  every reading: $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s, node RSS peak $((peak / 1024)) MiB"
  stop
  rm -rf "$data"
done
