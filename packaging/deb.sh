#!/usr/bin/env bash
# Build warren_VERSION_ARCH.deb and, when the plugin crate is in this tree,
# warren-slurm_VERSION+slurmMAJOR.MINOR_ARCH.deb, from `make install DESTDIR=…` trees,
# with dpkg-deb (no debhelper). Called by `make deb`; OUT=DIR sets where they go.
set -euo pipefail
source "$(dirname "$0")/common.sh"

command -v dpkg-deb >/dev/null || { echo "deb.sh: dpkg-deb not found (Debian's dpkg)" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
MAINTAINER=${MAINTAINER:-warren maintainers <warren@packages.invalid>}
new_work

# The shared-library dependencies of an ELF file, the way debhelper would compute them.
shlibdeps() {
  local d=$WORK/shlibs
  mkdir -p "$d/debian"
  printf 'Source: warren\n\nPackage: warren\nArchitecture: any\n' > "$d/debian/control"
  (cd "$d" && dpkg-shlibdeps -O -e "$1" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# control, md5sums, copyright, changelog, then the archive.
package() { # name version stage depends recommends description-file
  local name=$1 version=$2 root=$3 depends=$4 recommends=$5 desc=$6
  local doc=$root/usr/share/doc/$name
  install -d "$doc" "$root/DEBIAN"
  install -m 0644 packaging/deb/copyright "$doc/copyright"
  {
    printf '%s (%s) unstable; urgency=medium\n\n' "$name" "$version"
    printf '  * Built from warren commit %s.\n\n' "${WARREN_COMMIT:-unknown}"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n > "$doc/changelog.gz"
  normalise "$root"
  local size
  size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $ARCH"
    echo "Maintainer: $MAINTAINER"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    [ -z "$recommends" ] || echo "Recommends: $recommends"
    echo "Section: admin"
    echo "Priority: optional"
    cat "$desc"
  } > "$root/DEBIAN/control"
  [ ! -d "$root/etc" ] || (cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
  [ -s "$root/DEBIAN/conffiles" ] || rm -f "$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs -d '\n' md5sum) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root"/DEBIAN/*
  normalise "$root/DEBIAN"
  local deb=$OUT/${name}_${version}_${ARCH}.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb.tmp" >/dev/null
  mv -f "$deb.tmp" "$deb"
  echo "$deb"
}

$MAKE -s install-warren DESTDIR="$WORK/warren" PREFIX=/usr SYSCONFDIR=/etc \
  ZSHCOMPDIR=/usr/share/zsh/vendor-completions >/dev/null
libs=$(shlibdeps "$WORK/warren/usr/bin/warren")
# What warren runs: newuidmap/newgidmap, squashfuse_ll, fusermount3, tar2sqfs.
package warren "$VERSION" "$WORK/warren" \
  "${libs:+$libs, }uidmap, squashfuse, fuse3, squashfs-tools-ng" "fuse-overlayfs" packaging/deb/warren.description

if ! have_slurm; then
  echo "deb.sh: no slurm/Cargo.toml in this tree: warren-slurm not built (the plugin crate is not part of this version)" >&2
  exit 0
fi
slurm=$(bash packaging/slurm-version.sh)
# The exact Debian version of the Slurm whose headers were used (libslurm-dev).
slurm_deb=${SLURM_DEB_VERSION:-$(dpkg-query -W -f='${Version}' libslurm-dev 2>/dev/null || true)}
[ -n "$slurm_deb" ] || { echo "deb.sh: libslurm-dev is not installed (dpkg-query): install it or set SLURM_DEB_VERSION" >&2; exit 1; }
case $slurm_deb in
  "$slurm"-*|"$slurm") ;;
  *) echo "deb.sh: libslurm-dev $slurm_deb does not match slurm_version.h ($slurm)" >&2; exit 1 ;;
esac
$MAKE -s install-slurm DESTDIR="$WORK/warren-slurm" PREFIX=/usr \
  SLURM_PLUGINDIR="/usr/lib/$MULTIARCH/slurm-wlm" >/dev/null
libs=$(shlibdeps "$WORK/warren-slurm/usr/lib/$MULTIARCH/slurm-wlm/libwarren_spank.so")
package warren-slurm "$VERSION+slurm${slurm%.*}" "$WORK/warren-slurm" \
  "${libs:+$libs, }warren (= $VERSION), slurm-wlm-basic-plugins (= $slurm_deb) | slurmd (= $slurm_deb)" "" \
  packaging/deb/warren-slurm.description
