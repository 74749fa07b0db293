#!/usr/bin/env bash
# launch/slurm/braid.sbatch under a real one-node Slurm (../shared/slurm/start-local-slurm.sh):
#   1. sbatch -n 4 + mpirun, TP2 x PP2: runs steps 1..400 of a 2000-step run (--stop-after);
#   2. preemption: a long run in partition main, a job in partition high preempts it; the
#      run gets SIGUSR1 (--signal=B:USR1), checkpoints, requeues itself, the high job runs,
#      the run resumes from its checkpoint and finishes with metrics steps 1..N;
#   3. srun --mpi=pmix direct launch, DP2 x TP2, resumes run 1 (reshard on resume), gets
#      `scancel -b -s USR1`, checkpoints, is requeued, resumes again and finishes;
#   4. SIGUSR1 during start-up (before the ranks can catch it): the job is not lost;
#   5. scancel (SIGTERM): the ranks checkpoint, the job stays cancelled (no requeue).
# Needs root (the cluster's daemons run as root); exits 77 (skip) if the cluster cannot start.
# Registered only when BRAID_TEST_SLURM=1 at configure time. Knobs: BRAID_LOCAL_SLURM (folder
# of start-local-slurm.sh, default ../shared/slurm beside the source tree).
source "$(dirname "$0")/cli_common.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
TEMPLATE=$SRC/launch/slurm/braid.sbatch
SLURM_SCRIPTS=${BRAID_LOCAL_SLURM:-$SRC/../shared/slurm}
T_START=$SECONDS

[ "$(id -u)" = 0 ] || { echo "SKIP: the local Slurm cluster needs root"; exit 77; }
[ -f "$SLURM_SCRIPTS/start-local-slurm.sh" ] || { echo "SKIP: no $SLURM_SCRIPTS/start-local-slurm.sh (set BRAID_LOCAL_SLURM)"; exit 77; }
[ -x "$BIN/braid-train" ] || { echo "FAIL: no $BIN/braid-train"; exit 1; }

# The cluster lives in its own folder, on free ports (another local cluster may be up).
SDIR=$(mktemp -d /tmp/braid_slurm.XXXXXX)
cleanup() {
  if [ -f "$SDIR/pids" ]; then
    if [ "$failures" -ne 0 ] && [ -f "$SDIR/log/slurmctld.log" ]; then
      echo "--- tail of slurmctld.log"; tail -15 "$SDIR/log/slurmctld.log"
    fi
    local t=$SECONDS
    bash "$SLURM_SCRIPTS/stop-local-slurm.sh" "$SDIR" --purge >"$WORK/stop.log" 2>&1 ||
      { echo "stop-local-slurm.sh failed:"; cat "$WORK/stop.log"; }
    echo "cluster stopped in $((SECONDS - t)) s"
  fi
  rm -rf "$SDIR" "$WORK"
}
trap cleanup EXIT
read -r CTLD_PORT SLURMD_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
t=$SECONDS
if ! LOCAL_SLURM_CTLD_PORT=$CTLD_PORT LOCAL_SLURMD_PORT=$SLURMD_PORT \
     bash "$SLURM_SCRIPTS/start-local-slurm.sh" "$SDIR" >"$WORK/start.log" 2>&1; then
  echo "SKIP: the local Slurm cluster did not start:"; sed 's/^/    /' "$WORK/start.log" | tail -30
  bash "$SLURM_SCRIPTS/stop-local-slurm.sh" "$SDIR" --purge >/dev/null 2>&1
  rm -f "$SDIR/pids"
  exit 77
fi
# shellcheck disable=SC1091
source "$SDIR/env.sh"
export PATH=$PATH:/usr/sbin:/sbin
echo "local Slurm up in $((SECONDS - t)) s ($SDIR, ports $CTLD_PORT/$SLURMD_PORT)"

DATA="$WORK/data"; make_text_dataset "$DATA"
# What the jobs inherit. The node advertises 8 CPUs on 2 real cores: Open MPI then does not
# know it is oversubscribed and its ranks busy-poll (about 50x slower); yield_when_idle
# makes them yield as under mpirun --oversubscribe.
export DATA BRAID_TRAIN="$BIN/braid-train" OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1
MODEL=(--layers 2 --heads 4 --width 32 --seq-len 32 --steps 2000 --log-every 250)

