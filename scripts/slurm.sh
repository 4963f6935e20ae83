#!/usr/bin/env bash
# A three-node Slurm test cluster on this one machine (Debian's slurm-wlm 22.05), as root:
#   slurm.sh start | stop | restart | status
#
# start (idempotent) writes the configuration, creates the munge key if missing and
# starts, each in its own session and without systemd:
#   munged          as user munge, foreground (-F)
#   slurmctld -D -i on 127.0.0.1:6817
#   slurmd -D -N n1|n2|n3  on 127.0.0.1:6818|6819|6820, each with its own config dir
#                   /etc/slurm-nX (same slurm.conf; its own mpi.conf so PMIx client
#                   tmp dirs do not collide between the simulated nodes)
# then waits (bounded) until `sinfo` shows the three nodes idle; on failure it prints
# the tail of the relevant log and exits non-zero.
# stop cancels every job, waits for the steps to end, then ends the daemons it started
# (by the pids it recorded) and waits for them. status prints what is running.
# Daemon stdout/stderr and pid files live in ${WARREN_TEST_STATE:-/var/tmp/warren-test}/slurm;
# Slurm's own per-node files use %n (spool, pid, log) as on a real multi-node cluster.
# The facts behind this set-up are in /work/shared/LAB.md ("Several Slurm nodes on one
# machine").
set -euo pipefail
STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}/slurm
NODES=(n1 n2 n3)
CTLD_PORT=6817
FIRST_NODE_PORT=6818
CONF=/etc/slurm/slurm.conf
WAIT_SECS=${WARREN_SLURM_WAIT:-60}

[ "$(id -u)" = 0 ] || { echo "slurm.sh: run as root" >&2; exit 1; }
for b in munged slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null || { echo "slurm.sh: $b not found (run scripts/setup-host.sh)" >&2; exit 1; }
done
mkdir -p "$STATE"
# Daemons (and every slurmstepd they start) must not keep the caller's directory busy.
cd /

