#!/usr/bin/env bash
# Build warren's SPANK plugin against this node's Slurm headers and install it (as root):
#   bash scripts/install-plugin.sh [--dev] [--optional] [--no-binary] [KEY=VALUE ...]
#
# - builds libwarren_spank.so (cargo -p warren-slurm; build.rs takes plugin_version from
#   the installed slurm/slurm_version.h, so it matches this Slurm) and, unless
#   --no-binary, the warren binary;
# - installs the .so into Slurm's PluginDir and warren into /usr/local/bin (each written
#   under a temporary name and renamed: running steps keep the old file);
# - writes /etc/slurm/plugstack.conf.d/warren.conf:
#     required PLUGINDIR/libwarren_spank.so [warren=/usr/local/bin/warren] KEY=VALUE ...
#   (KEY=VALUE are the plugstack arguments, all documented in slurm/plugstack.conf).
# --optional writes `optional` instead of `required`: use it while the plugin is not yet
# on every node (slurmd refuses to start when a `required` .so is missing), knowing that
# an optional plugin cannot stop a step whose container failed to start.
# --dev builds the debug profile and points warren= at the debug binary (tests).
# Then check with `warren doctor`. srun, sbatch and every new slurmstepd read
# plugstack.conf when they start, but slurmd decides at its own start whether any plugin
# has a job epilog (where named containers end): restart slurmd after the first install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install-plugin.sh: run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

profile=release kind=required binary=1 args=()
for a in "$@"; do
  case $a in
    --dev) profile=dev ;;
    --optional) kind=optional ;;
    --no-binary) binary=0 ;;
    *=*) args+=("$a") ;;
    *) echo "install-plugin.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

[ -f /usr/include/slurm/slurm_version.h ] || [ -n "${SLURM_INCLUDE_DIR:-}" ] || {
  echo "install-plugin.sh: Slurm headers missing: install libslurm-dev (Debian) or slurm-devel" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-$PWD/target}
if [ $profile = release ]; then
  cargo build --release -q -p warren-slurm
  [ $binary = 1 ] && cargo build --release -q --bin warren
  out=$target/release
else
  cargo build -q -p warren-slurm
  [ $binary = 1 ] && cargo build -q --bin warren
  out=$target/debug
fi

plugindir=$(scontrol show config 2>/dev/null | sed -n 's/^PluginDir *= *//p' | cut -d: -f1)
[ -n "$plugindir" ] || for d in /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib64/slurm /usr/lib/slurm; do
  [ -d "$d" ] && { plugindir=$d; break; }
done
[ -d "$plugindir" ] || { echo "install-plugin.sh: Slurm's PluginDir not found" >&2; exit 1; }

put() { # src dst mode: atomic replace
  install -m "$3" "$1" "$2.warren-new"
  mv -f "$2.warren-new" "$2"
}
so=$plugindir/libwarren_spank.so
put "$out/libwarren_spank.so" "$so" 0755
warren_arg=()
if [ $binary = 1 ]; then
  if [ $profile = release ]; then
    put "$out/warren" /usr/local/bin/warren 0755
    warren_arg=(warren=/usr/local/bin/warren)
  else
    warren_arg=("warren=$out/warren")
  fi
fi
for a in "${args[@]}"; do
  case $a in warren=*) warren_arg=() ;; esac
done

conf_dir=/etc/slurm/plugstack.conf.d
mkdir -p "$conf_dir"
[ -f /etc/slurm/plugstack.conf ] || echo "include $conf_dir/*.conf" > /etc/slurm/plugstack.conf
grep -qs "plugstack.conf.d" /etc/slurm/plugstack.conf ||
  echo "install-plugin.sh: note: /etc/slurm/plugstack.conf does not include $conf_dir/*.conf; add: include $conf_dir/*.conf" >&2
tmp=$(mktemp "$conf_dir/.warren.XXXXXX")
{
  echo "# warren SPANK plugin (scripts/install-plugin.sh); arguments: see warren's slurm/plugstack.conf"
  echo "$kind $so ${warren_arg[*]} ${args[*]}" | tr -s " " | sed "s/ *$//"
} > "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$conf_dir/warren.conf"
echo "install-plugin.sh: installed $so ($profile), $conf_dir/warren.conf:"
sed -n '2p' "$conf_dir/warren.conf"
echo "install-plugin.sh: restart slurmd if this is the first install (job epilog), then check: warren doctor"