# ---- helpers ---------------------------------------------------------------------------
field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# wait_done JOB SECONDS: until the job is in a final state; prints it.
wait_done() {
  local end=$((SECONDS + $2)) st=
  while [ "$SECONDS" -lt "$end" ]; do
    st=$(field "$1" JobState)
    case "$st" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) echo "$st"; return 0 ;; esac
    sleep 0.5
  done
  echo "still-$st-after-$2s"; return 1
}
# wait_restarts JOB N SECONDS
wait_restarts() {
  local end=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$end" ]; do [ "$(field "$1" Restarts)" -ge "$2" ] 2>/dev/null && return 0; sleep 0.5; done
  return 1
}
# wait_steps OUT N SECONDS: until metrics.jsonl has N lines.
wait_steps() {
  local end=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$end" ]; do
    [ -f "$1/metrics.jsonl" ] && [ "$(wc -l <"$1/metrics.jsonl")" -ge "$2" ] && return 0; sleep 0.1
  done
  return 1
}
# check_metrics OUT N [noval]: steps exactly 1..N (no gap, no duplicate), loss falls,
# val_loss at N (the run's last step; not after --stop-after).
check_metrics() {
  python3 - "$1/metrics.jsonl" "$2" "${3:-val}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
steps = [r["step"] for r in rows]
if steps != list(range(1, n + 1)):
    dup = sorted({s for s in steps if steps.count(s) > 1})
    sys.exit(f"steps not 1..{n}: {len(steps)} lines, first {steps[:3]}, last {steps[-3:]}, duplicated {dup[:5]}")
assert rows[-1]["loss"] < rows[0]["loss"] - 2, (rows[0]["loss"], rows[-1]["loss"])
assert sys.argv[3] != "val" or "val_loss" in rows[-1], "no val_loss at the last step"
PY
}
job_report() { echo "    job $1: $(scontrol show job "$1" | grep -o -E '(JobState|Restarts|ExitCode|RunTime)=[^ ]*' | tr '\n' ' ')"; }
show_log() { sed 's/^/    | /' "$1" | grep -v '| step ' | tail -"${2:-25}"; }

# ---- 1. sbatch + mpirun, TP2 x PP2 ---------------------------------------------------------
t=$SECONDS
R1="$WORK/run1"
j1=$(OUT=$R1 TP=2 PP=2 sbatch --parsable -n 4 -o "$WORK/j1.out" "$TEMPLATE" "${MODEL[@]}" --stop-after 400)
st=$(wait_done "$j1" 120)
if [ "$st" = COMPLETED ] && [ "$(field "$j1" ExitCode)" = 0:0 ] &&
   grep -q "layout: world 4 = dp 1 x pp 2 x tp 2" "$WORK/j1.out" &&
   [ "$(cat "$R1/checkpoints/latest" 2>/dev/null)" = step_00000400 ] &&
   [ -f "$R1/checkpoints/step_00000400/manifest.json" ] && msg=$(check_metrics "$R1" 400 noval 2>&1 | tail -1) &&
   [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$R1/checkpoints/step_00000400/manifest.json")" = 400 ]; then
  pass "1. sbatch -n 4 + mpirun, TP2 x PP2: COMPLETED, checkpoint step_00000400, metrics steps 1..400 ($((SECONDS - t)) s)"
else
  fail "1. sbatch + mpirun: state $st, latest $(cat "$R1/checkpoints/latest" 2>/dev/null) ${msg:-}"; job_report "$j1"; show_log "$WORK/j1.out"
fi

# ---- 2. preemption by a job in partition high: USR1, checkpoint, requeue, resume ---------------
t=$SECONDS
R2="$WORK/run2"
j2=$(OUT=$R2 TP=2 PP=2 sbatch --parsable -p main -n 4 -o "$WORK/j2.out" "$TEMPLATE" "${MODEL[@]}")
if ! wait_steps "$R2" 100 120; then
  fail "2. the run in main did not reach step 100"; job_report "$j2"; show_log "$WORK/j2.out"
