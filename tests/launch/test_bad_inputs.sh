#!/usr/bin/env bash
# Bad input gives one clear message naming what and where, on every rank, and a clean
# non-zero exit: never a hang, a crash or a silently wrong run.
source "$(dirname "$0")/cli_common.sh"
DATA="$WORK/data"; make_text_dataset "$DATA"
M="--layers 2 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --steps 4 --quiet"

expect_error missing_data 2 "$WORK/nope" --data "$WORK/nope" --out "$WORK/o1" $M
expect_error world_not_divisible 3 "not divisible by --tp 2" --data "$DATA" --out "$WORK/o2" $M --tp 2
expect_error heads_vs_tp 2 "--heads 3 is not divisible by --tp 2" --data "$DATA" --out "$WORK/o3" --layers 2 --heads 3 --width 48 --seq-len 16 --steps 2 --tp 2
expect_error layers_vs_pp 4 "fewer than --pp 4" --data "$DATA" --out "$WORK/o4" $M --pp 4 --grad-accum 4
expect_error interleave_constraint 2 "--grad-accum" --data "$DATA" --out "$WORK/o5" --layers 4 --heads 4 --width 32 --seq-len 16 --steps 2 --pp 2 --schedule interleaved --virtual-stages 2 --grad-accum 3
expect_error bad_flag_value 2 "--lr must be a positive number" --data "$DATA" --out "$WORK/o6" $M --lr -1
expect_error unknown_flag 2 "unrecognised option '--bogus'" --data "$DATA" --out "$WORK/o7" $M --bogus 1
expect_error vocab_too_small 2 "but the model's vocabulary is 100" --data "$DATA" --out "$WORK/o8" $M --vocab-size 100
expect_error missing_config 1 "config file $WORK/none.ini cannot be opened" --config "$WORK/none.ini" --data "$DATA" --out "$WORK/o9"

# A good run to get checkpoints, then damage them.
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/run" $M --tp 2 >/dev/null 2>&1 || fail "baseline run"
CK=$(cat "$WORK/run/checkpoints/latest")
expect_error config_mismatch 2 "was trained with --layers 2 but this run has --layers 3" --data "$DATA" --out "$WORK/run" --layers 3 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --steps 8 --quiet
expect_error resume_missing 2 "checkpoint $WORK/nothere does not exist" --data "$DATA" --out "$WORK/o10" $M --resume "$WORK/nothere"

cp -r "$WORK/run" "$WORK/corrupt"
python3 - "$WORK/corrupt/checkpoints/$CK/model.h5" <<'PY'
import os, sys
p = sys.argv[1]; n = os.path.getsize(p)
with open(p, "r+b") as f:           # flip bytes in the raw data at the end of the file
    f.seek(n - 200); b = bytearray(f.read(100)); f.seek(n - 200)
    f.write(bytes(x ^ 0x5A for x in b))
PY
expect_error corrupt_checkpoint 2 "fails its crc32 check" --data "$DATA" --out "$WORK/corrupt" $M --steps 8

cp -r "$WORK/run" "$WORK/truncated"
truncate -s 2000 "$WORK/truncated/checkpoints/$CK/model.h5"
expect_error truncated_checkpoint 2 "is corrupt" --data "$DATA" --out "$WORK/truncated" $M --steps 8

# A crash mid-save leaves step_N.tmp behind: it is ignored and the previous checkpoint loads.
cp -r "$WORK/run" "$WORK/crashed"
mkdir -p "$WORK/crashed/checkpoints/step_00000099.tmp" && echo garbage > "$WORK/crashed/checkpoints/step_00000099.tmp/model.h5"
if timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/crashed" $M --steps 6 --tp 2 >"$WORK/crashed.log" 2>&1 \
   && [ "$(wc -l < "$WORK/crashed/metrics.jsonl")" -eq 6 ] && tail -1 "$WORK/crashed/metrics.jsonl" | grep -q '"step":6'; then pass "interrupted save ignored, previous checkpoint resumed"
else fail "resume after an interrupted save"; sed 's/^/    /' "$WORK/crashed.log" | head; fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
