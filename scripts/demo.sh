#!/usr/bin/env bash
# The main job on a fresh Debian 12, as root:
#   bash scripts/demo.sh
# Installs the dependencies, starts a local registry with a small real image
# (busybox-static packed with umoci), builds warren, then — as the unprivileged user
# warren-ci — pulls the image into a squashfs store and runs a container from it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it installs packages and a test user)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup-host.sh
bash scripts/registry.sh start
bash scripts/test-images.sh busybox

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warren-target}
mkdir -p "$CARGO_TARGET_DIR" && chmod 0755 "$CARGO_TARGET_DIR"
cargo build --release -q
install -D -m 0755 "$CARGO_TARGET_DIR/release/warren" /usr/local/bin/warren

IMAGE=127.0.0.1:5000/test/busybox:latest
as_user() { runuser -u warren-ci -- env -i HOME=/home/warren-ci USER=warren-ci \
  PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR=/run/user/"$(id -u warren-ci)" "$@"; }

echo "== warren pull $IMAGE (as warren-ci)"
as_user warren pull "$IMAGE"
echo "== warren images"
as_user warren images
echo "== warren run $IMAGE"
as_user warren run --rm "$IMAGE" sh -c 'echo "hello from $(cat /etc/hostname 2>/dev/null || hostname): uid=$(id -u) $(uname -sr)"; ls -ln /bin/busybox'
echo "demo: done. Stop the registry with: bash scripts/registry.sh stop"
