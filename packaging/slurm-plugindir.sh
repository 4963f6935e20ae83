#!/bin/sh
# Slurm's plugin directory on this machine: the running configuration's PluginDir, else
# the distribution's default (Debian multiarch, RHEL lib64), else nothing.
d=$(timeout 10 scontrol show config 2>/dev/null | sed -n 's/^PluginDir *= *//p' | cut -d: -f1)
if [ -n "$d" ]; then echo "$d"; exit 0; fi
if command -v dpkg-architecture >/dev/null 2>&1; then
  echo "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/slurm-wlm"; exit 0
fi
for d in /usr/lib64/slurm /usr/lib/slurm; do
  [ -d "$d" ] && { echo "$d"; exit 0; }
done
