#!/usr/bin/env bash
# The packages, tested the way an admin uses them (run as root by scripts/test.sh):
#   bash scripts/test-packages.sh
# 1. Runs the README's "Install on a cluster" build block (make deb, make rpm) here;
# 2. builds again from a copy of the tree in another directory: every package must be
#    byte-identical (SOURCE_DATE_EPOCH, remapped paths); `make install DESTDIR=…`
#    installs the same files as the .debs and keeps an edited configuration;
# 3. lintian on the .debs (remaining tags explained in docs/install.md);
# 4. rpm -qlp / -qRp / -qcp of the .rpms;
# 5. in a fresh Debian 12 root (debootstrap minbase, cached as a tarball) runs the
#    README's node block (apt-get install ./*.deb, deps from the mirror) and its
#    activation block, then checks --version, man -w, the bash completion, the plugin's
#    plugin_version against the root's Slurm, `warren doctor`, and that `dpkg -r` leaves
#    only the edited conffile.
# Without root or a tool it skips (WARREN_TEST_NO_SKIP=1 makes that a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

skip() {
  if [ "${WARREN_TEST_NO_SKIP:-}" = 1 ]; then echo "test-packages: FAIL (would skip): $*" >&2; exit 1; fi
  echo "test-packages: SKIP: $*"; exit 0
}
fail() { echo "test-packages: FAIL: $*" >&2; exit 1; }
say() { echo "== test-packages: $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mount)"
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || skip "cargo not found"
need=(rpm lintian debootstrap binutils dpkg-dev man-db)
[ -f slurm/Cargo.toml ] && need+=(libslurm-dev)
missing=()
for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    skip "cannot install ${missing[*]}"
fi

STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}
mkdir -p "$STATE"

# Removes a test dir: processes rooted in its Debian root (apt's children) first, then
# the root's /proc, then the files (never through a mount).
teardown() {
  local dir=$1 root=$1/root p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc" || umount -l "$root/proc"; fi
  if grep -q " $dir/" /proc/self/mountinfo; then
    echo "test-packages: still mounted under $dir: not removing it" >&2; return 1
  fi
  rm -rf "$dir"
}
# One run at a time; what a run killed before its trap left behind goes now.
exec 9>"$STATE/pkg-test.lock"
flock 9
for old in /var/tmp/warren-pkgtest.*; do [ ! -d "$old" ] || teardown "$old"; done

T=$(mktemp -d /var/tmp/warren-pkgtest.XXXXXX)
R=$T/root
trap 'teardown "$T"' EXIT

# The README section's fenced blocks, in order: 1 build, 2 node install, 3 activation.
section=$(awk '/^## /{on = ($0 ~ /^## Install on a cluster/)} on' README.md)
block() {
  awk -v n="$1" '/^```/{ if (inblk) { inblk = 0; next } k++; inblk = 1; next } inblk && k == n' <<<"$section"
}
[ -n "$(block 1)" ] && [ -n "$(block 2)" ] && [ -n "$(block 3)" ] ||
  fail "README.md: the \"Install on a cluster\" section needs three sh blocks (build, node, activation)"

# --- 1. build as the README says, twice, in two directories ---------------------------
# The commit and its time go to both builds the way a source tarball build gets them.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export WARREN_COMMIT=${WARREN_COMMIT:-$(git rev-parse HEAD)}
say "build (README block 1) in $SRC"
(export OUT=$T/out-a CARGO_TARGET_DIR=$STATE/pkg-target-a; set -x; eval "$(block 1)") >"$T/build-a.log" 2>&1 ||
  { tail -n 30 "$T/build-a.log" >&2; fail "README build block failed in $SRC"; }
say "build again from a copy in $STATE/pkg-src-b"
# Tracked files only (what a release tarball holds), with their times, at a fixed path
# so cargo reuses the second target dir between runs.
rm -rf "$STATE/pkg-src-b" && mkdir -p "$STATE/pkg-src-b"
git ls-files -z | xargs -0 cp --parents -a -t "$STATE/pkg-src-b"
(cd "$STATE/pkg-src-b" && export OUT=$T/out-b CARGO_TARGET_DIR=$STATE/pkg-target-b && eval "$(block 1)") >"$T/build-b.log" 2>&1 ||
  { tail -n 30 "$T/build-b.log" >&2; fail "README build block failed in the copy"; }

