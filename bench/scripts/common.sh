# What the benchmark scripts that run one server at a time share; sourced, not run. The script sets
# `port` (the server's) and `pid` (the running server's, empty when none) and, for `timed`, `token`.

# Waits until the server on `port` answers /healthz (60 s at most).
wait_up() {
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2
  return 1
}

# Stops the server `pid` and waits for it.
stop() {
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  pid=
}

# The server's resident memory (KiB).
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

# p50 and p99 (ms) and the mean bytes of N requests of a URL, with the bearer token `token`.
timed() {
  local n=$1 url=$2
  for _ in $(seq "$n"); do
    curl -s -o /dev/null -H "authorization: Bearer $token" -w '%{time_total} %{size_download}\n' "$url"
  done | sort -n | awk '{t[NR]=$1*1000; b+=$2} END {p50=t[int((NR+1)/2)]; i=int(NR*0.99+0.999); if (i>NR) i=NR;
    printf "p50 %.1f ms, p99 %.1f ms, %d bytes", p50, t[i], b/NR}'
}
