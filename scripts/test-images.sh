#!/usr/bin/env bash
# Build test images without a container engine (umoci + skopeo) and push them to the
# local registry (scripts/registry.sh start first).
#   test-images.sh [busybox|torture|debian|python|openmpi|mpich|all]   build (cached) and push
#   test-images.sh layout torture DIR                    only write the torture layout
# busybox and torture are built by default ("all"); debian, python, openmpi and mpich
# (debootstrap, ~30-90 s each, network to the apt mirror; openmpi needs mpicc on the
# host: libopenmpi-dev) only when named.
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

# The torture image: layers written directly as tar (umoci cannot set arbitrary owners
# as non-root), covering what breaks naive extractors. tests/squash_torture.rs holds
# the expected result; keep the two in step. TORTURE_VARIANT=podman leaves out the two
# hard links podman 4.3 cannot apply (target later in the same layer; target in a lower
# layer), so podman can serve as an oracle (tests/squash_podman.rs).
torture_layout() { # DIR
  local L=$1
  rm -rf "$L"; mkdir -p "$L"
  command -v zstd >/dev/null || { echo "test-images: zstd is needed" >&2; return 1; }
  /usr/bin/python3 - "$L" <<'PY'
import gzip, hashlib, io, json, os, subprocess, sys, tarfile
L = sys.argv[1]
os.makedirs(f"{L}/blobs/sha256")
MT = 1700000000
CAP = bytes([1, 0, 0, 2, 0, 4, 0, 0] + [0] * 12)  # v2, effective, cap_net_bind_service
BIN = bytes([0, 255, 1, 254]).decode("utf-8", "surrogateescape")

def ti(name, typ=tarfile.REGTYPE, mode=None, uid=0, gid=0, data=b"", link="", x=None, dev=(0, 0)):
    t = tarfile.TarInfo(name)
    if mode is None:
        mode = 0o755 if typ == tarfile.DIRTYPE else 0o644
    t.type, t.mode, t.uid, t.gid, t.mtime = typ, mode, uid, gid, MT
    t.uname = t.gname = ""
    t.linkname = link
    t.devmajor, t.devminor = dev
    if x:
        t.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in x.items()}
    t.size = len(data) if typ == tarfile.REGTYPE else 0
    return t, data

D, F, S, H, P, C = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE
long = "usr/share/" + "/".join(["a-rather-long-directory-name"] * 5) + "/file-with-a-long-name.txt"
PODMAN = os.environ.get("TORTURE_VARIANT") == "podman"
layers = [
  # layer 1: gzip
  [ti("/", D, 0o755), ti("./etc/", D, 0o755), ti("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
   ti("etc/ovlgone", data=b"overlay whiteout removes me\n"),
   ti("bin/", D, 0o755), ti("bin/tool", mode=0o755, data=b"#!/bin/sh\necho tool\n"),
   ti("bin/suid", mode=0o4755, data=b"suid\n"), ti("bin/sgid", mode=0o2755, gid=48, data=b"sgid\n"),
   ti("home/", D), ti("home/u1001/", D, 0o700, 1001, 1001), ti("home/u1001/f", mode=0o600, uid=1001, gid=1001, data=b"mine\n"),
   ti("apache/", D, 0o750, 48, 48), ti("nobody", uid=65534, gid=65534, data=b"nobody\n"),
   ti("big-owner", uid=200000, gid=200001, data=b"big\n"), ti("huge-owner", uid=3000000, gid=3000001, data=b"huge\n"),
   ti("secret", mode=0o000, data=b"no one reads me\n"),
   ti("ro/", D, 0o555), ti("ro/file", mode=0o444, data=b"read only\n"),
   ti("cap", mode=0o755, data=b"capable\n", x={"security.capability": CAP.decode("latin-1").encode("latin-1").decode("utf-8", "surrogateescape"), "user.bin": BIN}),
   ti("link-sym", S, 0o777, link="bin/tool"), ti("abs-sym", S, 0o777, link="/etc/passwd"),
   ti("dangling", S, 0o777, link="/nonexistent/x"), ti("fifo", P, 0o620),
   ti("dev/", D), ti("dev/null", C, 0o666, dev=(1, 3)),
   ti("hl/", D), ti("hl/a", data=b"shared\n"), ti("hl/b", H, link="hl/a"),
   *([] if PODMAN else [ti("hl/early", H, link="hl/zlate")]), ti("hl/zlate", mode=0o640, uid=7, data=b"late target\n"),
   ti("opq/", D), ti("opq/old1", data=b"old\n"), ti("opq/sub/", D), ti("opq/sub/old2", data=b"old\n"),
   ti("wh/", D), ti("wh/gone", data=b"gone\n"), ti("wh/stay", data=b"stay\n"), ti("wh/dir/", D), ti("wh/dir/inside", data=b"x\n"),
   ti("replace/", D), ti("replace/f2d", data=b"file\n"), ti("replace/d2f/", D), ti("replace/d2f/x", data=b"x\n"),
   ti("replace/s2f", S, 0o777, link="/etc"), ti("replace/f2s", data=b"file\n"),
   ti("tmp/", D, 0o1777), ti("lower-target", data=b"version 1\n"),
   ti("dir-meta/", D, 0o755), ti("dir-meta/keep", data=b"keep\n"),
   ti(long, data=b"long path\n"), ti("long-link", S, 0o777, link="/" + long)],
  # layer 2: zstd; the opaque marker comes after the new file of its directory
  [ti("opq/new", data=b"new\n"), ti("opq/.wh..wh..opq", data=b""), ti("wh/.wh.gone"), ti("wh/.wh.dir"),
   ti("replace/f2d/", D, 0o700), ti("replace/f2d/in", data=b"in\n"), ti("replace/d2f", data=b"now a file\n"),
   ti("replace/s2f", data=b"now a file\n"), ti("replace/f2s", S, 0o777, link="/etc/passwd"),
   *([] if PODMAN else [ti("xl-link", H, link="lower-target")]), ti("dir-meta/", D, 0o750, 1001, 1001),
   ti("etc/ovlgone", C, 0, dev=(0, 0))],
  # layer 3: uncompressed
  [ti(".wh.nobody"), ti("lower-target", data=b"version 2\n")],
]
def blob(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{L}/blobs/sha256/{d}", "wb").write(b)
    return d
descs, diffs = [], []
for i, entries in enumerate(layers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for t, data in entries:
            tf.addfile(t, io.BytesIO(data) if t.type == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    if i == 0:
        comp, mt = gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    elif i == 1:
        comp, mt = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout, "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        comp, mt = raw, "application/vnd.oci.image.layer.v1.tar"
    descs.append({"mediaType": mt, "digest": "sha256:" + blob(comp), "size": len(comp)})
config = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/bin", "TORTURE=1"], "Entrypoint": ["/bin/tool"], "Cmd": ["--help"],
                     "WorkingDir": "/home/u1001", "User": "1001:1001", "Labels": {"test": "torture"}},
          "rootfs": {"type": "layers", "diff_ids": diffs}}
cb = json.dumps(config).encode()
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + blob(cb), "size": len(cb)},
            "layers": descs}
