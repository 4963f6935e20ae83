#!/usr/bin/env bash
# Local test registries (Debian's docker-registry, the CNCF distribution registry).
#   registry.sh start | stop | status
# Plain HTTP on 127.0.0.1:5000 (loopback: clients may use HTTP, Docker's rule).
# State under ${WARREN_TEST_STATE:-/var/tmp/warren-test}.
set -euo pipefail
STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}
REG=$STATE/registry
mkdir -p "$REG"

start_plain() {
  if curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; then return 0; fi
  cat > "$REG/plain.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $REG/data }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:5000
YML
  setsid docker-registry serve "$REG/plain.yml" >"$REG/plain.log" 2>&1 < /dev/null &
  echo $! > "$REG/plain.pid"
  for _ in $(seq 50); do
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null && return 0
    sleep 0.1
  done
  echo "registry.sh: registry on 127.0.0.1:5000 did not start; see $REG/plain.log" >&2
  return 1
}

stop_all() {
  for pidf in "$REG"/*.pid; do
    [ -f "$pidf" ] || continue
    kill "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
  done
}

case "${1:-}" in
  start) start_plain ;;
  stop) stop_all ;;
  status) curl -fsS http://127.0.0.1:5000/v2/_catalog ;;
  *) echo "usage: registry.sh start|stop|status" >&2; exit 2 ;;
esac
