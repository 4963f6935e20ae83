#!/usr/bin/env bash
# Build test images without a container engine (umoci + skopeo) and push them to the
# local registry (scripts/registry.sh start first).
#   test-images.sh [busybox|all]
# Layouts under ${WARREN_TEST_STATE:-/var/tmp/warren-test}/oci; pushed as
# 127.0.0.1:5000/test/NAME:latest.
set -euo pipefail
STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}
OCI=$STATE/oci
REGISTRY=${WARREN_TEST_REGISTRY:-127.0.0.1:5000}
mkdir -p "$OCI"

push() { # layout tag dest
  skopeo copy -q "oci:$1:$2" "docker://$REGISTRY/$3" --dest-tls-verify=false
}

busybox() {
  local L=$OCI/busybox W; W=$(mktemp -d)
  trap 'rm -rf "$W"' RETURN
  if [ ! -f "$L/.done" ]; then
    rm -rf "$L"
    mkdir -p "$W/root/bin" "$W/root/etc" "$W/root/tmp" "$W/root/root"
    cp /bin/busybox "$W/root/bin/busybox"
    for a in $(/bin/busybox --list); do
      [ "$a" = busybox ] || ln -sf busybox "$W/root/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$W/root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$W/root/etc/group"
    chmod 1777 "$W/root/tmp"
    umoci init --layout "$L"
    umoci new --image "$L:latest"
    umoci insert --rootless --image "$L:latest" "$W/root" /
    umoci config --image "$L:latest" --config.cmd /bin/sh \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --config.workingdir / --config.label org.opencontainers.image.title=warren-test-busybox
    touch "$L/.done"
  fi
  push "$L" latest test/busybox:latest
}

case "${1:-all}" in
  busybox|all) busybox ;;
  *) echo "usage: test-images.sh [busybox|all]" >&2; exit 2 ;;
esac
echo "test-images: pushed to $REGISTRY"