mb = json.dumps(manifest).encode()
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + blob(mb), "size": len(mb), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
json.dump(index, open(f"{L}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{L}/oci-layout", "w"))
PY
}

torture() {
  local L=$OCI/torture sum
  # Rebuilt whenever this script changes (the expected tree lives in the tests).
  sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)
  [ "$(cat "$L/.done" 2>/dev/null)" = "$sum" ] || { torture_layout "$L"; echo "$sum" > "$L/.done"; }
  push "$L" latest test/torture:latest
}

# A Debian image from debootstrap (minbase), cleaned like an official image; with
# $2 packages added (python: python3, the ~200 MB benchmark image) and $3, a function
# given the root directory, run before the clean-up. Built as root so the layer keeps
# the real owners.
rootfs_image() { # name include [customize]
  local name=$1 include=${2:-} customize=${3:-} L=$OCI/$1 R=$STATE/rootfs-$1
  if [ ! -f "$L/.done" ]; then
    [ "$(id -u)" = 0 ] || { echo "test-images: $name needs root (debootstrap)" >&2; return 1; }
    rm -rf "$L" "$R"; mkdir -p "$STATE/debootstrap-cache"
    debootstrap --variant=minbase ${include:+--include=$include} \
      --cache-dir="$STATE/debootstrap-cache" bookworm "$R" http://deb.debian.org/debian >"$STATE/debootstrap-$name.log"
    [ -z "$customize" ] || "$customize" "$R" >>"$STATE/debootstrap-$name.log" 2>&1
    rm -rf "$R"/dev/* "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin \
      "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/ldconfig/aux-cache "$R"/tmp/* "$R"/var/tmp/*
    find "$R/var/log" -type f -delete
    umoci init --layout "$L"
    umoci new --image "$L:latest"
    umoci insert --image "$L:latest" "$R" /
    umoci config --image "$L:latest" --config.cmd /bin/bash \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --config.label org.opencontainers.image.title="warren-test-$name"
    rm -rf "$R"
    touch "$L/.done"
  fi
  push "$L" latest "test/$name:latest"
}

# The Open MPI image (docs/mpi.md): Debian's openmpi-bin, upgraded from bookworm-security
# so its PMIx is the host's (Slurm's mpi/pmix server and the image's client must match),
# plus our MPI programs from tests/fixtures/mpi compiled on the host with mpicc against
# the same Debian Open MPI, in /usr/local/bin: mpi-hello, mpi-pingpong, mpi-nodeshare.
MPI_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/fixtures/mpi
openmpi_customize() { # root
  local R=$1 p
  printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    >"$R/etc/apt/sources.list"
  chroot "$R" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get -y -qq upgrade
  for p in hello pingpong nodeshare; do
    mpicc -O2 -o "$R/usr/local/bin/mpi-$p" "$MPI_SRC/$p.c"
  done
}
# test/mpich: an image whose MPI is MPICH (libmpi.so.12, the MPICH ABI), which the
# host's Open MPI (libmpi.so.40) cannot replace: the injection tests' refusal case.

case "${1:-all}" in
  busybox) busybox ;;
  torture) torture ;;
  debian) rootfs_image debian ;;
  python) rootfs_image python python3 ;;
  openmpi)
    # Rebuilt when our MPI programs change.
    sum=$(cat "$MPI_SRC"/*.c | sha256sum | cut -c1-64)
    [ "$(cat "$OCI/openmpi/.src" 2>/dev/null)" = "$sum" ] || rm -f "$OCI/openmpi/.done"
    rootfs_image openmpi openmpi-bin openmpi_customize
    echo "$sum" >"$OCI/openmpi/.src" ;;
  mpich) rootfs_image mpich libmpich12 ;;
  all) busybox; torture ;;
  layout)
    [ "${2:-}" = torture ] && [ -n "${3:-}" ] || { echo "usage: test-images.sh layout torture DIR" >&2; exit 2; }
    torture_layout "$3"; exit 0 ;;
  *) echo "usage: test-images.sh [busybox|torture|debian|python|openmpi|mpich|all] | layout torture DIR" >&2; exit 2 ;;
esac
echo "test-images: pushed to $REGISTRY"
