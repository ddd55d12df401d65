#!/usr/bin/env bash
# Runs the attacks of `ocpp-bench hostile` against one or more ocpp-css binaries, interleaved
# (attack by attack, each binary in turn), each run on a fresh server process and data dir with
# the default configuration. The tables, JSON and progress lines go to OUT_DIR.
#
#   bench/scripts/hostile.sh OUT_DIR SECONDS before=path/to/ocpp-css after=target/release/ocpp-css
#
# ATTACKS="big-frame no-read" limits the attacks run; the attacks come from the 8 source addresses
# 127.0.0.2-127.0.0.9 unless SOURCES says otherwise (SOURCES=127.0.2.1-127.0.2.64: a distributed
# attacker with more addresses than the per-address limit covers). SETTLE=90 waits that many seconds
# after each run: a server that grew to gigabytes leaves the kernel reclaiming memory for a while,
# which shows as latency spikes in the next run.
set -euo pipefail
out=$1
seconds=$2
shift 2
bench=${OCPP_BENCH:-target/release/ocpp-bench}
attacks=${ATTACKS:-"big-frame fragments no-read replay-amplify stalled-body conn-flood event-flood auth-brute signup-flood reconnect-loop unsolicited"}
port=${PORT:-8190}
mkdir -p "$out"
for attack in $attacks; do
  for spec in "$@"; do
    name=${spec%%=*}
    bin=${spec#*=}
    data=$(mktemp -d "${TMPDIR:-/tmp}/hostile-data.XXXXXX")
    log="$out/$attack.$name.server.log"
    OCPP_CSS__STORAGE__DATA_DIR=$data OCPP_CSS__SERVER__PORT=$port "$bin" serve > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
      sleep 0.1
    done
    sources=${SOURCES:-127.0.0.2-127.0.0.9}
    echo "$(date -u +%H:%M:%S) $attack on $name ($bin), pid $pid"
    "$bench" hostile --attack "$attack" --duration "$seconds" --quiet 10 \
      --provision-api "http://127.0.0.1:$port/api/v1" --server-pid "$pid" --server-log "$log" \
      --data-dir "$data" --source-ips 127.0.0.1 --attack-source-ips "$sources" \
      --json "$out/$attack.$name.json" > "$out/$attack.$name.txt" 2> "$out/$attack.$name.err" \
      || echo "  ocpp-bench exited with $?"
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    # The floods can leave gigabytes of log and data behind; their growth is in the JSON. Removed,
    # then synced, so that the next run does not wait behind their writeback.
    rm -rf "$data"
    if [ "$(stat -c %s "$log")" -gt 10000000 ]; then
      tail -c 2000 "$log" > "$log.tail" && rm "$log"
    fi
    sync
    sleep "${SETTLE:-0}"
  done
done
