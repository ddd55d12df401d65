#!/usr/bin/env bash
# Full TLS handshakes per second on the TLS listener, one `openssl s_time` client at a time, per
# cipher suite: the rustls listener (tls.rsa_key_exchange = false) and the OpenSSL one (true), both
# with an ECDSA P-256 and an RSA-2048 server certificate, twice each, interleaved. Needs a server
# built with `cargo build --release --features openssl-tls` and the openssl binary.
#
#   bench/scripts/tls_handshakes.sh WORK_DIR [SECONDS_PER_SUITE]
set -euo pipefail
WORK=${1:?usage: tls_handshakes.sh WORK_DIR [SECONDS_PER_SUITE]}
T=${2:-6}
BIN=${OCPP_CSS:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/ocpp-css}
PORT=${PORT:-8443}
mkdir -p "$WORK"
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
cd "$WORK"
# shellcheck source=bench/scripts/common.sh
. "$SCRIPTS/common.sh"
make_server_certs
for kx in false true; do
  cat > "cfg-$kx.toml" <<EOT
[server]
port = 0
[storage]
data_dir = "$WORK/data-$kx"
[log]
level = "warn"
[tls]
enabled = true
port = $PORT
cert_path = "$WORK/ec.pem"
key_path = "$WORK/ec.key"
alt_cert_path = "$WORK/rsa.pem"
alt_key_path = "$WORK/rsa.key"
rsa_key_exchange = $kx
EOT
done
# "<suite> <handshakes in T seconds>"; empty when the listener refuses the suite.
suite() {
  local name=$1; shift
  local n
  n=$(openssl s_time -connect "127.0.0.1:$PORT" -CAfile ca.pem -time "$T" "$@" 2>&1 < /dev/null \
    | grep -m1 "connections in" | sed -E 's/^([0-9]+) connections in.*/\1/' || true)
  echo "$name ${n:-refused}"
}
for round in 1 2; do
  for kx in false true; do
    rm -rf "data-$kx"
    "$BIN" serve --config "cfg-$kx.toml" > "server-$kx.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
    echo "== round $round rsa_key_exchange=$kx (handshakes in ${T} s)"
    suite ecdhe-ecdsa-aes128 -new -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256
    suite ecdhe-ecdsa-aes256 -new -tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384
    suite ecdhe-rsa-aes128 -new -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256
    suite rsa-aes128 -new -tls1_2 -cipher AES128-GCM-SHA256
    suite rsa-aes256 -new -tls1_2 -cipher AES256-GCM-SHA384
    suite tls13 -new -tls1_3
    suite tls12-ecdsa-resumed -reuse -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
