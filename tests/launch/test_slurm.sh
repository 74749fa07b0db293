#!/usr/bin/env bash
# The example launch scripts under a real one-node Slurm (tests/launch/local_slurm.sh):
#   0. reference: examples/mpirun/single_node.sh, DP2 x 8 microbatches, uninterrupted;
#   1. examples/slurm/single_node.sbatch (mpirun in the allocation), preempted by
#      `scontrol requeue`: SIGTERM, the ranks save and exit 43, Slurm requeues the job, it
#      resumes under the same job id (restart 1) and finishes;
#   2. examples/slurm/multi_node.sbatch (srun --mpi=pmix, on this one node), preempted by a
#      job of partition high: SIGUSR1 (--signal=B:USR1), the ranks save and exit 42, the
#      script requeues the job, the high job runs, the job resumes and finishes;
#   3. scancel: SIGTERM, checkpoint, the job stays cancelled.
# Runs 1 and 2 must give the reference's losses at every step, bit for bit (same layout on
# CPU), so also its final loss. Run directories and logs are named from the job id and
# restart count. Needs root; exits 77 (skip) when the cluster cannot run here, unless
# BRAID_REQUIRE_SLURM=1 (CI), where that is a failure.
source "$(dirname "$0")/cli_common.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T0=$SECONDS
skip() {
  if [ "${BRAID_REQUIRE_SLURM:-0}" = 1 ]; then echo "FAIL (BRAID_REQUIRE_SLURM=1): $*"; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ -x "$BIN/braid-train" ] || { echo "FAIL: no $BIN/braid-train"; exit 1; }

SDIR=$(mktemp -d /tmp/braid_slurm.XXXXXX)
cleanup() {
  local t=$SECONDS
  if [ "$failures" -ne 0 ] && [ -f "$SDIR/log/slurmctld.log" ]; then
    echo "--- tail of slurmctld.log"; tail -20 "$SDIR/log/slurmctld.log"
  fi
  bash "$SRC/tests/launch/local_slurm.sh" stop "$SDIR"
  echo "cluster stopped in $((SECONDS - t)) s"
  rm -rf "$SDIR" "$WORK"
}
# The requeue delay is Slurm's cred_expire: 5 s, the least Slurm accepts.
LOCAL_SLURM_REQUEUE_DELAY=5 LOCAL_SLURM_KILL_WAIT=15 bash "$SRC/tests/launch/local_slurm.sh" start "$SDIR"
rc=$?
if [ "$rc" -ne 0 ]; then
  bash "$SRC/tests/launch/local_slurm.sh" stop "$SDIR" 2>/dev/null; rm -rf "$SDIR"
  [ "$rc" -eq 77 ] && skip "the local Slurm cluster cannot run here (see above)"
  echo "FAIL: the local Slurm cluster did not start"; exit 1
fi
trap cleanup EXIT
# shellcheck disable=SC1091
source "$SDIR/env.sh"
echo "local Slurm up after $((SECONDS - T0)) s"

DATA="$WORK/data"; make_text_dataset "$DATA"
cat >"$WORK/tiny.ini" <<INI
layers = 2
heads = 2
width = 16
seq-len = 16
micro-batch = 2
grad-accum = 8
lr = 3e-3
steps = 1500
log-every = 100
keep-last = 2
INI
N=1500  # steps of every run (long enough that a signal lands mid-run on a fast machine)
K=100   # a run is interrupted once it has logged this many steps
# What the jobs inherit (sbatch exports the submitter's environment). The node advertises
# 8 CPUs on fewer cores, so Open MPI does not know it is oversubscribed and its ranks would
# busy-poll; yield_when_idle makes them yield as under --oversubscribe. mpirun's SIGTERM
# budget (2 x 2 s) still covers this model's checkpoint.
export BRAID_HOME=$SRC BRAID_TRAIN=$BIN/braid-train DATA CONFIG=$WORK/tiny.ini TP=1 PP=1
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_odls_base_sigkill_timeout=2

