#!/usr/bin/env bash
# The event feed's cost under a charging fleet, for BENCHMARKS.md: each round runs the same fleet
# twice, alternately without and with listeners, each on a fresh server process and data dir:
#   quiet   — `fleet`: STATIONS stations (default 10,000) from 127.0.0.1-4 booted at CONNECT_RATE/s,
#             then held HOLD s (default 70) with open-loop Heartbeats (HB_RATE/s, default 1000) and
#             transactions (TX_RATE/s, default 50: Start, 3 MeterValues, Stop, 1 s apart)
#   listen  — the same fleet, and once its ramp is done `listen`: SSE clients (default 100) and
#             HOOKS webhook receivers (default 10), measured for LISTEN s (default 60) after a 3 s
#             warmup, then up to 10 s for the webhooks to catch up
# Prints one line per run and writes each run's JSON (fleet.*, listen.*) to OUT_DIR, and
# OUT_DIR/runs.tsv with the numbers of every run. VARIANTS (default "quiet listen") picks the
# variants and their order; SSE=0 or HOOKS=0 leaves that kind of listener out.
#
#   ulimit -n 20000; bench/scripts/events_load.sh OUT_DIR [ROUNDS]
#
# The server runs with its defaults except: event streams per tenant 200, loopback webhook
# destinations allowed, and the limits one load generator trips by design (a station's message
# rate, connections per client address, stations per tenant, reconnects). Needs curl and jq.
set -euo pipefail
out=$1
rounds=${2:-2}
css=${OCPP_CSS:-target/release/ocpp-css}
bench=${OCPP_BENCH:-target/release/ocpp-bench}
stations=${STATIONS:-10000}
connect_rate=${CONNECT_RATE:-1000}
hb_rate=${HB_RATE:-1000}
tx_rate=${TX_RATE:-50}
hold=${HOLD:-70}
listen_secs=${LISTEN:-60}
sse=${SSE:-100}
hooks=${HOOKS:-10}
sources=${SOURCE_IPS:-127.0.0.1-127.0.0.4}
port=${PORT:-8194}
variants=${VARIANTS:-"quiet listen"}
mkdir -p "$out"
pid=
fleet_pid=
cleanup() {
  [ -z "$fleet_pid" ] || kill "$fleet_pid" 2> /dev/null || true
  [ -z "$pid" ] || kill "$pid" 2> /dev/null || true
}
trap cleanup EXIT

# shellcheck source=bench/scripts/common.sh
source "$(dirname "$0")/common.sh"

tsv="$out/runs.tsv"
printf 'variant\tround\tbooted\thold_msgs_per_s\ttimeouts\tunsent\thb_p50\thb_p99\tstart_p50\tstart_p99\tmeter_p50\tmeter_p99\tstop_p50\tstop_p99\tcpu_hold\tsse_opened\tsse_ev_s\tsse_client_min_s\tsse_client_max_s\tsse_lag_p50\tsse_lag_p99\tsse_lag_max\thook_ev_s\thook_min_s\thook_max_s\thook_lag_p50\thook_lag_p99\thook_lag_max\thook_dup\thook_in_order\thook_behind_max\thook_caught_up_max\tlisten_cpu_srv\tlisten_cpu_self\n' > "$tsv"