else
  jh=$(sbatch --parsable -p high -n 8 -o "$WORK/jh.out" --wrap 'echo high-priority job ran; sleep 2')
  wait_restarts "$j2" 1 60 || { fail "2. the preempted job was not requeued within 60 s"; job_report "$j2"; }
  st=$(wait_done "$j2" 240); sth=$(wait_done "$jh" 30)
  k=$(sed -n 's/^stopping on signal after step \([0-9]*\)$/\1/p' "$WORK/j2.out" | head -1)
  ck=$(printf 'step_%08d' "${k:-0}")
  hend=$(date -d "$(field "$jh" EndTime)" +%s 2>/dev/null || echo 0)
  rstart=$(date -d "$(field "$j2" StartTime)" +%s 2>/dev/null || echo 0)
  if [ "$st" = COMPLETED ] && [ "$sth" = COMPLETED ] && [ "$(field "$j2" Restarts)" = 1 ] &&
     grep -q "SIGUSR1: asking the ranks to checkpoint" "$WORK/j2.out" && ! grep -q SIGTERM "$WORK/j2.out" &&
     [ -n "$k" ] && [ "$k" -ge 100 ] && [ "$k" -lt 2000 ] && grep -q "saved checkpoint .*/$ck$" "$WORK/j2.out" &&
     grep -q "requeueing job $j2" "$WORK/j2.out" && grep -q "resumed from .*/$ck at step $k " "$WORK/j2.out" &&
     [ "$hend" -le "$rstart" ] && [ "$(cat "$R2/checkpoints/latest")" = step_00002000 ] &&
     msg=$(check_metrics "$R2" 2000 2>&1 | tail -1); then
    pass "2. preempted by a high job: USR1 checkpoint $ck, requeued (Restarts=1), high job ran first, resumed from $ck, metrics steps 1..2000 ($((SECONDS - t)) s)"
  else
    fail "2. preemption/requeue: state $st (high: $sth), stopped after step ${k:-?}, high ended $hend, restart began $rstart ${msg:-}"
    job_report "$j2"; job_report "$jh"; show_log "$WORK/j2.out" 40
  fi
fi

# ---- 3. srun --mpi=pmix direct launch, DP2 x TP2, resumes run 1; scancel -b -s USR1 --------
t=$SECONDS
j3=$(LAUNCHER=srun OUT=$R1 TP=2 PP=1 sbatch --parsable -n 4 -o "$WORK/j3.out" "$TEMPLATE" "${MODEL[@]}")
if ! wait_steps "$R1" 500 120; then
  fail "3. the srun run did not reach step 500"; job_report "$j3"; show_log "$WORK/j3.out"
else
  scancel -b -s USR1 "$j3"
  wait_restarts "$j3" 1 60 || { fail "3. not requeued after scancel -b -s USR1 within 60 s"; job_report "$j3"; }
  st=$(wait_done "$j3" 240)
  k=$(sed -n 's/^stopping on signal after step \([0-9]*\)$/\1/p' "$WORK/j3.out" | head -1)
  ck=$(printf 'step_%08d' "${k:-0}")
  if [ "$st" = COMPLETED ] && [ "$(field "$j3" Restarts)" = 1 ] && [ "$(field "$j3" ExitCode)" = 0:0 ] &&
     grep -q "srun: srun --mpi=pmix -n 4" "$WORK/j3.out" &&
     grep -q "resumed from .*/step_00000400 at step 400 " "$WORK/j3.out" &&
     [ "$(grep -c "layout: world 4 = dp 2 x pp 1 x tp 2" "$WORK/j3.out")" = 2 ] &&
     [ -n "$k" ] && [ "$k" -ge 500 ] && [ "$k" -lt 2000 ] && grep -q "resumed from .*/$ck at step $k " "$WORK/j3.out" &&
     [ "$(cat "$R1/checkpoints/latest")" = step_00002000 ] && msg=$(check_metrics "$R1" 2000 2>&1 | tail -1) &&
     python3 - "$R1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# Resharded weights, not a fresh start: the loss right after the resume is near step 400's.
