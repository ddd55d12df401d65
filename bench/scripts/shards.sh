#!/usr/bin/env bash
# End-to-end check of distributed runs: a fresh ocpp-css, a fleet run as SHARDS processes
# (`fleet --shard i/SHARDS`, source address 127.0.0.i each, one --start-at), `ocpp-bench merge`,
# then the same fleet from one process; fails unless the merged counts are the whole fleet's and
# equal the single run's schedule, and every station closed cleanly (status 1000).
#
#   bench/scripts/shards.sh OUT_DIR [SHARDS]
#
# STATIONS (default 1000), HB_RATE (default 1000), HOLD (default 5), PORT (default 8193),
# OCPP_CSS (default target/release/ocpp-css), OCPP_BENCH (default target/release/ocpp-bench).
set -euo pipefail
out=$1
shards=${2:-4}
css=${OCPP_CSS:-target/release/ocpp-css}
bench=${OCPP_BENCH:-target/release/ocpp-bench}
stations=${STATIONS:-1000}
hb_rate=${HB_RATE:-1000}
hold=${HOLD:-5}
port=${PORT:-8193}
mkdir -p "$out"
data=$(mktemp -d)
OCPP_CSS__STORAGE__DATA_DIR=$data OCPP_CSS__SERVER__PORT=$port OCPP_CSS__LOG__LEVEL=warn \
  OCPP_CSS__LIMITS__UNAUTHENTICATED_CONNECTIONS_PER_ADDRESS=0 "$css" serve > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2> /dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/api/v1/account" && break; sleep 0.1; done
b="$bench fleet --provision-api http://127.0.0.1:$port/api/v1 --stations $stations --connect-rate 1000 \
   --hold $hold --heartbeat-rate $hb_rate --storm --server-pid $server"
at=$(( $(date +%s) + 10 ))
pids=
files=
for i in $(seq "$shards"); do
  $b --shard "$i/$shards" --source-ips "127.0.0.$i" --start-at "$at" --json "$out/shard$i.json" \
    > "$out/shard$i.txt" 2> "$out/shard$i.err" &
  pids="$pids $!"
  files="$files $out/shard$i.json"
done
fail=0
for p in $pids; do wait "$p" || fail=1; done
[ $fail = 0 ] || { echo "a shard failed: see $out/shard*.err" >&2; exit 1; }
# shellcheck disable=SC2086
$bench merge $files --json "$out/merged.json" > "$out/merged.txt"
$b --source-ips "127.0.0.1-127.0.0.$shards" --json "$out/single.json" > "$out/single.txt" 2> "$out/single.err"
q='[.ramp.booted, .hold.scheduled, .hold.ok, .actions.Heartbeat.ok, .storm.completed, .close.clean]'
merged=$(jq -c "$q" "$out/merged.json")
single=$(jq -c "$q" "$out/single.json")
echo "booted, hold scheduled, hold ok, Heartbeats ok, storm back, closed clean"
echo "merged $merged"
echo "single $single"
[ "$(jq -c '.merged.shards | length' "$out/merged.json")" = "$shards" ] || { echo "not every shard merged" >&2; exit 1; }
[ "$(jq '.ramp.booted' "$out/merged.json")" = "$stations" ] || { echo "not every station booted" >&2; exit 1; }
[ "$(jq '.close.clean' "$out/merged.json")" = "$stations" ] || { echo "not every close acknowledged" >&2; exit 1; }
[ "$(jq '.hold.scheduled' "$out/merged.json")" = "$(jq '.hold.scheduled' "$out/single.json")" ] \
  || { echo "the shards' schedule differs from the single run's" >&2; exit 1; }
echo ok