alive() { # name: its recorded pid is running
  local pid
  pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

spawn() { # name cmd...: run in its own session, remember the pid (setsid execs: no fork,
  # because a background job of a non-interactive shell is not a process-group leader)
  local name=$1; shift
  setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

write_config() {
  local tmp ports=$FIRST_NODE_PORT
  tmp=$(mktemp "$CONF.XXXXXX")
  {
    echo "# Written by warren's scripts/slurm.sh: three simulated nodes on 127.0.0.1."
    echo "ClusterName=warren"
    echo "SlurmctldHost=$(hostname -s)(127.0.0.1)"
    echo "SlurmctldPort=$CTLD_PORT"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    # Without it slurmctld binds 0.0.0.0 (LAB.md).
    echo "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
    echo "StateSaveLocation=/var/lib/slurm/slurmctld"
    echo "SlurmctldPidFile=/run/slurm/slurmctld.pid"
    echo "SlurmctldLogFile=/var/log/slurm/slurmctld.log"
    echo "SlurmdSpoolDir=/var/lib/slurm/slurmd-%n"
    echo "SlurmdPidFile=/run/slurm/slurmd-%n.pid"
    echo "SlurmdLogFile=/var/log/slurm/slurmd-%n.log"
    # More CPUs than the VM has, else the nodes drain.
    echo "SlurmdParameters=config_overrides"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "MpiDefault=none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "ReturnToService=2"
    echo "SlurmdTimeout=60"
    echo "KillWait=5"
    echo "InactiveLimit=0"
    echo "MinJobAge=30"
    # Two stand-in GPUs per node (character devices with /dev/null's numbers, shared by
    # the simulated nodes) so that GPU allocation and per-task binding can be tested.
    echo "GresTypes=gpu"
    for n in "${NODES[@]}"; do
      echo "NodeName=$n NodeAddr=127.0.0.1 Port=$ports CPUs=16 RealMemory=1000 Gres=gpu:2 State=UNKNOWN"
      ports=$((ports + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
  } >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$CONF"
  for i in 0 1; do
    [ -c /dev/warren-gpu$i ] || mknod -m 0666 /dev/warren-gpu$i c 1 3
  done
  echo "Name=gpu File=/dev/warren-gpu[0-1]" >/etc/slurm/gres.conf
  # Debian's plugstack.conf only includes plugstack.conf.d/*.conf; keep that shape.
  [ -f /etc/slurm/plugstack.conf ] || echo "include /etc/slurm/plugstack.conf.d/*.conf" >/etc/slurm/plugstack.conf
  mkdir -p /etc/slurm/plugstack.conf.d
  for n in "${NODES[@]}"; do
    # One config dir per node: slurmd finds plugstack.conf and mpi.conf beside the
    # slurm.conf it was given, so each node gets its own PMIx client tmp dir.
    local d=/etc/slurm-$n
    mkdir -p "$d" "/tmp/pmix-$n"
    chmod 1777 "/tmp/pmix-$n"
    cp -f "$CONF" "$d/slurm.conf.tmp" && mv -f "$d/slurm.conf.tmp" "$d/slurm.conf"
    echo "include /etc/slurm/plugstack.conf.d/*.conf" >"$d/plugstack.conf"
    echo "PMIxCliTmpDirBase=/tmp/pmix-$n" >"$d/mpi.conf"
    cp -f /etc/slurm/gres.conf "$d/gres.conf"
    mkdir -p "/var/lib/slurm/slurmd-$n"
  done
  mkdir -p /run/slurm /var/log/slurm /var/lib/slurm/slurmctld
}

start_munge() {
  alive munged && return 0
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  spawn munged setpriv --reuid munge --regid munge --init-groups munged -F
  for _ in $(seq 50); do
    [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "slurm.sh: munged did not start:" >&2
  tail -n 20 "$STATE/munged.log" >&2 || true
  return 1
}

node_states() { # "n1 idle" lines
  sinfo -h -N -o '%N %t' 2>/dev/null | sort -u
}

registered() { # node: its slurmd registered since we started it (slurmctld's saved
  # state alone can show a node idle before the new slurmd has spoken)
  local since t
  since=$(stat -c %Y "$STATE/slurmd-$1.pid" 2>/dev/null) || return 1
  t=$(scontrol show node "$1" -o 2>/dev/null | tr ' ' '\n' | sed -n 's/^SlurmdStartTime=//p')
  [ -n "$t" ] && [ "$t" != None ] || return 1
  [ "$(date -d "$t" +%s 2>/dev/null || echo 0)" -ge $((since - 1)) ]
}

wait_idle() {
  local deadline=$((SECONDS + WAIT_SECS)) idle
  while [ $SECONDS -lt $deadline ]; do
    idle=$(node_states | awk '$2 == "idle" || $2 == "mix" || $2 == "alloc" {n++} END {print n+0}')
    if [ "$idle" -ge ${#NODES[@]} ]; then
      local n ok=1
      for n in "${NODES[@]}"; do registered "$n" || ok=0; done
      [ $ok = 1 ] && return 0
    fi
    for d in slurmctld "${NODES[@]/#/slurmd-}"; do
      alive "$d" || { echo "slurm.sh: $d exited during start-up:" >&2; fail_tail "$d"; return 1; }
    done
    sleep 0.5
  done
  echo "slurm.sh: nodes not idle after ${WAIT_SECS}s: $(node_states | tr '\n' ' ')" >&2
  fail_tail slurmctld
  for n in "${NODES[@]}"; do fail_tail "slurmd-$n"; done
  return 1
}

fail_tail() { # daemon name: its stderr and Slurm log tails
  local log
  case $1 in
    slurmctld) log=/var/log/slurm/slurmctld.log ;;
    slurmd-*) log=/var/log/slurm/$1.log ;;
    *) log=/dev/null ;;
  esac
  echo "--- $1 ($STATE/$1.log, $log)" >&2
  tail -n 15 "$STATE/$1.log" "$log" >&2 2>/dev/null || true
}

# The configuration the running daemons were started with: a changed one (another
# checkout's slurm.sh, an older version) means they must restart to read it.
config_sum() { cat "$CONF" /etc/slurm/gres.conf 2>/dev/null | sha256sum | cut -d' ' -f1; }

start() {
  write_config
  if alive slurmctld && [ "$(cat "$STATE/config.sum" 2>/dev/null)" != "$(config_sum)" ]; then
    echo "slurm.sh: the configuration changed: restarting the daemons"
    stop
  fi
  config_sum >"$STATE/config.sum"
  start_munge
  if ! alive slurmctld; then
    spawn slurmctld slurmctld -D -i -f "$CONF"
  fi
  for n in "${NODES[@]}"; do
    alive "slurmd-$n" || spawn "slurmd-$n" slurmd -D -N "$n" -f "/etc/slurm-$n/slurm.conf"
  done
  wait_idle
  echo "slurm.sh: up: $(node_states | tr '\n' ' ')"
}

stop_pid() { # name: TERM its recorded pid, wait up to 10 s, then KILL
  local pid
  pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$1.pid"
}

stop() {
  if alive slurmctld; then
    # End every job first so no slurmstepd (and nothing it started) outlives the cluster.
    scancel --quiet --partition=debug 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  for n in "${NODES[@]}"; do stop_pid "slurmd-$n"; done
  stop_pid slurmctld
  stop_pid munged
  echo "slurm.sh: stopped"
}

status() {
  local d
  for d in munged slurmctld "${NODES[@]/#/slurmd-}"; do
    if alive "$d"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"; else echo "$d: stopped"; fi
  done
  alive slurmctld && node_states
  return 0
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  *) echo "usage: slurm.sh start|stop|restart|status" >&2; exit 2 ;;
esac
