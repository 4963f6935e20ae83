#!/usr/bin/env bash
# Build warren-VERSION-1.ARCH.rpm and, when the plugin crate is in this tree,
# warren-slurm-VERSION+slurmMAJOR.MINOR-1.ARCH.rpm, from `make install DESTDIR=…` trees
# with rpmbuild (Debian's `rpm` package has it). Called by `make rpm`; OUT=DIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"

command -v rpmbuild >/dev/null || { echo "rpm.sh: rpmbuild not found (Debian: apt install rpm; RHEL: rpm-build)" >&2; exit 1; }
new_work
LIBDIR=$(rpm --eval '%{_libdir}')

# The %files list of a staged tree: every file; only the directories the package owns.
files() { # root owned-dir...
  local root=$1; shift
  for d in "$@"; do echo "%dir $d"; done
  (cd "$root" && find . -type f -o -type l) | sed 's|^\.||' | LC_ALL=C sort |
    sed 's|^/etc/.*|%config(noreplace) &|'
}

build() { # name version stage summary requires description files
  local spec=$WORK/$1.spec
  awk -v name="$1" -v version="$2" -v stage="$3" -v summary="$4" \
      -v req="$5" -v desc="$6" -v files="$7" '
    { gsub("@NAME@", name); gsub("@VERSION@", version); gsub("@STAGE@", stage);
      gsub("@SUMMARY@", summary); gsub("@REQUIRES@", req); gsub("@DESCRIPTION@", desc);
      gsub("@FILES@", files); print }' packaging/rpm/warren.spec.in > "$spec"
  normalise "$3"
  # Reproducible: build time and file times from SOURCE_DATE_EPOCH, a fixed host name.
  rpmbuild -bb --quiet "$spec" \
    --define "_topdir $WORK/rpmbuild" --define "_rpmdir $WORK/out" \
    --define "_buildhost reproducible" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" >/dev/null
  local f
  for f in "$WORK"/out/*.rpm; do mv -f "$f" "$OUT/"; echo "$OUT/$(basename "$f")"; done
}

$MAKE -s install-warren DESTDIR="$WORK/warren" PREFIX=/usr SYSCONFDIR=/etc >/dev/null
build warren "$VERSION" "$WORK/warren" "Rootless OCI containers for HPC batch jobs" \
  "Requires: shadow-utils squashfuse fuse3 squashfs-tools-ng
Recommends: fuse-overlayfs" \
  "warren pulls OCI images, squashes each into one squashfs file in a shared store, and runs rootless per-task containers in a user namespace (newuidmap), with squashfuse and a writable overlay. No daemon, no root. Check a node with: warren doctor" \
  "$(files "$WORK/warren" /etc/warren /usr/share/doc/warren)"

if ! have_slurm; then
  echo "rpm.sh: no slurm/Cargo.toml in this tree: warren-slurm not built (the plugin crate is not part of this version)" >&2
  exit 0
fi
slurm=$(bash packaging/slurm-version.sh)
$MAKE -s install-slurm DESTDIR="$WORK/warren-slurm" PREFIX=/usr SLURM_PLUGINDIR="$LIBDIR/slurm" >/dev/null
# `slurm = X.Y.Z` without a release matches every build of exactly that Slurm release.
build warren-slurm "$VERSION+slurm${slurm%.*}" "$WORK/warren-slurm" "Slurm SPANK plugin for warren containers" \
  "Requires: warren = $VERSION-1
Requires: slurm = $slurm" \
  "pyxis-compatible --container-* options for srun and sbatch, running each step's tasks in rootless warren containers. Built for Slurm $slurm only. Not activated: copy /usr/share/doc/warren-slurm/examples/warren.conf to /etc/slurm/plugstack.conf.d/ on every node once all of them have it." \
  "$(files "$WORK/warren-slurm" /usr/share/doc/warren-slurm /usr/share/doc/warren-slurm/examples)"