for round in $(seq "$rounds"); do
  for variant in $variants; do
    data=$(mktemp -d "${TMPDIR:-/tmp}/events-load.XXXXXX")
    env OCPP_CSS__STORAGE__DATA_DIR="$data" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=warn \
      OCPP_CSS__LIMITS__STATION_MESSAGES_PER_SEC=1000000 OCPP_CSS__LIMITS__STATION_MESSAGE_BURST=1000000 \
      OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 \
      OCPP_CSS__LIMITS__STATIONS_PER_TENANT=$((stations + 1000)) OCPP_CSS__LIMITS__STATION_RECONNECTS=1000 \
      OCPP_CSS__LIMITS__EVENT_STREAMS_PER_TENANT=200 OCPP_CSS__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS=true \
      "$css" serve > "$out/server.$variant.$round.log" 2>&1 &
    pid=$!
    wait_up
    fleet_json="$out/fleet.$variant.$round.json"
    listen_json="$out/listen.$variant.$round.json"
    "$bench" fleet --provision-api "http://127.0.0.1:$port/api/v1" --stations "$stations" \
      --connect-rate "$connect_rate" --hold "$hold" --heartbeat-rate "$hb_rate" --transaction-rate "$tx_rate" \
      --source-ips "$sources" --server-pid "$pid" --json "$fleet_json" \
      > "$fleet_json.txt" 2> "$fleet_json.err" &
    fleet_pid=$!
    if [ "$variant" = listen ]; then
      until grep -q "^ramp done" "$fleet_json.err"; do
        kill -0 "$fleet_pid" 2> /dev/null || break
        sleep 0.2
      done
      "$bench" listen --api "http://127.0.0.1:$port" --sse-clients "$sse" --webhooks "$hooks" \
        --duration "$listen_secs" --warmup 3 --drain 10 --server-pid "$pid" --json "$listen_json" \
        > "$listen_json.txt" 2> "$listen_json.err" || echo "  ocpp-bench listen exited with $?"
    fi
    wait "$fleet_pid" || echo "  ocpp-bench fleet exited with $?"
    fleet_pid=
    stop
    rm -rf "$data"

    f=$(jq -r '[.ramp.booted, .hold.achieved_msgs_per_sec, .timeouts, .hold.unsent,
        .actions.Heartbeat.latency_ms.p50, .actions.Heartbeat.latency_ms.p99,
        .actions.StartTransaction.latency_ms.p50, .actions.StartTransaction.latency_ms.p99,
        .actions.MeterValues.latency_ms.p50, .actions.MeterValues.latency_ms.p99,
        .actions.StopTransaction.latency_ms.p50, .actions.StopTransaction.latency_ms.p99,
        .server.cpu_hold_pct] | @tsv' "$fleet_json" 2> /dev/null || echo "-")
    l=$(printf -- '-\t%.0s' $(seq 19) | sed 's/\t$//')
    if [ "$variant" = listen ] && [ -s "$listen_json" ]; then
      l=$(jq -r '[.sse.opened, .sse.events_per_sec,
          (.sse.per_client_min / .config.duration_secs * 10 | round / 10),
          (.sse.per_client_max / .config.duration_secs * 10 | round / 10),
          .sse.lag_ms.p50, .sse.lag_ms.p99, .sse.lag_ms.max,
          .webhooks.deliveries_per_sec,
          (.webhooks.per_endpoint_min / .config.duration_secs * 10 | round / 10),
          (.webhooks.per_endpoint_max / .config.duration_secs * 10 | round / 10),
          .webhooks.lag_ms.p50, .webhooks.lag_ms.p99, .webhooks.lag_ms.max,
          .webhooks.duplicates, .webhooks.all_in_order,
          ([.webhooks.per_endpoint[].behind_at_end // 0] | max),
          (if any(.webhooks.per_endpoint[]; .caught_up_secs == null) then "none"
           else ([.webhooks.per_endpoint[].caught_up_secs] | max) end),
          .server_cpu_pct, .harness_cpu_pct] | @tsv' "$listen_json")
    fi
    printf '%s\t%s\t%s\t%s\n' "$variant" "$round" "$f" "$l" >> "$tsv"
    jq -r --arg v "$variant" --arg r "$round" '"\($v) \($r): \(.ramp.booted) booted, hold \(.hold.achieved_msgs_per_sec) msgs/s,"
      + " Heartbeat p50/p99 \(.actions.Heartbeat.latency_ms.p50)/\(.actions.Heartbeat.latency_ms.p99) ms,"
      + " Start \(.actions.StartTransaction.latency_ms.p50)/\(.actions.StartTransaction.latency_ms.p99) ms,"
      + " MeterValues \(.actions.MeterValues.latency_ms.p50)/\(.actions.MeterValues.latency_ms.p99) ms,"
      + " Stop \(.actions.StopTransaction.latency_ms.p50)/\(.actions.StopTransaction.latency_ms.p99) ms,"
      + " CPU hold \(.server.cpu_hold_pct)%, timeouts \(.timeouts), unsent \(.hold.unsent)"' "$fleet_json" || true
    if [ "$variant" = listen ]; then
      jq -r '"  listen: \(.sse.opened) SSE streams \(.sse.events_per_sec) ev/s (per client \(.sse.per_client_min)..\(.sse.per_client_max)),"
        + " lag p50/p99/max \(.sse.lag_ms.p50)/\(.sse.lag_ms.p99)/\(.sse.lag_ms.max) ms;"
        + " webhooks \(.webhooks.deliveries_per_sec)/s (per endpoint \(.webhooks.per_endpoint_min)..\(.webhooks.per_endpoint_max)),"
        + " lag p50/p99/max \(.webhooks.lag_ms.p50)/\(.webhooks.lag_ms.p99)/\(.webhooks.lag_ms.max) ms,"
        + " dup \(.webhooks.duplicates), in order \(.webhooks.all_in_order),"
        + " behind at end \([.webhooks.per_endpoint[].behind_at_end] | max); server CPU \(.server_cpu_pct)%"' \
        "$listen_json" || true
    fi
  done
done
