#!/usr/bin/env bash
# local_slurm.sh: a real one-node Slurm cluster (munged, slurmctld, slurmd from Debian's
# slurm-wlm, run as root as plain background daemons) that lives entirely in one folder,
# so that the test suite can submit real batch jobs: sbatch, mpirun inside the allocation,
# srun direct launch, signals, requeue, preemption.
#
#   bash tests/launch/local_slurm.sh start DIR   # exit 0: up; 77: cannot run here; 1: failed
#   source DIR/env.sh                            # SLURM_CONF for sbatch, srun, squeue, scontrol
#   bash tests/launch/local_slurm.sh stop DIR    # cancel jobs, stop daemons by PID
#
# Nothing under /etc is read or written: DIR holds slurm.conf, a fresh munge key and
# socket, state, spool, logs (DIR/log) and the daemons' PIDs (DIR/pids). Packages come
# from launch/install_deps.sh --with-slurm. Partitions: "main" (default; its jobs are
# requeued when a job of "high" needs their CPUs) and "high".
# Knobs (environment): LOCAL_SLURM_CPUS (8: the node advertises more CPUs than the machine
# has, so 4-task jobs fit on 2 cores), LOCAL_SLURM_KILL_WAIT (10 s from SIGTERM to SIGKILL),
# LOCAL_SLURM_REQUEUE_DELAY (5 s before a requeued job may start again), LOCAL_SLURM_GRACE
# (10 s preemption grace). Ports are chosen free at start.
set -uo pipefail
export PATH=$PATH:/usr/sbin:/sbin

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
CMD=$1
mkdir -p "$2" || exit 1
DIR=$(cd "$2" && pwd)
CONF=$DIR/slurm.conf
say() { echo "[local_slurm] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stops the daemons whose "name:pid" are given: SIGTERM, then SIGKILL after 10 s.
stop_pids() {
  local np pid left
  for np in "$@"; do alive "${np#*:}" && kill -TERM "${np#*:}" 2>/dev/null; done
  for _ in $(seq 1 100); do
    left=
    for np in "$@"; do alive "${np#*:}" && left="$left $np"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  for np in $left; do say "${np%%:*} (pid ${np#*:}) ignored SIGTERM: SIGKILL"; kill -KILL "${np#*:}" 2>/dev/null; done
}

# Processes of this cluster's jobs and slurmstepd: their environment names our slurm.conf
# (the daemons were started with it, jobs inherit it from the submitter). Never this
# script or its ancestors (the test that sourced env.sh).
leftovers() {
  local keep=" $$ " p=$$ pid exe f d
  while [ "${p:-0}" -gt 1 ]; do
    p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
    keep="$keep${p:-0} "
  done
  # One grep over every environment (NUL-separated entries), then a closer look.
  for f in $(grep -lzxF "SLURM_CONF=$CONF" /proc/[0-9]*/environ 2>/dev/null); do
    d=${f%/environ}
    pid=${d#/proc/}
    case "$keep" in *" $pid "*) continue ;; esac
    exe=$(readlink "$d/exe" 2>/dev/null)
    case "${exe##*/}" in slurmstepd*) echo "$pid"; continue ;; esac
    grep -qz '^SLURM_JOB_ID=' "$d/environ" 2>/dev/null && echo "$pid"
  done
}