field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_state() {  # JOB SECONDS STATE...: until the job is in one of the states; prints it
  local job=$1 end=$((SECONDS + $2)) st; shift 2
  while :; do
    st=$(field "$job" JobState)
    for s in "$@"; do [ "$st" = "$s" ] && { echo "$st"; return 0; }; done
    [ "$SECONDS" -ge "$end" ] && { echo "${st:-unknown}"; return 1; }
    sleep 0.3
  done
}
wait_steps() {  # RUNDIR N SECONDS: until metrics.jsonl has N lines
  local end=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$end" ]; do
    [ "$(wc -l <"$1/metrics.jsonl" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# same_losses RUNDIR: steps 1..N, and every loss equal to the reference's (as JSON text:
# nlohmann::json prints doubles with round-trip precision, so equal text = equal bits).
same_losses() {
  python3 - "$WORK/ref/metrics.jsonl" "$1/metrics.jsonl" "$N" <<'PY'
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1])]
run = [json.loads(l) for l in open(sys.argv[2])]
n = int(sys.argv[3])
steps = [r["step"] for r in run]
assert steps == list(range(1, n + 1)), f"steps not 1..{n}: {len(steps)} lines, last {steps[-3:]}"
bad = [r["step"] for a, r in zip(ref, run) if json.dumps(a["loss"]) != json.dumps(r["loss"])]
assert not bad, f"losses differ from the uninterrupted run at steps {bad[:5]}"
print(f"final loss {run[-1]['loss']!r} = reference")
PY
}
report() {  # JOB RUNDIR
  echo "    job $1: $(scontrol show job "$1" | grep -o -E '(JobState|Restarts|ExitCode)=[^ ]*' | tr '\n' ' ')"
  for f in "$WORK"/braid-"$1".out "$2"/logs/*; do
    [ -f "$f" ] && { echo "    --- $f"; grep -v '^step ' "$f" | tail -12 | sed 's/^/    | /'; }
  done
}
cd "$WORK" || exit 1   # sbatch's submit directory: runs/ and braid-JOB.out land here

# ---- 0. reference ---------------------------------------------------------------------
t=$SECONDS
if NP=2 OUT=$WORK/ref timeout 300 "$SRC/examples/mpirun/single_node.sh" >"$WORK/ref.log" 2>&1 &&
   [ "$(wc -l <"$WORK/ref/metrics.jsonl")" -eq "$N" ]; then
  pass "0. examples/mpirun/single_node.sh, DP2 x 8 microbatches: $N steps uninterrupted ($((SECONDS - t)) s)"
else
  fail "0. reference run"; tail -20 "$WORK/ref.log"; exit 1
fi

# ---- 1. single_node.sbatch + mpirun, scontrol requeue (SIGTERM) ----------------------------
t=$SECONDS
j1=$(sbatch --parsable -n 2 "$SRC/examples/slurm/single_node.sbatch")
R1=$WORK/runs/braid-$j1
if ! wait_steps "$R1" "$K" 120; then
  fail "1. job $j1 did not reach step $K"; report "$j1" "$R1"
else
  scontrol requeue "$j1"
  st=$(wait_state "$j1" 240 COMPLETED FAILED CANCELLED)
  restarts=$(field "$j1" Restarts)
  log1=$R1/logs/job-$j1.restart-1.log
  # mpirun stops passing on its ranks' output once it gets SIGTERM itself, so the ranks'
  # stop message is not in the log; the resume message of restart 1 names the checkpoint.
  k=$(sed -n 's/^resumed from .*step_[0-9]* at step \([0-9]*\) .*/\1/p' "$log1" 2>/dev/null)
  if [ "$st" = COMPLETED ] && [ "$restarts" = 1 ] && [ "$(field "$j1" ExitCode)" = 0:0 ] &&
     [ -f "$R1/logs/job-$j1.restart-0.log" ] && grep -q "slurm job $j1 restart 1" "$log1" &&
     [ -n "$k" ] && [ "$k" -ge "$K" ] && [ "$k" -lt "$N" ] && msg=$(same_losses "$R1" 2>&1); then
    pass "1. single_node.sbatch (mpirun): scontrol requeue, checkpoint of step $k, restart 1 resumed from it, $msg ($((SECONDS - t)) s)"
  else
    fail "1. single_node.sbatch + scontrol requeue: state $st, restarts $restarts, resumed at step ${k:-?}: ${msg:-}"
    report "$j1" "$R1"
  fi
fi

# ---- 2. multi_node.sbatch + srun, preempted by a job of partition high (SIGUSR1) ---------
t=$SECONDS
j2=$(sbatch --parsable -p main -N 1 --ntasks-per-node=2 "$SRC/examples/slurm/multi_node.sbatch")
R2=$WORK/runs/braid-$j2
if ! wait_steps "$R2" "$K" 120; then
  fail "2. job $j2 did not reach step $K"; report "$j2" "$R2"
else
  jh=$(sbatch --parsable -p high -n 8 -o "$WORK/high.out" --wrap 'echo high job ran')
  st=$(wait_state "$j2" 240 COMPLETED FAILED CANCELLED)
  sth=$(wait_state "$jh" 10 COMPLETED FAILED CANCELLED)
  restarts=$(field "$j2" Restarts)
  log0=$R2/logs/job-$j2.restart-0.log log1=$R2/logs/job-$j2.restart-1.log
  k=$(sed -n 's/^stopping on signal after step \([0-9]*\) (requeue)$/\1/p' "$log0" 2>/dev/null)
  how=$(grep -o 'partial step abandoned after microbatch [0-9]* of 8' "$log0" 2>/dev/null || echo "at the end of a step")
  hend=$(date -d "$(field "$jh" EndTime)" +%s 2>/dev/null || echo 9999999999)
  rstart=$(date -d "$(field "$j2" StartTime)" +%s 2>/dev/null || echo 0)
  if [ "$st" = COMPLETED ] && [ "$sth" = COMPLETED ] && [ "$restarts" = 1 ] && [ "$hend" -le "$rstart" ] &&
     grep -q "SIGUSR1: asking the ranks for a checkpoint" "$WORK/braid-$j2.out" &&
     grep -q "requeueing job $j2" "$WORK/braid-$j2.out" && grep -q "exit 42: checkpoint of step $k saved" "$log0" &&
     grep -q "srun --mpi=pmix" "$WORK/braid-$j2.out" &&
     grep -q "resumed from .*step_$(printf %08d "${k:-0}") at step $k " "$log1" &&
     msg=$(same_losses "$R2" 2>&1); then
    pass "2. multi_node.sbatch (srun): preempted by a high job at step $k ($how), exit 42, requeued itself, high job ran first, restart 1 resumed, $msg ($((SECONDS - t)) s)"
  else
    fail "2. multi_node.sbatch + preemption: state $st (high $sth), restarts $restarts, stopped after step ${k:-?}: ${msg:-}"
    report "$j2" "$R2"
  fi
fi

# ---- 3. scancel: SIGTERM, checkpoint, no requeue -------------------------------------------
t=$SECONDS
j3=$(sbatch --parsable -n 2 "$SRC/examples/slurm/single_node.sbatch")
R3=$WORK/runs/braid-$j3
if ! wait_steps "$R3" "$K" 120; then
  fail "3. job $j3 did not reach step $K"; report "$j3" "$R3"
else
  scancel "$j3"
  st=$(wait_state "$j3" 60 CANCELLED COMPLETED FAILED)
  sleep 3   # a job wrongly requeued would be listed as pending by now
  n=$(wc -l <"$R3/metrics.jsonl")
  if [ "$st" = CANCELLED ] && [ "$(field "$j3" JobState)" = CANCELLED ] && [ "$(field "$j3" Restarts)" = 0 ] &&
     [ "$(cat "$R3/checkpoints/latest" 2>/dev/null)" = "$(printf step_%08d "$n")" ] &&
     ! grep -q requeueing "$WORK/braid-$j3.out"; then
    pass "3. scancel: checkpoint of step $n (the last logged step), job stays CANCELLED ($((SECONDS - t)) s)"
  else
    fail "3. scancel: state $st, $n steps logged, latest $(cat "$R3/checkpoints/latest" 2>/dev/null)"; report "$j3" "$R3"
  fi
fi

echo "$failures failure(s); $((SECONDS - T0)) s"
[ "$failures" -eq 0 ]
