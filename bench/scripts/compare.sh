#!/usr/bin/env bash
# Runs the BENCHMARKS.md workloads against two or more ocpp-css binaries, interleaved (round by
# round, each binary in turn), each run on a fresh server process, data dir and (cluster) Redis:
#   events  — 50 stations, closed loop, durable MeterValues, one node on sled
#   cluster — the same against a node in cluster mode in front of its own redis-server
#   fleet   — FLEET stations (default 5,000) booted, then open-loop Heartbeats at HB_RATE/s
#   storm   — STORM stations (default 19,000) booted idle from four source addresses, all dropped
#             and reconnecting at once (needs `ulimit -n 20000`)
# PROTOCOL (1.6, 2.0.1, mix or shares, as `fleet --protocol` takes it; default 1.6) is the fleet's
# and the storm's OCPP version.
# EVENTS_RATE (messages/s) makes `events` open loop at that rate instead of closed loop. A binary
# named `ocpp-floor` (the bare responder, bench/src/bin/ocpp-floor.rs) is run as the floor: no
# provisioning, any password; it has no cluster mode, so `cluster` skips it.
# Prints one line per run and writes each run's JSON to OUT_DIR.
#
#   bench/scripts/compare.sh OUT_DIR ROUNDS before=/tmp/before/ocpp-css after=target/release/ocpp-css
#   WORKLOADS="fleet storm" bench/scripts/compare.sh OUT_DIR 2 floor=target/release/ocpp-floor after=target/release/ocpp-css
#
# The server runs with its default configuration except for the limits one load generator trips
# by design: a station's message rate (the closed loop sends as fast as it is answered) and the
# handshakes one address may have in flight (the fleet ramp). Needs jq, redis-server and curl.
set -euo pipefail
out=$1
rounds=$2
shift 2
bench=${OCPP_BENCH:-target/release/ocpp-bench}
workloads=${WORKLOADS:-"events cluster fleet"}
fleet=${FLEET:-5000}
storm=${STORM:-19000}
events_rate=${EVENTS_RATE:-}
hb_rate=${HB_RATE:-10000}
port=${PORT:-8192}
redis_port=${REDIS_PORT:-6391}
duration=${DURATION:-20}
protocol=${PROTOCOL:-1.6}
mkdir -p "$out"
pid=
redis_pid=
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2> /dev/null || true
  [ -z "$redis_pid" ] || kill "$redis_pid" 2> /dev/null || true
}
trap cleanup EXIT

wait_up() {
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2
  return 1
}

for round in $(seq "$rounds"); do
  for workload in $workloads; do
    for spec in "$@"; do
      name=${spec%%=*}
      bin=${spec#*=}
      floor=
      [ "$(basename "$bin")" = ocpp-floor ] && floor=1
      [ -n "$floor" ] && [ "$workload" = cluster ] && continue
      data=$(mktemp -d "${TMPDIR:-/tmp}/compare-data.XXXXXX")
      env=(OCPP_CSS__STORAGE__DATA_DIR="$data" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=warn
        OCPP_CSS__LIMITS__STATION_MESSAGES_PER_SEC=1000000 OCPP_CSS__LIMITS__STATION_MESSAGE_BURST=1000000
        OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0
        OCPP_CSS__LIMITS__STATIONS_PER_TENANT=$((storm > fleet ? storm + 1000 : fleet + 1000))
        OCPP_CSS__LIMITS__STATION_RECONNECTS=1000)
      redis_pid=
      if [ "$workload" = cluster ]; then
        redis-server --port "$redis_port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec --save "" \
          --dir "$data" > "$data/redis.log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 50); do
          redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break
          sleep 0.1
        done
        env+=(OCPP_CSS__CLUSTER__REDIS_URL="redis://127.0.0.1:$redis_port/0" OCPP_CSS__SERVER__NODE_ID=bench-1)
      fi
      if [ -n "$floor" ]; then
        "$bin" --port "$port" > "$data/server.log" 2>&1 &
        pid=$!
        sleep 0.5
        target=(--url-template "ws://127.0.0.1:$port/ocpp/{id}" --password x)
      else
        env "${env[@]}" "$bin" serve > "$data/server.log" 2>&1 &
        pid=$!
        wait_up
        target=(--provision-api "http://127.0.0.1:$port/api/v1")
      fi
      json="$out/$workload.$name.$round.json"
      rate=()
      [ -z "$events_rate" ] || rate=(--rate "$events_rate")
      case $workload in
        events | cluster)
          "$bench" events "${target[@]}" --stations 50 --message meter-values "${rate[@]}" \
            --duration "$duration" --warmup 3 --json "$json" > "$json.txt" 2>&1 || echo "  ocpp-bench exited with $?"
          jq -r --arg n "$name" --arg w "$workload" \
            '"\($w) \($n): \(.msgs_per_sec|floor) msgs/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, CALLERRORs \(.call_errors), timeouts \(.timeouts)"' "$json" || true
          ;;
        fleet)
          "$bench" fleet "${target[@]}" --protocol "$protocol" --stations "$fleet" --connect-rate 2000 \
            --hold "$duration" --heartbeat-rate "$hb_rate" --server-pid "$pid" \
            --json "$json" > "$json.txt" 2>&1 || echo "  ocpp-bench exited with $?"
          jq -r --arg n "$name" '"fleet \($n): \(.ramp.booted) booted at \(.ramp.achieved_rate) conn/s,"
            + " \(.server.rss_per_session_kib) KiB/session, Heartbeat \(.hold.achieved_msgs_per_sec)/s p99"
            + " \(.actions.Heartbeat.latency_ms.p99) ms, CPU hold \(.server.cpu_hold_pct)%, timeouts \(.timeouts)"' \
            "$json" || true
          ;;
        storm)
          "$bench" fleet "${target[@]}" --protocol "$protocol" --stations "$storm" --connect-rate 2000 --hold 5 --storm \
            --source-ips 127.0.0.1-127.0.0.4 --server-pid "$pid" --json "$json" > "$json.txt" 2>&1 \
            || echo "  ocpp-bench exited with $?"
          jq -r --arg n "$name" '"storm \($n): \(.ramp.booted) booted, \(.server.rss_per_session_kib) KiB/session idle,"
            + " back \(.storm.completed) in \(.storm.secs) s = \(.storm.rate_per_sec|floor)/s, \(.storm.gave_up) gave up,"
            + " CPU storm \(.server.cpu_storm_pct)%"' "$json" || true
          ;;
      esac
      kill "$pid" 2> /dev/null || true
      wait "$pid" 2> /dev/null || true
      if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2> /dev/null || true
        wait "$redis_pid" 2> /dev/null || true
      fi
      rm -rf "$data"
    done
  done
done
