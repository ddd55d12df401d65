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

# A CA (ca.pem, ca.key) and two server certificates for 127.0.0.1 signed by it, ECDSA P-256
# (ec.pem, ec.key) and RSA-2048 (rsa.pem, rsa.key), made with the openssl binary in the current
# directory.
make_server_certs() {
  local ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=bench CA" \
    -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2> /dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ocpp-css" -keyout ec.key -out ec.csr 2> /dev/null
  openssl x509 -req -in ec.csr -CA ca.pem -CAkey ca.key -days 30 -out ec.pem -extfile <(echo "$ext") 2> /dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2> /dev/null
  openssl req -new -key rsa.key -subj "/CN=ocpp-css-rsa" -out rsa.csr 2> /dev/null
  openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -days 30 -out rsa.pem -extfile <(echo "$ext") 2> /dev/null
}
