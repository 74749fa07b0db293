#!/usr/bin/env bash
# Fixture of the bad-input tests (ctest FIXTURES_SETUP): a small byte-level dataset and a
# run trained on 2 ranks (TP2) with checkpoints at steps 2 and 4, in FIXTURE_DIR. Each
# case copies what it damages.
#   bad_input_fixture.sh BUILD_BIN_DIR FIXTURE_DIR
source "$(dirname "$0")/cli_common.sh"
FIX=${2:?usage: $0 BUILD_BIN_DIR FIXTURE_DIR}
rm -rf "$FIX" && mkdir -p "$FIX"
make_text_dataset "$FIX/data"
timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$FIX/data" --out "$FIX/run" --layers 2 --heads 4 --width 32 \
  --seq-len 16 --micro-batch 2 --steps 4 --save-every 2 --tp 2 --quiet >"$FIX/run.log" 2>&1 || { cat "$FIX/run.log"; exit 1; }
[ "$(cat "$FIX/run/checkpoints/latest")" = step_00000004 ] && [ -d "$FIX/run/checkpoints/step_00000002" ] \
  || { echo "fixture run did not leave checkpoints at steps 2 and 4"; exit 1; }
echo "fixture ready in $FIX"
