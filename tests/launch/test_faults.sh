#!/usr/bin/env bash
# Faults through the executables under mpiexec (issue 6, items 4a, 4d, 4e and 5):
#  A. a rank SIGKILLed mid-run under plain mpiexec: the others are gone within a bound,
#     mpiexec names the lost rank; --resume auto continues from the last checkpoint;
#  B. the same under a launcher that leaves the survivors running: the watchdog
#     (--collective-timeout) names the rank that does not answer, dumps the ledgers and
#     aborts (exit 4); braid-ledger blames the lost rank;
#  B2. the same with the rank lost inside a checkpoint save (survivors inside parallel HDF5);
#  B3. the same with --checkpoint-timeout at its default: the liveness probe ends the job;
#  C. a deliberately mismatched collective (--inject-collective-mismatch): watchdog abort,
#     braid-ledger names the rank and the call;
#  D. non-finite steps (--inject-nan-at-step): skipped and counted, rollback after
#     --max-bad-steps, and exit 3 with the message on every rank when nothing helps;
#  E. SIGUSR2 to mpiexec: every rank dumps its ledger and the run goes on.
source "$(dirname "$0")/cli_common.sh"
DATA="$WORK/data"; make_text_dataset "$DATA"
MODEL=(--data "$DATA" --layers 2 --heads 4 --width 32 --seq-len 32 --micro-batch 2 --grad-accum 2 --lr 3e-3 --threads 1)

