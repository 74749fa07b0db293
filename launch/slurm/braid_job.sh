#!/bin/bash
# braid_job.sh: the body of a Braid Slurm batch job. The sbatch scripts of examples/slurm/
# set their #SBATCH lines and arguments, then `exec` this script (so it keeps the batch
# shell's PID and receives the signals Slurm sends to the batch shell):
#
#   exec "$BRAID_HOME/launch/slurm/braid_job.sh" mpirun|srun [braid-train arguments...]
#
# It starts braid-train on every task of the allocation (--out and --resume auto are
# added), forwards SIGUSR1, survives SIGTERM, and requeues the job when the ranks stopped
# on SIGUSR1 with a checkpoint (braid-train's exit code 42).
#
# Launchers (both verified with Debian's Slurm 22.05 and Open MPI 4.1):
#   mpirun  Open MPI's mpirun reads the allocation (one node: starts the ranks itself;
#           several nodes: starts its daemons through srun). Ranks = SLURM_NTASKS.
#   srun    direct launch, srun --mpi=pmix (Debian's Open MPI has PMIx, not PMI-2).
# Rank, node-local rank and node come from MPI in braid-train, not from SLURM_PROCID
# (under mpirun every rank of the batch step sees SLURM_PROCID=0).
#
# Environment (sbatch passes the submitter's environment to the job):
#   OUT          run directory (default runs/$SLURM_JOB_NAME-$SLURM_JOB_ID: the job id
#                stays the same across requeues, so each restart resumes the same run;
#                a new job starts a new run unless OUT names an existing one)
#   BRAID_TRAIN  braid-train executable (default: on PATH, else $BRAID_HOME/build/bin)
#   BRAID_HOME   Braid's source tree (default: the submit directory)
#   MPIRUN_ARGS, SRUN_ARGS  extra launcher options (split on spaces)
#   BRAID_REQUEUE=0         do not requeue after a SIGUSR1 checkpoint
#   BRAID_MAX_RESTARTS=N    do not requeue once SLURM_RESTART_COUNT reaches N
#   OMPI_MCA_odls_base_sigkill_timeout  5 unless set (see SIGTERM below)
# Logs: Slurm's output file gets this script's lines and the ranks' output; the ranks'
# output of each run also goes to OUT/logs/job-<SLURM_JOB_ID>.restart-<SLURM_RESTART_COUNT>.log.
#
# Signals and exit codes (README, "Launching"):
#   SIGUSR1  "checkpoint and come back": sent by `#SBATCH --signal=B:USR1@T` T seconds
#            before the time limit and at once on preemption (preempt_send_user_signal), or
#            by `scancel -b -s USR1 JOB`. Forwarded to the launcher, which passes it to every
#            rank; the ranks agree, save, exit 42; this script then runs `scontrol requeue`.
#            The requeued job runs again under the same job id and resumes.
#   SIGTERM  "checkpoint and stop": scancel, `scontrol requeue`, the time limit, preemption
#            without --signal. Slurm sends it to every process of the job (ranks included)
#            and SIGKILLs them KillWait seconds later. This shell must outlive the ranks
#            (when it exits, Slurm kills what is left at once) and must not forward it (a
#            second SIGTERM makes mpirun quit without waiting for its ranks). mpirun gives
#            its ranks 2 x odls_base_sigkill_timeout before SIGKILL: keep that under
#            KillWait. The ranks exit 43; Slurm requeues the job itself when it was
#            preempted or `scontrol requeue`d, and a cancelled job stays cancelled.
set -u
LAUNCHER=${1:-}
shift || true
say() { echo "braid_job[job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}]: $*"; }
die() { echo "braid_job: error: $*" >&2; exit 2; }

[ -n "${SLURM_JOB_ID:-}" ] || die "run me inside a Slurm job (sbatch), there is no SLURM_JOB_ID"
BRAID_HOME=${BRAID_HOME:-${SLURM_SUBMIT_DIR:-.}}
if [ -z "${BRAID_TRAIN:-}" ]; then
  BRAID_TRAIN=$(command -v braid-train 2>/dev/null || echo "$BRAID_HOME/build/bin/braid-train")
fi
[ -x "$BRAID_TRAIN" ] || die "braid-train not found at $BRAID_TRAIN (set BRAID_TRAIN or BRAID_HOME)"
OUT=${OUT:-runs/${SLURM_JOB_NAME:-braid}-$SLURM_JOB_ID}
RESTART=${SLURM_RESTART_COUNT:-0}
mkdir -p "$OUT/logs" || die "cannot create $OUT/logs"
LOG=$OUT/logs/job-$SLURM_JOB_ID.restart-$RESTART.log
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-5}

read -r -a mpirun_extra <<<"${MPIRUN_ARGS:-}"
read -r -a srun_extra <<<"${SRUN_ARGS:-}"
args=(--out "$OUT" --resume auto "$@")
case "$LAUNCHER" in
  mpirun) cmd=(mpirun -np "${SLURM_NTASKS:-1}" "${mpirun_extra[@]}" "$BRAID_TRAIN" "${args[@]}") ;;
  srun) cmd=(srun --mpi=pmix -n "${SLURM_NTASKS:-1}" --kill-on-bad-exit=1 "${srun_extra[@]}" "$BRAID_TRAIN" "${args[@]}") ;;
  *) die "first argument: mpirun or srun, not '$LAUNCHER'" ;;
esac

pid=
got_usr1=0
got_term=0
# A USR1 that comes before the launcher exists is passed on as soon as it has started.
trap 'got_usr1=1; say "SIGUSR1: asking the ranks for a checkpoint"; [ -n "$pid" ] && kill -USR1 "$pid" 2>/dev/null' USR1
# Not trap '' TERM: an ignored signal would stay ignored in the ranks.
trap 'got_term=1; say "SIGTERM: the ranks save a checkpoint and stop"' TERM

say "run directory $OUT, log $LOG"
say "${cmd[*]}"
# tee ignores SIGTERM/SIGUSR1 so that it keeps the launcher's output flowing until the
# launcher exits (a dead tee would kill mpirun with SIGPIPE mid-checkpoint).
"${cmd[@]}" > >(trap '' TERM USR1; exec tee -a "$LOG") 2>&1 &
pid=$!
[ "$got_usr1" = 1 ] && kill -USR1 "$pid" 2>/dev/null
while :; do
  wait "$pid"
  rc=$?
  # A trapped signal ends `wait` early with 128 + N while the launcher still runs.
  if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
  break
done
say "$LAUNCHER exited $rc"

# Requeue after a SIGUSR1 checkpoint (42). Also after 138 = 128 + SIGUSR1: a USR1 that
# reaches a rank before braid-train's handler is installed (the first instants of the
# process) kills it; the previous checkpoint is intact, so running again is what was asked.
if { [ "$rc" -eq 42 ] || { [ "$rc" -eq 138 ] && [ "$got_usr1" = 1 ]; }; } && [ "$got_term" = 0 ] &&
   [ "${BRAID_REQUEUE:-1}" = 1 ]; then
  if [ -n "${BRAID_MAX_RESTARTS:-}" ] && [ "$RESTART" -ge "$BRAID_MAX_RESTARTS" ]; then
    say "not requeueing: $RESTART restart(s), BRAID_MAX_RESTARTS=$BRAID_MAX_RESTARTS"
  else
    say "requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue failed (exit $?)"
  fi
fi
exit "$rc"
