# Shared by deb.sh and rpm.sh (sourced): the version, the reproducibility inputs, and
# staging of `make install` trees with normalised modes and times.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MAKE=${MAKE:-make}
OUT=${OUT:-$PWD/dist}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# Same defaults as the Makefile: the commit's time and id; a tarball build sets them.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)}
export WARREN_COMMIT=${WARREN_COMMIT:-$(git rev-parse -q --verify HEAD 2>/dev/null || true)}
export TZ=UTC LC_ALL=C.UTF-8
umask 022

have_slurm() { [ -f slurm/Cargo.toml ]; }

# Every file and directory of a staged tree gets the commit's time: the archive then
# depends on the contents only.
normalise() {
  chmod -R u+rwX,go+rX,go-w "$1"
  find "$1" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# A fresh empty staging dir under $OUT (removed by the caller's trap).
WORK=
new_work() {
  mkdir -p "$OUT"
  WORK=$(mktemp -d "$OUT/.stage.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
}