# The pid of world rank $2 among the braid-train processes writing to $1.
rank_pid() {
  local out=$1 rank=$2 p
  for p in $(pgrep -f -- "--out $out( |$)"); do
    if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$rank"; then echo "$p"; return; fi
  done
}
# Waits (up to 60 s) until $1/metrics.jsonl has $2 lines and a checkpoint exists.
wait_progress() {
  local i
  for i in $(seq 1 300); do
    [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -ge "$2" ] && [ -f "$1/checkpoints/latest" ] && return 0
    sleep 0.2
  done
  return 1
}
now() { date +%s.%N; }
# Waits up to $2 s for background job $1 (mpiexec) and returns its exit code; on a hang it
# prints the ranks' stacks (gdb, when present), kills the job and returns 200 so that the
# test fails with a diagnosis instead of running into ctest's timeout.
wait_bounded() {
  local pid=$1 secs=$2 out=$3 i p
  for i in $(seq 1 $((secs * 5))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
    sleep 0.2
  done
  echo "HANG: mpiexec still running ${secs} s later; the ranks' stacks:"
  for p in $(pgrep -f -- "--out $out( |$)"); do
    echo "--- pid $p"
    command -v gdb >/dev/null && timeout 30 gdb -p "$p" -batch -ex "thread apply all bt" 2>/dev/null | grep -E "^#" | grep -v " in ?? " | head -40
  done
  pkill -KILL -f -- "--out $out( |$)"; kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 200
}
elapsed() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# --- A. SIGKILL under plain mpiexec ------------------------------------------------------
A="$WORK/a"
$MPIRUN -n 4 "$BIN/braid-train" "${MODEL[@]}" --steps 100000 --save-every 4 --tp 2 --pp 2 --out "$A" >"$WORK/a.log" 2>&1 &
mpid=$!
wait_progress "$A" 10 || fail "A: no progress"
victim=$(rank_pid "$A" 2)
t0=$(now); kill -KILL "$victim"; wait_bounded $mpid 60 "$A"; rc=$?; t1=$(now)
secs=$(elapsed "$t0" "$t1")
last=$(sed 's/step_0*//' "$A/checkpoints/latest")
if [ "$rc" -ne 0 ] && grep -q "process rank 2 .*exited on signal 9" "$WORK/a.log" && python3 -c "assert $secs <= 10"; then
  pass "A: rank 2 SIGKILLed: mpiexec names it, every rank gone ${secs} s later (bound 10 s), exit $rc"
else fail "A: rc $rc after ${secs} s"; tail -8 "$WORK/a.log"; fi
target=$((last + 3))
timeout 120 $MPIRUN -n 4 "$BIN/braid-train" "${MODEL[@]}" --steps 100000 --save-every 4 --tp 2 --pp 2 --out "$A" \
  --resume auto --stop-after $target >"$WORK/a2.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "resumed from .*step_$(printf %08d "$last") at step $last" "$WORK/a2.log" \
   && python3 - "$A/metrics.jsonl" "$target" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == list(range(1, int(sys.argv[2]) + 1)), steps
PY
then pass "A: relaunch resumed from the last complete checkpoint (step $last) and ran to $target"
else fail "A: resume (rc $rc)"; tail -5 "$WORK/a2.log"; fi

# --- B. SIGKILL, survivors left running by the launcher: the watchdog ends the job ---------
B="$WORK/b"
$MPIRUN --mca orte_abort_on_non_zero_status 0 -n 4 "$BIN/braid-train" "${MODEL[@]}" --steps 100000 --save-every 4 \
  --tp 2 --pp 2 --collective-timeout 2 --out "$B" >"$WORK/b.log" 2>&1 &
mpid=$!
wait_progress "$B" 6 || fail "B: no progress"
victim=$(rank_pid "$B" 1)
t0=$(now); kill -KILL "$victim"; wait_bounded $mpid 60 "$B"; rc=$?; t1=$(now)
secs=$(elapsed "$t0" "$t1")
# Bound: timeout 2 s + answers awaited 3 s + Open MPI's teardown; 12 s leaves room for a loaded CI machine.
# The survivors are either in one of our collectives (collective timeout) or, when rank 1
# died during a checkpoint save, inside parallel HDF5 (the liveness probe finds it lost).
if [ "$rc" -ne 0 ] && [ "$rc" -ne 200 ] \
   && grep -Eq "watchdog: (collective timeout|checkpoint stalled) on rank .*Rank 1 does not answer" "$WORK/b.log" \
   && python3 -c "assert $secs <= 12"; then
  pass "B: watchdog names lost rank 1, every rank gone ${secs} s after the SIGKILL (--collective-timeout 2, bound 12 s)"
else fail "B: rc $rc after ${secs} s"; grep -v "^step" "$WORK/b.log" | tail -8; fi
"$BIN/braid-ledger" "$B/ledger" >"$WORK/b.ledger" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -qE "^blame: rank 1( |$)" "$WORK/b.ledger" && grep -q "rank 1 left no ledger" "$WORK/b.ledger"; then
  pass "B: braid-ledger: $(grep '^verdict' "$WORK/b.ledger")"
else fail "B: braid-ledger (rc $rc)"; cat "$WORK/b.ledger"; fi

# --- B2. A rank lost inside a checkpoint save: the survivors wait in parallel HDF5 --------------
# (its file close synchronises the ranks, out of sight of our communicators); the save is
# one ledger call with its own limit (--checkpoint-timeout, here far below the collective
# limit so that it is the one that fires), so the watchdog still ends the job. Rank 1 SIGKILLs itself while writing
# step 8's checkpoint, deterministically.
B2="$WORK/b2"
t0=$(now)
BRAID_FAULT_KILL_DURING_SAVE=8:1 timeout 120 $MPIRUN --mca orte_abort_on_non_zero_status 0 -n 4 "$BIN/braid-train" \
  "${MODEL[@]}" --steps 12 --save-every 4 --tp 2 --pp 2 --collective-timeout 30 --checkpoint-timeout 2 --out "$B2" \
  >"$WORK/b2.log" 2>&1
rc=$?; t1=$(now); secs=$(elapsed "$t0" "$t1")
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "watchdog: checkpoint timeout on rank .*(--checkpoint-timeout 2) in .*: checkpoint_save .*Rank 1 does not answer" "$WORK/b2.log" \
   && [ "$(cat "$B2/checkpoints/latest")" = step_00000004 ]; then
  pass "B2: rank 1 lost inside step 8's save: watchdog names checkpoint_save and rank 1 (exit $rc, ${secs} s in all); latest stays step 4"
else fail "B2: rc $rc after ${secs} s"; grep -v "^step" "$WORK/b2.log" | tail -8; fi

# --- B3. Rank 1 lost just before the checkpoint file's collective create, so the survivors
# wait inside parallel HDF5 (MPI_File_open), where no collective of ours can time out; with
# the default --checkpoint-timeout (an hour) the survivors' watchdogs
# probe the other ranks once the save has lasted --collective-timeout, find rank 1 lost and
# abort at once (the bug CI found: the job hung in the save until ctest's timeout).
B3="$WORK/b3"
t0=$(now)
BRAID_FAULT_KILL_DURING_SAVE=8:1:open timeout 120 $MPIRUN --mca orte_abort_on_non_zero_status 0 -n 4 "$BIN/braid-train" \
  "${MODEL[@]}" --steps 12 --save-every 4 --tp 2 --pp 2 --collective-timeout 2 --out "$B3" >"$WORK/b3.log" 2>&1
rc=$?; t1=$(now); secs=$(elapsed "$t0" "$t1")
if [ $rc -ne 0 ] && [ $rc -ne 124 ] \
   && grep -q "watchdog: checkpoint stalled on rank .*: checkpoint_save .*liveness probe (sent after --collective-timeout 2) went unanswered.*Rank 1 does not answer" "$WORK/b3.log" \
   && [ "$(cat "$B3/checkpoints/latest")" = step_00000004 ]; then
  pass "B3: rank 1 lost inside a save, --checkpoint-timeout left at its default: liveness probe names rank 1 (exit $rc, ${secs} s in all)"
else fail "B3: rc $rc after ${secs} s"; grep -v "^step" "$WORK/b3.log" | tail -8; fi

# --- C. A deliberately mismatched collective --------------------------------------------------
C="$WORK/c"
t0=$(now)
timeout 120 $MPIRUN -n 4 "$BIN/braid-train" "${MODEL[@]}" --steps 20 --tp 2 --collective-timeout 2 \
  --inject-collective-mismatch 1,3 --out "$C" >"$WORK/c.log" 2>&1
rc=$?; t1=$(now)
n=$(ls "$C"/ledger/rank-*.json 2>/dev/null | wc -l)
if [ $rc -eq 4 ] && [ "$n" -eq 4 ] && grep -q "watchdog: collective timeout on rank" "$WORK/c.log"; then
  pass "C: mismatch stalls, watchdog aborts with exit 4 after $(elapsed "$t0" "$t1") s, 4 ledgers dumped"
else fail "C: rc $rc, $n ledgers"; grep -v "^step" "$WORK/c.log" | tail -8; fi
"$BIN/braid-ledger" "$C/ledger" >"$WORK/c.ledger" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q "^blame: rank 1 at call #[0-9]* of group world\[0,1,2,3\]" "$WORK/c.ledger" \
   && grep -q "divergence at call .*ranks 0,2,3 called all_reduce_max i64 x 1; rank 1 called barrier" "$WORK/c.ledger"; then
  pass "C: braid-ledger: $(grep '^verdict' "$WORK/c.ledger")"
else fail "C: braid-ledger (rc $rc)"; cat "$WORK/c.ledger"; fi

# --- D. Non-finite steps ------------------------------------------------------------------------
D="$WORK/d"
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" "${MODEL[@]}" --steps 10 --save-every 4 --inject-nan-at-step 3,5,6 \
  --max-bad-steps 2 --out "$D" >"$WORK/d.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "step      3/10 .*non-finite: update skipped on every rank (1 in a row, 1 in this run)" "$WORK/d.log" \
   && grep -q "rolled back to .*step_00000004 (step 4) after 2 non-finite steps in a row (up to step 6)" "$WORK/d.log" \
   && python3 - "$D/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 11)), [r["step"] for r in rows]
assert rows[2].get("skipped") is True and rows[2]["skipped_steps"] == 1, rows[2]
assert all("skipped" not in r for r in rows[3:]), "steps replayed after the rollback are good"
assert rows[-1]["skipped_steps"] == 3, rows[-1]
PY
then pass "D: step 3 skipped and counted, rollback to step 4 after steps 5 and 6, metrics one line per step"
else fail "D: rc $rc"; grep -v "^step .*loss [0-9]" "$WORK/d.log" | tail -8; fi
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" "${MODEL[@]}" --steps 10 --inject-nan-at-step 2,3 --max-bad-steps 2 \
  --out "$WORK/d2" >"$WORK/d2.log" 2>&1
rc=$?
count=$(grep -c "error: the last 2 steps (up to step 3) had a non-finite loss or gradient norm and there is no checkpoint" "$WORK/d2.log")
if [ $rc -eq 3 ] && [ "$count" -eq 2 ]; then pass "D: no checkpoint to roll back to: exit 3, message on both ranks"
else fail "D: diverged run: rc $rc, message on $count ranks"; tail -5 "$WORK/d2.log"; fi

# --- E. SIGUSR2: ledgers on demand --------------------------------------------------------------
E="$WORK/e"
$MPIRUN -n 2 "$BIN/braid-train" "${MODEL[@]}" --steps 400 --save-every 0 --out "$E" >"$WORK/e.log" 2>&1 &
mpid=$!
for i in $(seq 1 150); do [ -f "$E/metrics.jsonl" ] && [ "$(wc -l < "$E/metrics.jsonl")" -ge 5 ] && break; sleep 0.2; done
kill -USR2 $mpid  # mpiexec forwards SIGUSR2 to every rank
for i in $(seq 1 50); do [ "$(ls "$E"/ledger/rank-*.json 2>/dev/null | wc -l)" -eq 2 ] && break; sleep 0.2; done
wait_bounded $mpid 120 "$E"; rc=$?
"$BIN/braid-ledger" "$E/ledger" >"$WORK/e.ledger" 2>&1; lrc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$E/metrics.jsonl")" -eq 400 ] && grep -q '"reason": "SIGUSR2"' "$E/ledger/rank-0.json" \
   && grep -q '"reason": "SIGUSR2"' "$E/ledger/rank-1.json" && [ $lrc -eq 1 ]; then
  pass "E: SIGUSR2 dumped both ledgers, the run finished; braid-ledger: $(grep '^verdict' "$WORK/e.ledger")"
else fail "E: rc $rc, braid-ledger rc $lrc"; tail -3 "$WORK/e.log"; cat "$WORK/e.ledger"; fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
