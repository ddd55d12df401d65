#!/usr/bin/env bash
# A reconnect storm over wss://: STATIONS (default 5,000) booted on the TLS listener (rustls, an
# ECDSA P-256 server certificate), all dropped and reconnecting at once, ROUNDS (default 2) rounds of
# three variants in turn, each run on a fresh server and data dir:
#   on     the stations resume their TLS sessions; the server as configured by default
#   small  the same, the server with rustls's own defaults (256 sessions remembered, no tickets)
#   off    the stations do not resume (a full handshake each)
# Prints one line per run and keeps each run's JSON in OUT_DIR.
#
#   ulimit -n 20000; bench/scripts/wss_storm.sh OUT_DIR
set -euo pipefail
out=$1
stations=${STATIONS:-5000}
rounds=${ROUNDS:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${OCPP_CSS:-$root/target/release/ocpp-css}
bench=${OCPP_BENCH:-$root/target/release/ocpp-bench}
port=${PORT:-8193}
tls_port=${TLS_PORT:-8443}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# shellcheck source=bench/scripts/common.sh
. "$root/bench/scripts/common.sh"
pid=
trap stop EXIT
cd "$out"
make_server_certs
for round in $(seq "$rounds"); do
  for variant in on small off; do
    resumption=on
    server_env=()
    case $variant in
      small) server_env=(OCPP_CSS__TLS__SESSION_CACHE_ENTRIES=256 OCPP_CSS__TLS__SESSION_TICKETS=false) ;;
      off) resumption=off ;;
    esac
    data=$(mktemp -d "${TMPDIR:-/tmp}/wss-storm.XXXXXX")
    OCPP_CSS__STORAGE__DATA_DIR="$data" OCPP_CSS__SERVER__PORT="$port" OCPP_CSS__LOG__LEVEL=warn \
      OCPP_CSS__TLS__ENABLED=true OCPP_CSS__TLS__PORT="$tls_port" \
      OCPP_CSS__TLS__CERT_PATH="$out/ec.pem" OCPP_CSS__TLS__KEY_PATH="$out/ec.key" \
      OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 \
      OCPP_CSS__LIMITS__STATIONS_PER_TENANT=$((stations + 1000)) OCPP_CSS__LIMITS__STATION_RECONNECTS=1000 \
      env "${server_env[@]}" "$bin" serve > "$data/server.log" 2>&1 &
    pid=$!
    wait_up
    json="$out/wss-storm.$variant.$round.json"
    "$bench" fleet --provision-api "http://127.0.0.1:$port/api/v1" \
      --url-template "wss://127.0.0.1:$tls_port/ocpp/{tenant}/{id}" --ca-file "$out/ca.pem" \
      --stations "$stations" --connect-rate 1000 --hold 5 --storm --tls-resumption "$resumption" \
      --source-ips 127.0.0.1-127.0.0.4 --server-pid "$pid" --json "$json" > "$json.txt" 2>&1 \
      || echo "  ocpp-bench exited with $?"
    jq -r --arg r "$variant" '"wss storm, \($r): \(.ramp.booted) booted, \(.server.rss_per_session_kib) KiB/session idle,"
      + " back \(.storm.completed) in \(.storm.secs) s = \(.storm.rate_per_sec|floor)/s, \(.storm.gave_up) gave up,"
      + " CPU storm \(.server.cpu_storm_pct)%, resumed \(.storm.steps.tls_resumed // "?")"' "$json" || true
    stop
    rm -rf "$data"
  done
done
