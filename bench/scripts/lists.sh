#!/usr/bin/env bash
# The list routes of a large tenant, for BENCHMARKS.md: first and deep pages of /transactions,
# /stations and /id-tags (latency p50/p99 and bytes), the node's RSS while a client walks every
# page of /transactions, and a heartbeat fleet's p99 with and without that walk beside it. Each
# binary in turn runs on a copy of DATA, a data dir filled by examples/seed_lists.rs (tenant
# EMAIL, password PASSWORD); a binary from before paging (an array answer, no `limit`) is
# measured on the same routes, where its "first page" is the whole list.
#
#   bench/scripts/lists.sh OUT_DIR DATA before=/tmp/base/ocpp-css after=target/release/ocpp-css
#
# PACE (seconds) makes the walker wait between pages, as a billing system pulling at a steady rate
# would, instead of reading flat out.
# REDIS_URL and REDIS_PREFIX run the nodes in cluster mode on a Redis filled the same way (DATA is
# then only the node's own dir); REDIS_CLUSTER=true when REDIS_URL lists the seeds of a Redis
# Cluster (comma-separated). Needs curl, jq; ocpp-bench at OCPP_BENCH.
set -euo pipefail
out=$1
data_src=$2
shift 2
bench=${OCPP_BENCH:-target/release/ocpp-bench}
email=${EMAIL:-lists@bench.example}
password=${PASSWORD:-bench-pass-1234}
port=${PORT:-8300}
requests=${REQUESTS:-50}
fleet=${FLEET:-2000}
hb_rate=${HB_RATE:-1000}
hold=${HOLD:-30}
mkdir -p "$out"
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2> /dev/null || true; }
trap cleanup EXIT
api="http://127.0.0.1:$port/api/v1"

# shellcheck source=bench/scripts/common.sh
source "$(dirname "$0")/common.sh"

cursor() { printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }

# Walks every page of /transactions (limit 1000; one request for a binary without pages), or with
# "export" streams /transactions/export, printing the seconds taken and the node's highest RSS
# meanwhile.
walk() {
  local paged=$1 peak=0 start end next url rss
  start=$(date +%s.%N)
  (
    if [ "$paged" = export ]; then
      curl -s -o /dev/null -H "authorization: Bearer $token" "$api/transactions/export"
    elif [ "$paged" = 1 ]; then
      url="$api/transactions?limit=1000"
      while :; do
        # grep, not jq: the walker should cost the shared cores little.
        next=$(curl -s -H "authorization: Bearer $token" "$url" | grep -o '"next_cursor":"[^"]*"' | cut -d'"' -f4 || true)
        [ -n "$next" ] || break
        [ -z "${PACE:-}" ] || sleep "$PACE"
        url="$api/transactions?limit=1000&cursor=$next"
      done
    else
      curl -s -o /dev/null -H "authorization: Bearer $token" "$api/transactions"
    fi
  ) &
  local walker=$!
  while kill -0 "$walker" 2> /dev/null; do
    rss=$(rss_kib)
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.1
  done
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $peak"
}