# make install (sites without packages) installs the same files as the .deb, and keeps
# an edited configuration on a second install.
say "make install DESTDIR PREFIX=/usr/local"
inst() {
  make -s -C "$SRC" install DESTDIR="$T/inst" PREFIX=/usr/local \
    SLURM_PLUGINDIR=/usr/local/lib/slurm CARGO_TARGET_DIR="$STATE/pkg-target-a" >"$T/install.log" 2>&1 ||
    { tail -n 20 "$T/install.log" >&2; fail "make install"; }
}
inst
installed=$(cd "$T/inst" && find . -type f | sed 's|^\.||' | sort)
echo '# edited' >>"$T/inst/etc/warren/warren.toml"
inst
grep -q '^# edited' "$T/inst/etc/warren/warren.toml" || fail "a second make install overwrote the edited warren.toml"
cmp -s "$T/inst/etc/warren/warren.toml.example" "$SRC/config/warren.toml" || fail "make install: no warren.toml.example beside the kept configuration"

cd "$T/out-a"
debs=(*.deb) rpms=(*.rpm)
# The same files as the packages, but for the prefix and the packages' own copyright,
# changelog and distribution-specific directories.
packaged=$(for d in "${debs[@]}"; do dpkg-deb -c "$d"; done | awk '$1 !~ /^d/ { print substr($6, 2) }' |
  grep -v -e '/copyright$' -e '/changelog\.gz$' |
  sed -e 's|^/usr/share/zsh/vendor-completions/|/usr/share/zsh/site-functions/|' \
      -e 's|^/usr/lib/[^/]*/slurm-wlm/|/usr/lib/slurm/|' -e 's|^/usr/|/usr/local/|' | sort)
[ "$installed" = "$packaged" ] || fail "make install and the .debs differ: $(diff <(echo "$installed") <(echo "$packaged") | tr '\n' ' ')"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/Cargo.toml" | head -n1)
expect=(warren_"$version"_amd64.deb "warren-$version-1.x86_64.rpm")
if [ -f "$SRC/slurm/Cargo.toml" ]; then
  slurm=$(bash "$SRC/packaging/slurm-version.sh")
  expect+=("warren-slurm_$version+slurm${slurm%.*}_amd64.deb" "warren-slurm-$version+slurm${slurm%.*}-1.x86_64.rpm")