assert rows[400]["loss"] < rows[0]["loss"] - 2 and abs(rows[400]["loss"] - rows[399]["loss"]) < 0.5, (rows[0]["loss"], rows[399]["loss"], rows[400]["loss"])
PY
  then
    pass "3. srun --mpi=pmix DP2 x TP2 resumed run 1 from step_00000400 (TP2 x PP2), USR1 checkpoint $ck, requeued, resumed, metrics steps 1..2000 ($((SECONDS - t)) s)"
  else
    fail "3. srun reshard/resume: state $st, stopped after step ${k:-?} ${msg:-}"; job_report "$j3"; show_log "$WORK/j3.out" 40
  fi
fi

# ---- 4. USR1 while the ranks start up ---------------------------------------------------------
# braid-train installs its handlers only after MPI_Init and its set-up, and SIGUSR1's default
# action kills; the template requeues after such a death too. Whatever the timing, the job
# must end COMPLETED with the whole run.
t=$SECONDS
R4="$WORK/run4"
j4=$(OUT=$R4 TP=2 PP=2 sbatch --parsable -n 4 -o "$WORK/j4.out" "$TEMPLATE" "${MODEL[@]}" --steps 300)
for _ in $(seq 1 200); do grep -q "braid.sbatch.*mpirun: " "$WORK/j4.out" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
scancel -b -s USR1 "$j4"
st=$(wait_done "$j4" 120)
if grep -q "ranks killed by SIGUSR1 during start-up" "$WORK/j4.out"; then how="ranks were killed by the early USR1, job requeued"
elif grep -q "stopping on signal" "$WORK/j4.out"; then how="ranks caught it, checkpoint + requeue"
else how="the signal was lost before the launcher could forward it"; fi
if [ "$st" = COMPLETED ] && [ "$(field "$j4" ExitCode)" = 0:0 ] && [ "$(cat "$R4/checkpoints/latest" 2>/dev/null)" = step_00000300 ] &&
   msg=$(check_metrics "$R4" 300 2>&1 | tail -1); then
  pass "4. USR1 0.3 s after launch: $how; COMPLETED, Restarts=$(field "$j4" Restarts), metrics 1..300 ($((SECONDS - t)) s)"
else
  fail "4. USR1 at start-up ($how): state $st ${msg:-}"; job_report "$j4"; show_log "$WORK/j4.out" 30
fi

# ---- 5. scancel = SIGTERM: checkpoint and stop, no requeue -----------------------------------
t=$SECONDS
R5="$WORK/run5"
j5=$(OUT=$R5 TP=2 PP=2 sbatch --parsable -n 4 -o "$WORK/j5.out" "$TEMPLATE" "${MODEL[@]}")
if ! wait_steps "$R5" 50 120; then
  fail "5. the run did not reach step 50"; job_report "$j5"; show_log "$WORK/j5.out"
else
  scancel "$j5"
  st=$(wait_done "$j5" 60)
  sleep 3   # a wrongly requeued job would be PENDING by now
  n=$(wc -l <"$R5/metrics.jsonl")
  ck=$(printf 'step_%08d' "$n")
  if [ "$st" = CANCELLED ] && [ "$(field "$j5" JobState)" = CANCELLED ] && [ "$(field "$j5" Restarts)" = 0 ] &&
     grep -q "SIGTERM: the ranks checkpoint and stop" "$WORK/j5.out" && ! grep -q "requeueing" "$WORK/j5.out" &&
     [ "$(cat "$R5/checkpoints/latest" 2>/dev/null)" = "$ck" ] && [ -f "$R5/checkpoints/$ck/manifest.json" ] &&
     msg=$(python3 -c 'import json,sys; s=[json.loads(l)["step"] for l in open(sys.argv[1])]; assert s==list(range(1,len(s)+1)), s[-3:]' "$R5/metrics.jsonl" 2>&1); then
    pass "5. scancel: SIGTERM checkpoint $ck (= last metrics step), job CANCELLED, not requeued ($((SECONDS - t)) s)"
  else
    fail "5. scancel/SIGTERM: state $st, latest $(cat "$R5/checkpoints/latest" 2>/dev/null), $n metrics lines ${msg:-}"
    job_report "$j5"; show_log "$WORK/j5.out"
  fi
fi

echo "$failures failure(s); jobs took $((SECONDS - T_START)) s"
[ "$failures" -eq 0 ]