for spec in "$@"; do
  name=${spec%%=*}
  bin=${spec#*=}
  data=$(mktemp -d "${TMPDIR:-/tmp}/lists-data.XXXXXX")
  cp -r "$data_src/." "$data/"
  env=(OCPP_CSS__STORAGE__DATA_DIR="$data" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=warn
    OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 OCPP_CSS__LIMITS__STATIONS_PER_TENANT=200000)
  if [ -n "${REDIS_URL:-}" ]; then
    env+=(OCPP_CSS__CLUSTER__REDIS_URL="$REDIS_URL" OCPP_CSS__CLUSTER__KEY_PREFIX="${REDIS_PREFIX:-ocpp-css}"
      OCPP_CSS__SERVER__NODE_ID=bench-1 OCPP_CSS__CLUSTER__REDIS_TIMEOUT_MS=60000
      OCPP_CSS__CLUSTER__REDIS_CLUSTER="${REDIS_CLUSTER:-false}")
  fi
  t0=$(date +%s.%N)
  env "${env[@]}" "$bin" serve > "$out/server.$name.log" 2>&1 &
  pid=$!
  wait_up
  echo "$name: up in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s, RSS $(( $(rss_kib) / 1024 )) MiB"
  token=$(curl -s -X POST "$api/sessions" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" | jq -r .token)
  paged=0
  curl -s -H "authorization: Bearer $token" "$api/id-tags?limit=1" | jq -e '.items' > /dev/null 2>&1 && paged=1
  if [ "$paged" = 1 ]; then
    deep_tx=$(curl -s -H "authorization: Bearer $token" "$api/transactions?limit=1" | jq -r '.items[0].id')
    deep_tx=$((deep_tx * 9 / 10))
    n=$requests
    echo "  GET /transactions?limit=100               $(timed $n "$api/transactions?limit=100")"
    echo "  GET /transactions?limit=100 (90% deep)    $(timed $n "$api/transactions?limit=100&cursor=$(cursor "transactions:$deep_tx")")"
    echo "  GET /transactions?station=…&limit=100     $(timed $n "$api/transactions?station=SEED000042&limit=100")"
    echo "  GET /transactions?status=active&limit=100 $(timed $n "$api/transactions?status=active&limit=100")"
    echo "  GET /stations?limit=100                   $(timed $n "$api/stations?limit=100")"
    echo "  GET /stations?limit=100 (90% deep)        $(timed $n "$api/stations?limit=100&cursor=$(cursor "stations:SEED090000")")"
    echo "  GET /id-tags?limit=100 (90% deep)         $(timed $n "$api/id-tags?limit=100&cursor=$(cursor "id-tags:TAG090000")")"
  else
    n=${BEFORE_REQUESTS:-5}
    echo "  GET /transactions (everything)            $(timed $n "$api/transactions")"
    echo "  GET /transactions?station=…               $(timed $n "$api/transactions?station=SEED000042")"
    echo "  GET /stations (everything)                $(timed "$n" "$api/stations")"
    echo "  GET /id-tags (everything)                 $(timed "$n" "$api/id-tags")"
  fi
  read -r secs peak <<< "$(walk $paged)"
  echo "  every transaction: $secs s, node RSS peak $((peak / 1024)) MiB"
  besides="alone walking"
  if [ "$paged" = 1 ]; then
    read -r secs peak <<< "$(walk export)"
    echo "  GET /transactions/export: $secs s, node RSS peak $((peak / 1024)) MiB"
    besides="alone walking exporting"
  fi

  # A heartbeat fleet alone, then the same with a client walking every page (or streaming the
  # export) beside it.
  for beside in $besides; do
    json="$out/fleet.$name.$beside.json"
    # Its exit status goes to a file: after a long walk beside it, bash may no longer know it.
    ( "$bench" fleet --provision-api "$api" --tenant "fleet-$beside" --stations "$fleet" --connect-rate 1000 --hold "$hold" \
      --heartbeat-rate "$hb_rate" --json "$json" > "$json.txt" 2>&1; echo $? > "$json.rc" ) &
    fleet_pid=$!
    if [ "$beside" != alone ]; then
      mode=$paged
      [ "$beside" = exporting ] && mode=export
      sleep 5
      while kill -0 "$fleet_pid" 2> /dev/null; do walk "$mode" > /dev/null; done
    fi
    wait "$fleet_pid" 2> /dev/null || true
    rc=$(cat "$json.rc" 2> /dev/null || echo unknown)
    [ "$rc" = 0 ] || echo "  ocpp-bench exited with $rc"
    jq -r --arg b "$beside" '"  heartbeats (\($b)): \(.hold.achieved_msgs_per_sec)/s, p50 \(.actions.Heartbeat.latency_ms.p50) ms, p99 \(.actions.Heartbeat.latency_ms.p99) ms, timeouts \(.timeouts)"' "$json" || true
  done
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  pid=
  rm -rf "$data"
done