fi
for f in "${expect[@]}"; do [ -f "$f" ] || fail "no $f after make deb / make rpm (got: ${debs[*]} ${rpms[*]})"; done
[ $((${#debs[@]} + ${#rpms[@]})) = ${#expect[@]} ] || fail "unexpected packages: ${debs[*]} ${rpms[*]}"
for f in "${expect[@]}"; do
  cmp "$f" "$T/out-b/$f" || fail "$f differs between two builds (not reproducible; diffoscope shows where)"
done
say "reproducible: ${expect[*]}"

# --- 2. lintian ----------------------------------------------------------------------------
# Each suppressed tag is explained in docs/install.md ("Lintian").
lintian_ok="$(awk '/^## /{on = ($0 ~ /^## Lintian/)} on' "$SRC/docs/install.md" |
  sed -n 's/^| `\([a-z0-9-]*\)` | .*/\1/p' | paste -sd, -)"
lintian --fail-on error,warning ${lintian_ok:+--suppress-tags "$lintian_ok"} "${debs[@]}" >"$T/lintian.log" 2>"$T/lintian.err" ||
  { cat "$T/lintian.log" "$T/lintian.err" >&2; fail "lintian"; }
[ ! -s "$T/lintian.log" ] || { cat "$T/lintian.log" >&2; fail "lintian tags not explained in docs/install.md"; }
say "lintian clean (explained tags: ${lintian_ok:-none})"

# --- 3. rpm metadata ----------------------------------------------------------------------
rpm_has() { # what file pattern...
  local what=$1 file=$2; shift 2
  local out; out=$(rpm "$what" "$file" 2>/dev/null) || fail "rpm $what $file"
  for p in "$@"; do grep -qxE "$p" <<<"$out" || fail "rpm $what $file: no line matching $p in: $(echo $out)"; done
}
w=warren-$version-1.x86_64.rpm
rpm_has -qlp "$w" /usr/bin/warren /etc/warren/warren.toml /usr/share/man/man1/warren.1.gz \
  /usr/share/man/man1/warren-run.1.gz /usr/share/bash-completion/completions/warren \
  /usr/share/zsh/site-functions/_warren /usr/share/fish/vendor_completions.d/warren.fish \
  /usr/share/doc/warren/README.md
rpm_has -qcp "$w" /etc/warren/warren.toml
rpm_has -qRp "$w" shadow-utils squashfuse fuse3 squashfs-tools-ng 'libc\.so\.6\(GLIBC_[0-9.]+\)\(64bit\)'
rpm -qp --recommends "$w" | grep -qx fuse-overlayfs || fail "$w does not recommend fuse-overlayfs"
if [ -n "${slurm:-}" ]; then
  s=warren-slurm-$version+slurm${slurm%.*}-1.x86_64.rpm
  rpm_has -qlp "$s" /usr/lib64/slurm/libwarren_spank.so /usr/share/doc/warren-slurm/examples/warren.conf
  rpm_has -qRp "$s" "slurm = $slurm" "warren = $version-1"
  ! rpm -qlp "$s" | grep -q '^/etc' || fail "$s installs into /etc (the plugin must not be activated by the package)"
fi
say "rpm file lists and requirements as expected"

# --- 4. a fresh Debian 12 root -------------------------------------------------------------
# debootstrap once into a tarball (~1 min), unpacked fresh for every run (seconds).
base=$STATE/pkg-bookworm-minbase.tar
if [ ! -f "$base" ]; then
  say "debootstrap bookworm minbase (cached in $base)"
  mkdir -p "$STATE/debootstrap-cache"
  debootstrap --variant=minbase --include=man-db --cache-dir="$STATE/debootstrap-cache" \
    bookworm "$T/boot" http://deb.debian.org/debian >"$T/debootstrap.log" 2>&1 ||
    { tail -n 20 "$T/debootstrap.log" >&2; fail "debootstrap"; }
  tar -C "$T/boot" -cf "$base.tmp" . && mv -f "$base.tmp" "$base" && rm -rf "$T/boot"
fi
mkdir -p "$R" && tar -C "$R" -xpf "$base"
# The build host's mirror configuration, so the Slurm the plugin was built for is there.
rm -f "$R/etc/apt/sources.list"
cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$R/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$R/etc/apt/"
# Nothing started inside (munge and slurmd postinsts would start daemons).
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d" && chmod 0755 "$R/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"
# Downloaded packages are kept between runs.
mkdir -p "$STATE/pkg-apt-archives"
cp "$STATE"/pkg-apt-archives/*.deb "$R/var/cache/apt/archives/" 2>/dev/null || true
mkdir -p "$R/tmp/pkgs" && cp "${debs[@]}" "$R/tmp/pkgs/"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -q >"$T/apt.log" 2>&1 || { tail -n 20 "$T/apt.log" >&2; fail "apt-get update in the test root"; }

say "node install (README block 2) in a fresh Debian 12 root"
# A tree without the plugin crate builds no warren-slurm package to install.
node_block=$(block 2)
[ -n "${slurm:-}" ] || node_block=${node_block// .\/warren-slurm_\*.deb/}
(echo "$node_block") | in_root bash -euxc 'cd /tmp/pkgs; source /dev/stdin' >"$T/node.log" 2>&1 ||
  { tail -n 30 "$T/node.log" >&2; fail "README node block failed in the test root"; }
cp -n "$R"/var/cache/apt/archives/*.deb "$STATE/pkg-apt-archives/" 2>/dev/null || true

got=$(in_root warren --version)
[ "$got" = "warren $version (commit ${WARREN_COMMIT:0:12})" ] || fail "warren --version in the root: $got"
for page in warren warren-run warren-pull warren-doctor warren-admin-subid-plan warren-completion; do
  in_root man -w "$page" >/dev/null || fail "man -w $page in the root"
done
comp=$(in_root bash -c 'source /usr/share/bash-completion/completions/warren && COMP_WORDS=(warren pu) COMP_CWORD=1 && _warren warren pu warren && echo "${COMPREPLY[*]}"') ||
  fail "the bash completion does not load in the root"
[ "$comp" = pull ] || fail "bash completion of 'warren pu' gave '$comp', not 'pull'"
# zsh and fish find the packaged scripts in their vendor directories by themselves.
in_root apt-get install -y -q --no-install-recommends zsh fish >"$T/shells.log" 2>&1 ||
  { tail -n 20 "$T/shells.log" >&2; fail "apt-get install zsh fish in the test root"; }
comp=$(in_root zsh -fc 'autoload -Uz +X _warren && whence -w _warren') ||
  fail "zsh does not find _warren"
[ "$comp" = "_warren: function" ] || fail "zsh: $comp"
comp=$(in_root fish -c "complete -C 'warren pu'") || fail "fish completion"
grep -q '^pull' <<<"$comp" || fail "fish completion of 'warren pu' gave '$comp'"
say "warren --version, man -w, bash, zsh and fish completions OK"

if [ -n "${slurm:-}" ]; then
  so=$R/usr/lib/x86_64-linux-gnu/slurm-wlm/libwarren_spank.so
  [ -f "$so" ] || fail "$so not installed"
  # plugin_version read from the installed file, compared with the root's slurmd.
  addr=$(readelf -W --dyn-syms "$so" | awk '$8 == "plugin_version" { print $2; exit }')
  [ -n "$addr" ] || fail "no plugin_version symbol in $so"
  le=$(objdump -s --start-address="0x$addr" --stop-address="$((0x$addr + 4))" "$so" | awk '/^ [0-9a-f]+ / { print $2; exit }')
  pv=$(printf '%d.%02d.%d' "0x${le:4:2}" "0x${le:2:2}" "0x${le:0:2}")
  [ "${le:6:2}" = 00 ] || fail "plugin_version bytes $le"
  # The Slurm apt chose to satisfy the dependency (its plugins, on every Slurm node).
  running=$(in_root dpkg-query -W -f='${Version}' slurm-wlm-basic-plugins)
  [ "$pv" = "${running%%-*}" ] || fail "plugin_version $pv, Slurm in the root $running"
  say "plugin_version $pv = the root's Slurm $running"
  # A compute node: slurmd, whose -V the doctor compares with the plugin.
  in_root apt-get install -y -q --no-install-recommends slurmd >"$T/slurmd.log" 2>&1 ||
    { tail -n 20 "$T/slurmd.log" >&2; fail "apt-get install slurmd in the test root"; }
  [ ! -e "$R/etc/slurm/plugstack.conf.d/warren.conf" ] || fail "the package activated the plugin by itself"
  (block 3; echo) | in_root bash -euxc 'source /dev/stdin' >"$T/activate.log" 2>&1 ||
    { cat "$T/activate.log" >&2; fail "README activation block failed in the test root"; }
  in_root warren doctor --json >"$T/doctor.json" 2>"$T/doctor.err" || true
  python3 - "$T/doctor.json" <<'EOF' || { cat "$T/doctor.json" "$T/doctor.err" >&2; fail "warren doctor does not find the installed plugin OK"; }
import json, sys
checks = json.load(open(sys.argv[1]))["checks"]
spank = [c for c in checks if c["id"] == "spank_plugin"]
assert spank and all(c["status"] == "ok" for c in spank), spank
print("== test-packages: doctor:", spank[0]["detail"])
EOF
  rm -f "$R/etc/slurm/plugstack.conf.d/warren.conf"
fi

# dpkg -r: everything goes except the admin's edited configuration.
echo '# edited by the admin' >>"$R/etc/warren/warren.toml"
shipped=$(for d in "${debs[@]}"; do dpkg-deb -c "$d"; done | awk '$1 !~ /^d/ { print substr($6, 2) }' | sort -u)
pkgs=$(for d in "${debs[@]}"; do dpkg-deb -f "$d" Package; done)
# shellcheck disable=SC2086
in_root dpkg -r $pkgs >"$T/remove.log" 2>&1 || { cat "$T/remove.log" >&2; fail "dpkg -r $pkgs"; }
left=$(while read -r f; do if [ -e "$R$f" ] || [ -L "$R$f" ]; then echo "$f"; fi; done <<<"$shipped")
[ "$left" = /etc/warren/warren.toml ] || fail "after dpkg -r, left: $(echo $left) (only /etc/warren/warren.toml expected)"
grep -q 'edited by the admin' "$R/etc/warren/warren.toml" || fail "dpkg -r changed the edited conffile"
for d in /usr/share/doc/warren /usr/share/doc/warren-slurm; do [ ! -e "$R$d" ] || fail "$d left after dpkg -r"; done
say "dpkg -r removed everything but the edited conffile"
echo "test-packages: all package tests passed"
