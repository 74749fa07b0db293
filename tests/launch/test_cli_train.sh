#!/usr/bin/env bash
# End to end through the executables: braid-data -> braid-train under mpiexec (config file
# + CLI override, --stop-after, --resume auto, --keep-last, metrics.jsonl) -> h5ls can read
# the checkpoint -> braid-sample prints text; SIGTERM (Slurm preemption) saves and exits.
source "$(dirname "$0")/cli_common.sh"
DATA="$WORK/data"; make_text_dataset "$DATA"
cat > "$WORK/run.ini" <<INI
layers = 2
heads = 4
width = 32
seq-len = 32
micro-batch = 2
grad-accum = 2
lr = 3e-3
steps = 12
keep-last = 2
save-every = 2
INI
OUT="$WORK/run"
# The command line overrides the file (--steps 10 instead of 12); --stop-after 6 then resume.
timeout 120 $MPIRUN -n 4 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$OUT" --steps 10 --stop-after 6 --tp 2 --pp 2 >"$WORK/a.log" 2>&1 \
  && pass "first part (TP2 x PP2, stop after 6)" || { fail "first part"; cat "$WORK/a.log"; }
[ "$(cat "$OUT/checkpoints/latest")" = "step_00000006" ] && pass "latest -> step_00000006" || fail "latest is $(cat "$OUT/checkpoints/latest")"
n=$(ls -d "$OUT"/checkpoints/step_* | wc -l); [ "$n" -eq 2 ] && pass "--keep-last 2 keeps 2" || fail "--keep-last kept $n"
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$OUT" --steps 10 --pp 2 >"$WORK/b.log" 2>&1 \
  && grep -q "resumed from .*step_00000006" "$WORK/b.log" && pass "resumed under PP2 from step 6" || { fail "resume"; cat "$WORK/b.log"; }
lines=$(wc -l < "$OUT/metrics.jsonl")
[ "$lines" -eq 10 ] && pass "metrics.jsonl has 10 steps" || fail "metrics.jsonl has $lines lines"
python3 - "$OUT/metrics.jsonl" <<'PY' && pass "metrics lines are JSON with step/loss/lr/grad_norm/tokens_per_s, loss falls" || fail "metrics content"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 11)), [r["step"] for r in rows]
for r in rows:
    for k in ("loss", "lr", "grad_norm", "tokens_per_s", "ms_per_step"):
        assert k in r, k
assert rows[-1]["loss"] < rows[0]["loss"] - 0.3, (rows[0]["loss"], rows[-1]["loss"])
assert "val_loss" in rows[-1]
PY
h5ls -r "$OUT/checkpoints/step_00000010/model.h5" | grep -q "/params/h.1.attn.qkv.w *Dataset {3, 32, 32}" \
  && pass "h5ls reads the checkpoint with full logical shapes" || fail "h5ls"
"$BIN/braid-sample" --out "$OUT" --prompt "the " --tokens 40 >"$WORK/s.log" 2>&1 && [ "$(wc -c < "$WORK/s.log")" -gt 40 ] \
  && pass "braid-sample: $(head -c 60 "$WORK/s.log" | tr '\n' ' ')" || { fail "braid-sample"; cat "$WORK/s.log"; }

# Preemption: SIGTERM to the ranks -> they agree, save a checkpoint and exit 43 (stopped).
P="$WORK/preempt"
$MPIRUN -n 2 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$P" --steps 100000 --save-every 0 --log-every 1 >"$WORK/p.log" 2>&1 &
mpid=$!
for i in $(seq 1 100); do [ -f "$P/metrics.jsonl" ] && [ "$(wc -l < "$P/metrics.jsonl")" -ge 3 ] && break; sleep 0.2; done
pkill -TERM -f "^$BIN/braid-train --config $WORK/run.ini --data $DATA --out $P" || true
wait $mpid; rc=$?
if [ "$rc" -eq 43 ] && grep -q "stopping on signal" "$WORK/p.log" && [ -f "$P/checkpoints/latest" ]; then
  pass "SIGTERM: checkpoint $(cat "$P/checkpoints/latest") saved, exit 43"
else fail "SIGTERM handling (rc $rc)"; tail -5 "$WORK/p.log"; fi

# Hard kill (node failure, KillWait expiry): steps logged after the last checkpoint are
# replayed on resume, and metrics.jsonl stays one line per step.
K="$WORK/killed"
$MPIRUN -n 2 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$K" --steps 100000 --save-every 5 >/dev/null 2>&1 &
kpid=$!
for i in $(seq 1 150); do [ -f "$K/metrics.jsonl" ] && [ "$(wc -l < "$K/metrics.jsonl")" -ge 8 ] && [ -f "$K/checkpoints/latest" ] && break; sleep 0.2; done
pkill -KILL -f "^$BIN/braid-train --config $WORK/run.ini --data $DATA --out $K" || true
wait $kpid 2>/dev/null
last=$(cat "$K/checkpoints/latest" | sed 's/step_0*//')
target=$((last + 6))
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$K" --steps 100000 --stop-after $target --save-every 5 >/dev/null 2>&1
python3 - "$K/metrics.jsonl" "$target" <<'PY' && pass "after SIGKILL and resume, metrics.jsonl holds steps 1..N once each" || fail "metrics after SIGKILL"
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == list(range(1, int(sys.argv[2]) + 1)), steps
PY

# A metrics file that cannot be written (here /dev/full: every write fails with ENOSPC, as
# on a full disk) loses lines but does not stop training: one warning, exit 0, checkpoint.
F="$WORK/fullmetrics"
mkdir -p "$F" && ln -s /dev/full "$F/metrics.jsonl"
timeout 120 $MPIRUN -n 1 "$BIN/braid-train" --config "$WORK/run.ini" --data "$DATA" --out "$F" --steps 3 >"$WORK/f.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c "cannot append to $F/metrics.jsonl" "$WORK/f.log")" -eq 1 ] && [ -f "$F/checkpoints/latest" ]; then
  pass "unwritable metrics.jsonl: one warning, training finished and saved"
else fail "unwritable metrics.jsonl: rc $rc"; tail -5 "$WORK/f.log"; fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
