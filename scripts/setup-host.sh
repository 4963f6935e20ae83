#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for warren's tests and demo:
# packages, usable /dev/fuse, and two unprivileged test users — one with a
# subuid/subgid range, one without. Idempotent: safe to run again.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-host: run as root" >&2; exit 1; }

PKGS=(uidmap squashfuse fuse3 fuse-overlayfs squashfs-tools squashfs-tools-ng
      docker-registry skopeo umoci busybox-static debootstrap apache2-utils openssl python3 python3-cryptography
      runc podman charliecloud python3-lark hyperfine procps psmisc util-linux
      curl jq ca-certificates iproute2 libcap2-bin pkg-config python3 zstd attr
      slurm-wlm slurmctld slurmd munge libslurm-dev libpmix-dev
      openmpi-bin libopenmpi-dev gcc libc6-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust to build warren, unless one new enough is there already (rustup's, in ~/.cargo/bin,
# is used as it is). Debian 12's own rustc (1.63) is older than warren's rust-version;
# its rustc-web and cargo-web from bookworm-security (1.96 in 2026; bookworm itself has
# 1.85, too old for the locked dependencies) are not. They bring no rustfmt or clippy:
# scripts/test.sh then skips those two checks, saying so.
export PATH="$HOME/.cargo/bin:$PATH"
want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
rust_ok() {
  local have; have=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
  command -v cargo >/dev/null &&
    [ "$(printf '%s\n%s\n' "$want" "${have:-0}" | sort -V | head -n1)" = "$want" ]
}
if ! rust_ok; then
  echo "setup-host: installing rustc-web cargo-web (Rust $want or newer needed)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustc-web cargo-web >/dev/null
  rust_ok || { echo "setup-host: Debian's rustc-web is $(rustc --version 2>/dev/null | awk '{print $2}' || true), warren needs $want: enable bookworm-security in /etc/apt/sources.list (deb http://security.debian.org/debian-security bookworm-security main), or install Rust with rustup" >&2; exit 1; }
fi

# FUSE for unprivileged users (0600 on a fresh VM, 0666 on real distributions).
[ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
chmod 0666 /dev/fuse

# Slurm (scripts/slurm.sh): Debian's packages start nothing here (no systemd);
# slurm.sh writes the config and starts the daemons itself.

# Test users. warren-ci has a range; warren-nosub has none (single-ID fallback).
mkuser() {
  id "$1" >/dev/null 2>&1 || useradd -m -s /bin/bash "$1"
  local uid; uid=$(id -u "$1")
  install -d -m 0700 -o "$1" -g "$(id -g "$1")" "/run/user/$uid"
}
mkuser warren-ci
mkuser warren-nosub
touch /etc/subuid /etc/subgid
for f in /etc/subuid /etc/subgid; do
  grep -q '^warren-ci:' "$f" || echo "warren-ci:300000:65536" >> "$f"
  sed -i '/^warren-nosub:/d' "$f"
done
echo "setup-host: ok (users warren-ci with subids, warren-nosub without; /dev/fuse 0666)"
