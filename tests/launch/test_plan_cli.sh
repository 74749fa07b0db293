#!/usr/bin/env bash
# braid-train --plan end to end: plans a layout on ranks it does not have, allocates no
# model (a GPT-3-sized plan under a 1 GB address-space limit), reports every failing check
# with exit 2, writes --plan-json, prints once under mpirun. The numbers themselves are
# checked against real runs in test_plan (tests/framework/test_plan.cpp).
source "$(dirname "$0")/cli_common.sh"
DATA="$WORK/data"; make_text_dataset "$DATA"
M="--layers 4 --heads 4 --width 32 --seq-len 16 --micro-batch 2"

# 16 ranks planned on one process: 4 stage rows covering ranks 0-15, 16 JSON entries.
out="$WORK/plan16.log"
timeout 60 $MPIRUN -n 1 "$BIN/braid-train" --plan --tp 2 --pp 4 --dp 2 --grad-accum 8 $M --vocab-size 96 \
  --plan-json "$WORK/plan16.json" >"$out" 2>&1
rc=$?
rows=$(grep -cE '^  [0-3] +all +(0-3|4-7|8-11|12-15) ' "$out")
entries=$(grep -c '"rank":' "$WORK/plan16.json" 2>/dev/null)
if [ "$rc" -eq 0 ] && [ "$rows" -eq 4 ] && [ "$entries" -eq 16 ] && grep -q 'world 16 = dp 2 x pp 4 x tp 2' "$out" \
   && grep -q 'memory    recompute gelu | loss chunk 256 MiB of logits' "$out" \
   && grep -qE '"recompute": *"gelu"' "$WORK/plan16.json"; then
  pass "plan of 16 ranks on one process (4 stage rows, 16 JSON ranks, memory options named)"
else
  fail "plan16: rc $rc, $rows stage rows, $entries JSON ranks"; sed 's/^/    /' "$out" | head -40
fi

# GPT-3 175B on 1024 ranks: nothing is allocated, so 1 GB of address space is plenty.
out="$WORK/plan175b.log"
( ulimit -v 1000000; timeout 60 $MPIRUN -n 1 "$BIN/braid-train" --plan --layers 96 --heads 96 --width 12288 \
  --seq-len 2048 --micro-batch 1 --tp 8 --pp 16 --dp 8 --grad-accum 64 --zero 1 --sequence-parallel ) >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q 'world 1024 = dp 8 x pp 16 x tp 8' "$out" && [ "$(grep -cE '^  [0-9]+ +all ' "$out")" -eq 16 ]; then
  pass "175B plan on 1024 ranks within a 1 GB address space"
else
  fail "175B plan: rc $rc"; sed 's/^/    /' "$out" | head -40
fi

# Every failing check at once, exit 2, no memory table.
out="$WORK/bad.log"
timeout 60 $MPIRUN -n 1 "$BIN/braid-train" --plan --layers 3 --heads 4 --width 32 --seq-len 16 --tp 3 --pp 4 \
  --schedule interleaved --lr -1 >"$out" 2>&1
rc=$?
missing=""
for msg in "FAIL  options: --lr must be a positive number" "FAIL  tensor parallel: the MLP width 4 x --width = 128 is not divisible by --tp 3" \
           "FAIL  pipeline split: --layers 3 is fewer than --pp 4" "FAIL  schedule: --schedule=interleaved needs --virtual-stages >= 2" \
           "no memory plan"; do
  grep -qF -- "$msg" "$out" || missing="$missing [$msg]"
done
if [ "$rc" -eq 2 ] && [ -z "$missing" ]; then pass "four failing checks reported together, exit 2"
else fail "bad plan: rc $rc, missing$missing"; sed 's/^/    /' "$out" | head -30; fi

# Vocabulary and data checks from --data; under mpirun the plan is printed once.
out="$WORK/data.log"
timeout 60 $MPIRUN -n 2 "$BIN/braid-train" --plan --data "$DATA" $M --pp 2 --grad-accum 2 >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && [ "$(grep -c '^Braid plan' "$out")" -eq 1 ] && grep -q "vocabulary from dataset $DATA" "$out" \
   && grep -q "ok    dataset" "$out"; then pass "plan under mpirun -n 2 with --data: printed once, vocabulary from the dataset"
else fail "plan with data: rc $rc"; sed 's/^/    /' "$out" | head -30; fi
timeout 60 $MPIRUN -n 1 "$BIN/braid-train" --plan --data "$DATA" $M --vocab-size 100 >"$out" 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q "FAIL  dataset: .*but the model's vocabulary is 100" "$out"; then pass "dataset vocabulary larger than --vocab-size fails its check"
else fail "vocab check: rc $rc"; sed 's/^/    /' "$out" | head -30; fi

# An unwritable --plan-json: a clear message on every rank, exit 2.
expect_error plan_json_unwritable 2 "--plan-json $WORK/no/such/dir/p.json cannot be written" --plan $M --vocab-size 96 \
  --plan-json "$WORK/no/such/dir/p.json"

# --dp must agree with the world in a real run.
expect_error dp_mismatch 2 "--dp 4 but the world of 2 ranks" --data "$DATA" --out "$WORK/o1" $M --steps 1 --dp 4

[ "$failures" -eq 0 ] && echo "all plan CLI checks passed" || { echo "$failures plan CLI checks failed"; exit 1; }