stop() {
  local MUNGED_PID='' SLURMCTLD_PID='' SLURMD_PID='' kw deadline jobs strays
  # shellcheck disable=SC1091
  [ -f "$DIR/pids" ] && . "$DIR/pids"
  export SLURM_CONF=$CONF
  # 1. Jobs: cancel until none is listed (a job that requeues itself comes back pending).
  if alive "$SLURMCTLD_PID"; then
    kw=$(sed -n 's/^KillWait=//p' "$CONF" 2>/dev/null); kw=${kw:-10}
    deadline=$((SECONDS + kw + 15))
    while jobs=$(squeue -h -o %A 2>/dev/null) && [ -n "$jobs" ] && [ "$SECONDS" -lt "$deadline" ]; do
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null
      sleep 0.5
    done
  fi
  # 2. Daemons, by the PIDs recorded at start.
  local t=$SECONDS
  stop_pids "slurmd:$SLURMD_PID" "slurmctld:$SLURMCTLD_PID"
  stop_pids "munged:$MUNGED_PID"
  say "daemons stopped in $((SECONDS - t)) s"
  # 3. Anything of this cluster that survived (slurmstepd blocks SIGTERM), by PID.
  strays=$(leftovers | tr '\n' ' ')
  if [ -n "${strays// /}" ]; then
    say "killing leftover job processes: $strays"
    # shellcheck disable=SC2086
    kill -KILL $strays 2>/dev/null
  fi
  rm -f "$DIR/pids"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() {
  [ "$(id -u)" = 0 ] || { say "needs root (the daemons run as root, SlurmUser=root)"; return 77; }
  local b
  for b in munged mungekey slurmctld slurmd sbatch srun scontrol; do
    command -v "$b" >/dev/null || { say "$b not found: run launch/install_deps.sh --with-slurm"; return 77; }
  done
  [ -f "$DIR/pids" ] && stop   # a previous instance in this folder
  local cpus=${LOCAL_SLURM_CPUS:-8} kill_wait=${LOCAL_SLURM_KILL_WAIT:-10}
  local delay=${LOCAL_SLURM_REQUEUE_DELAY:-5} grace=${LOCAL_SLURM_GRACE:-10}
  local node ctld_port slurmd_port mem
  node=$(hostname -s)
  ctld_port=$(free_port) && slurmd_port=$(free_port) || return 1
  [ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$(free_port)
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/munge" "$DIR/log"
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/munge" "$DIR/log"
  # munged accepts a socket folder that others may only traverse, and a key only root reads.
  chmod 755 "$DIR"
  chmod 711 "$DIR/munge"
  mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null 2>&1 || return 1
  chmod 400 "$DIR/munge/munge.key"
  cat >"$CONF" <<EOF
# A one-node test cluster made by tests/launch/local_slurm.sh; everything lives in $DIR.
ClusterName=braidtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also the wait before a requeued job may run again (Slurm's default: 120 s).
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$delay
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
# No cgroups (a container has none to give): plain process tracking, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Pending jobs (requeued ones included) are looked at every 1-2 s.
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The node may advertise more CPUs than the machine has.
SlurmdParameters=config_overrides
# Debian's Open MPI can be started by srun only through PMIx.
MpiDefault=pmix
ReturnToService=2
JobRequeue=1
KillWait=$kill_wait
# Finished jobs stay visible to scontrol (there is no accounting database).
MinJobAge=3600
InactiveLimit=0
# A job of partition high requeues jobs of partition main; a job with --signal gets that
# signal at once, others SIGTERM after GraceTime.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=${mem:-1024} State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=$grace
PartitionName=high Nodes=$node Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$CONF
export PATH=\$PATH:/usr/sbin:/sbin
# Jobs run as the submitter; as root Open MPI's mpirun needs these.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
EOF
  export SLURM_CONF=$CONF
  : >"$DIR/pids"
  failed() {
    say "$1"
    local f
    for f in "$DIR/munge/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
      [ -f "$f" ] && { echo "--- $f" >&2; tail -15 "$f" >&2; }
    done
    stop
    return 1
  }
  # wait_pid NAME PIDFILE: records NAME_PID once the daemon has written a live PID.
  wait_pid() {
    local pid
    for _ in $(seq 1 100); do
      pid=$(cat "$2" 2>/dev/null)
      if alive "$pid"; then echo "${1}_PID=$pid" >>"$DIR/pids"; return 0; fi
      sleep 0.1
    done
    return 1
  }
  munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" && wait_pid MUNGED "$DIR/munge/munged.pid" ||
    { failed "munged did not start"; return 1; }
  slurmctld -f "$CONF" -i && wait_pid SLURMCTLD "$DIR/run/slurmctld.pid" ||
    { failed "slurmctld did not start"; return 1; }
  slurmd -f "$CONF" -N "$node" && wait_pid SLURMD "$DIR/run/slurmd.pid" ||
    { failed "slurmd did not start"; return 1; }
  local state=
  for _ in $(seq 1 300); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -1)
    if [ "$state" = idle ]; then
      # Slurm logs a bad setting and carries on with its default (cred_expire < 5, say).
      grep -h "invalid" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 &&
        { failed "slurm.conf has an invalid setting"; return 1; }
      say "up: node $node, $cpus CPUs, ports $ctld_port/$slurmd_port, $DIR"
      return 0
    fi
    sleep 0.2
  done
  failed "node $node is '${state:-unknown}' after 60 s, not idle"
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
