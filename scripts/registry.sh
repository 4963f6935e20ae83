#!/usr/bin/env bash
# Local test registries (Debian's docker-registry 2.8) and what warren's registry tests need.
#   registry.sh start | stop | status
#
# start (idempotent) brings up:
#   127.0.0.1:5000  plain HTTP, no auth (loopback: clients may use HTTP, Docker's rule)
#   127.0.0.1:5001  HTTPS (CA: $STATE/registry/certs/ca.pem, SAN IP:127.0.0.1 + localhost),
#                   basic auth, user warren / password warren-pass (htpasswd -B)
#   127.0.0.1:5002  plain HTTP, bearer-token auth; realm http://127.0.0.1:5003/token
#   127.0.0.1:5003  test token server (scripts/registry-token-server.py): anonymous pull
#                   except private/*, user tokenuser / password tokenpass may pull+push
# and seeds them (once): test/busybox on all three (scripts/test-images.sh pushes it to
# :5000 if missing), private/busybox on :5002, and test/multi:{latest,docker} (two-platform
# OCI index and Docker manifest list, scripts/registry-multiarch.py) on :5000.
# State under ${WARREN_TEST_STATE:-/var/tmp/warren-test}/registry.
set -euo pipefail
STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}
REG=$STATE/registry
CERTS=$REG/certs
HERE=$(cd "$(dirname "$0")" && pwd)
BASIC_USER=warren BASIC_PASS=warren-pass
TOKEN_USER=tokenuser TOKEN_PASS=tokenpass
mkdir -p "$REG"

up() { # url [curl args...]: any HTTP answer (401 included) means the server is up
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${@:2}" "$1" 2>/dev/null) || true
  [ -n "$code" ] && [ "$code" != 000 ]
}

wait_up() { # name url [curl args...]
  for _ in $(seq 100); do
    up "${@:2}" && return 0
    sleep 0.1
  done
  echo "registry.sh: $1 did not start; see $REG/$1.log" >&2
  return 1
}

spawn() { # name cmd...: run in its own session, remember the pid
  local name=$1; shift
  setsid "$@" >"$REG/$name.log" 2>&1 < /dev/null &
  echo $! > "$REG/$name.pid"
}

config() { # name addr extra-yaml (the plain registry keeps its historical data dir)
  local data=$REG/data-$1
  [ "$1" = plain ] && data=$REG/data
  cat > "$REG/$1.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $data }
  delete: { enabled: true }
http:
  addr: $2
$3
YML
}

certs() {
  [ -f "$CERTS/.done" ] && return 0
  rm -rf "$CERTS"; mkdir -p "$CERTS"
  (
    cd "$CERTS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=warren test CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile ext.cnf -out server.pem 2>/dev/null
    # The token issuer's signing certificate (self-signed; the registry's rootcertbundle).
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=warren test token issuer" \
      -keyout token.key -out token.pem 2>/dev/null
    # skopeo --dest-cert-dir wants the CA as *.crt.
    mkdir -p skopeo && cp ca.pem skopeo/ca.crt
    htpasswd -Bbn "$BASIC_USER" "$BASIC_PASS" > htpasswd
    chmod 0644 ./*.pem skopeo/ca.crt
    touch .done
  )
}

start_plain() {
  up http://127.0.0.1:5000/v2/ && return 0
  config plain 127.0.0.1:5000 ""
  spawn plain docker-registry serve "$REG/plain.yml"
  wait_up plain http://127.0.0.1:5000/v2/
}

start_basic() {
  up https://127.0.0.1:5001/v2/ --cacert "$CERTS/ca.pem" && return 0
  config basic 127.0.0.1:5001 "  tls: { certificate: $CERTS/server.pem, key: $CERTS/server.key }
auth:
  htpasswd: { realm: warren-test, path: $CERTS/htpasswd }"
  spawn basic docker-registry serve "$REG/basic.yml"
  wait_up basic https://127.0.0.1:5001/v2/ --cacert "$CERTS/ca.pem"
}

start_token() {
  if ! up http://127.0.0.1:5003/token; then
    spawn token-server python3 "$HERE/registry-token-server.py" --listen 127.0.0.1:5003 \
      --key "$CERTS/token.key" --cert "$CERTS/token.pem" --issuer warren-test-issuer \
      --users "$TOKEN_USER:$TOKEN_PASS" --log "$REG/token-requests.log"
    wait_up token-server http://127.0.0.1:5003/token
  fi
  up http://127.0.0.1:5002/v2/ && return 0
  config token 127.0.0.1:5002 "auth:
  token:
    realm: http://127.0.0.1:5003/token
    service: warren-test-registry
    issuer: warren-test-issuer
    rootcertbundle: $CERTS/token.pem"
  spawn token docker-registry serve "$REG/token.yml"
  wait_up token http://127.0.0.1:5002/v2/
}

has_manifest() { # base-url repo tag [curl args]
  curl -fsS -o /dev/null --max-time 5 "${@:4}" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
    "$1/v2/$2/manifests/$3" 2>/dev/null
}

seed() {
  if ! has_manifest http://127.0.0.1:5000 test/busybox latest; then
    WARREN_TEST_REGISTRY=127.0.0.1:5000 "$HERE/test-images.sh" busybox >/dev/null
  fi
  local src=docker://127.0.0.1:5000/test/busybox:latest
  if ! has_manifest https://127.0.0.1:5001 test/busybox latest --cacert "$CERTS/ca.pem" \
       -u "$BASIC_USER:$BASIC_PASS"; then
    skopeo copy -q --src-tls-verify=false "$src" docker://127.0.0.1:5001/test/busybox:latest \
      --dest-cert-dir "$CERTS/skopeo" --dest-creds "$BASIC_USER:$BASIC_PASS"
  fi
  if [ ! -f "$REG/data-token/.seeded" ]; then
    for repo in test/busybox private/busybox; do
      skopeo copy -q --src-tls-verify=false "$src" "docker://127.0.0.1:5002/$repo:latest" \
        --dest-tls-verify=false --dest-creds "$TOKEN_USER:$TOKEN_PASS"
    done
    touch "$REG/data-token/.seeded"
  fi
  if ! has_manifest http://127.0.0.1:5000 test/multi docker; then
    python3 "$HERE/registry-multiarch.py" 127.0.0.1:5000 test/multi >/dev/null
  fi
}

stop_all() {
  for pidf in "$REG"/*.pid; do
    [ -f "$pidf" ] || continue
    kill "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
  done
}

status() {
  local rc=0
  for u in http://127.0.0.1:5000/v2/ http://127.0.0.1:5002/v2/ http://127.0.0.1:5003/token; do
    if up "$u"; then echo "up   $u"; else echo "down $u"; rc=1; fi
  done
  if up https://127.0.0.1:5001/v2/ --cacert "$CERTS/ca.pem"; then
    echo "up   https://127.0.0.1:5001/v2/"
  else
    echo "down https://127.0.0.1:5001/v2/"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  start) certs; start_plain; start_basic; start_token; seed ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: registry.sh start|stop|status" >&2; exit 2 ;;
esac
