#!/bin/sh
# The Slurm release the plugin is built against, as MAJOR.MINOR.MICRO, from
# SLURM_VERSION_NUMBER in the installed slurm/slurm_version.h (the same header the
# plugin's build.rs reads, so the package's dependency and plugin_version agree).
set -eu
for d in ${SLURM_INCLUDE_DIR:-} /usr/include /usr/local/include; do
  h=$d/slurm/slurm_version.h
  [ -f "$h" ] || continue
  n=$(sed -n 's/^#define[[:space:]]\{1,\}SLURM_VERSION_NUMBER[[:space:]]\{1,\}0x\([0-9a-fA-F]\{6\}\).*/\1/p' "$h")
  [ -n "$n" ] || { echo "slurm-version.sh: no SLURM_VERSION_NUMBER 0xXXXXXX in $h" >&2; exit 1; }
  printf '%d.%02d.%d\n' "0x$(echo "$n" | cut -c1-2)" "0x$(echo "$n" | cut -c3-4)" "0x$(echo "$n" | cut -c5-6)"
  exit 0
done
echo "slurm-version.sh: slurm/slurm_version.h not found: install Slurm's headers (Debian: libslurm-dev, RHEL: slurm-devel) or set SLURM_INCLUDE_DIR" >&2
exit 1
