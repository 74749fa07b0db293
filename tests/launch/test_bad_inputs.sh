#!/usr/bin/env bash
# Bad input, one case per ctest: braid-train (or braid-sample) must exit non-zero (not by
# a signal, not by a timeout) with one clear message naming what and where on EVERY rank;
# never a hang, a crash, lost data or a silently wrong run. Checkpoint cases damage a copy
# of the fixture's run (bad_input_fixture.sh).
#   test_bad_inputs.sh BUILD_BIN_DIR FIXTURE_DIR CASE      (exit 77 = skipped)
source "$(dirname "$0")/cli_common.sh"
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
FIX=${2:?usage: $0 BUILD_BIN_DIR FIXTURE_DIR CASE}
CASE=${3:?usage: $0 BUILD_BIN_DIR FIXTURE_DIR CASE}
DATA="$FIX/data"
M="--layers 2 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --steps 4 --quiet"
R="--layers 2 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --quiet"  # resuming the fixture's run
CK=step_00000004

copy_run() { cp -r "$FIX/run" "$WORK/$1"; }
copy_data() { cp -r "$DATA" "$WORK/$1"; }
# Flips bit 0 of the byte at OFFSET (negative: from the end) of FILE.
flip_byte() {
  python3 - "$1" "$2" <<'PY'
import os, sys
p, at = sys.argv[1], int(sys.argv[2])
at = at if at >= 0 else os.path.getsize(p) + at
with open(p, "r+b") as f:
    f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1]))
PY
}
# Offset of the token data of a byte-level shard: the first run of 64 uint16 tokens < 256
# (printable bytes, each followed by a zero byte), which no HDF5 structure looks like.
token_offset() {
  python3 - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
m = re.search(rb"(?:[\x09\x0a\x20-\x7e]\x00){64}", data)
print(m.start() if m else -1)
PY
}
# expect_sample_error NAME NP "message" ARGS...: the same contract for braid-sample.
expect_sample_error() { expect_program_error braid-sample "$@"; }
# A private mount namespace for the cases that mount a small file system, or exit 77.
in_mount_namespace() {
  local ns
  if unshare -m --propagation private true 2>/dev/null; then ns=(unshare -m --propagation private)
  elif unshare -rm --propagation private true 2>/dev/null; then ns=(unshare -rm --propagation private)
  else echo "SKIP: cannot create a mount namespace (needs root or user namespaces)"; exit 77; fi
  "${ns[@]}" bash "$SELF" "$BIN" "$FIX" "$1"
  exit $?
}
mount_tmpfs() {  # DIR SIZE_KB [ro]
  mkdir -p "$1"
  mount -t tmpfs -o "size=${2}k${3:+,ro}" tmpfs "$1" 2>"$WORK/mount.err" \
    || { echo "SKIP: cannot mount a tmpfs: $(cat "$WORK/mount.err")"; exit 77; }
  trap "umount '$1'; rm -rf '$WORK'" EXIT
}

# --- the data ----------------------------------------------------------------------------
case_missing_data() { expect_error $CASE 2 "$WORK/nope" --data "$WORK/nope" --out "$WORK/o" $M; }
case_dataset_missing_split() {
  copy_data d && rm "$WORK/d/val_000000.h5"
  expect_error $CASE 2 "has no shards for split 'val'" --data "$WORK/d" --out "$WORK/o" $M
}
case_dataset_truncated() {
  copy_data d && truncate -s 3000 "$WORK/d/train_000000.h5"
  expect_error $CASE 2 "$WORK/d/train_000000.h5 (truncated file" --data "$WORK/d" --out "$WORK/o" $M
}
case_dataset_bitflip() {
  copy_data d
  local at; at=$(token_offset "$WORK/d/train_000000.h5")
  [ "$at" -ge 0 ] || { fail "no token data found in the shard"; return; }
  flip_byte "$WORK/d/train_000000.h5" $((at + 101))
  expect_error $CASE 2 "shard $WORK/d/train_000000.h5 is corrupt: tokens [0," --data "$WORK/d" --out "$WORK/o" $M
}
case_dataset_larger_vocab() {
  expect_error $CASE 2 "has vocabulary 257 (tokenizer byte) but the model's vocabulary is 100" \
    --data "$DATA" --out "$WORK/o" $M --vocab-size 100
}

# --- layouts and options -----------------------------------------------------------------
case_world_not_divisible() { expect_error $CASE 3 "not divisible by --tp 2" --data "$DATA" --out "$WORK/o" $M --tp 2; }
case_heads_vs_tp() {
  # Heads need not divide by TP (padding heads), but every TP rank needs at least one.
  expect_error $CASE 2 "--tp 2 is more than the 1 attention heads (--heads) it splits" --data "$DATA" \
    --out "$WORK/o" --layers 2 --heads 1 --width 48 --seq-len 16 --steps 2 --tp 2
}
case_layers_vs_pp() {
  expect_error $CASE 4 "fewer than --pp 4" --data "$DATA" --out "$WORK/o" $M --pp 4 --grad-accum 4
  # fuzz_train_config found this one building a billion-entry layer list (a timeout)
  expect_error $CASE 2 "--layers 1073741824 is more than the 65536 transformer blocks supported" --data "$DATA" \
    --out "$WORK/o" $M --layers 1073741824 --schedule interleaved --virtual-stages 1073741824
}
case_interleave_few_microbatches() {
  expect_error $CASE 2 "needs --grad-accum (number of microbatches, 1) to be a multiple of --pp (2)" \
    --data "$DATA" --out "$WORK/o" --layers 4 --heads 4 --width 32 --seq-len 16 --steps 2 --pp 2 \
    --schedule interleaved --virtual-stages 2 --grad-accum 1
}
case_bad_flag_value() { expect_error $CASE 2 "--lr must be a positive number" --data "$DATA" --out "$WORK/o" $M --lr -1; }
case_memory_option_values() {  # the memory and fault options of session 3, refused on every rank
  expect_error $CASE 2 "--recompute must be gelu, full or none (got 'all')" --data "$DATA" --out "$WORK/o" $M --recompute all
  expect_error $CASE 2 "--recompute-num-layers 2 needs --recompute gelu or full (got none)" --data "$DATA" \
    --out "$WORK/o" $M --recompute none --recompute-num-layers 2
  expect_error $CASE 2 "--recompute-num-layers must be >= 0, or -1 for every layer (got -3)" --data "$DATA" \
    --out "$WORK/o" $M --recompute-num-layers -3
  expect_error $CASE 2 "--loss-chunk-mib must be >= 0 (0 = no chunking), got -1" --data "$DATA" --out "$WORK/o" $M \
    --loss-chunk-mib -1
  expect_error $CASE 2 "--checkpoint-timeout must be >= 0 seconds (0 = off), got -5" --data "$DATA" --out "$WORK/o" $M \
    --checkpoint-timeout -5
  expect_error $CASE 2 "--gemm-algos autotune chooses CUDA GEMM kernels but --device is cpu" --data "$DATA" \
    --out "$WORK/o" $M --gemm-algos autotune
  expect_error $CASE 2 "--gemm-algos must be auto, autotune or heuristic (got 'fastest')" --data "$DATA" \
    --out "$WORK/o" $M --gemm-algos fastest
  expect_error $CASE 2 "--optimizer-overlap-sms 8 overlaps the GPU's AdamW with the forward, which needs --device cuda" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-sms 8
  expect_error $CASE 2 "--optimizer-overlap-sms all overlaps the GPU's AdamW with the forward, which needs --device cuda" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-sms all
  expect_error $CASE 2 "--optimizer-overlap-sms must be 'all' or a count of SMs >= 0 (got 'most')" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-sms most
  expect_error $CASE 2 "--optimizer-overlap-sms must be 'all' or a count of SMs >= 0 (got '-1')" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-sms -1
  expect_error $CASE 2 "--optimizer-overlap-gemm-limit must be in [0, 1] (got 1.5)" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-gemm-limit 1.5
  expect_error $CASE 2 "--optimizer-overlap-gemm-limit 0.5 limits the GEMMs beside an update on K SMs, which needs --optimizer-overlap-sms K" \
    --data "$DATA" --out "$WORK/o" $M --optimizer-overlap-gemm-limit 0.5
}
case_unknown_flag() { expect_error $CASE 2 "unrecognised option '--bogus'" --data "$DATA" --out "$WORK/o" $M --bogus 1; }
case_unknown_config_key() {
  printf 'steps = 4\nbogus = 1\n' >"$WORK/run.ini"
  expect_error $CASE 2 "unrecognised option 'bogus'" --config "$WORK/run.ini" --data "$DATA" --out "$WORK/o" $M
}
case_option_placeholder() {
  expect_error $CASE 2 "argument 6 contains '%value%'" --data "$DATA" --out "$WORK/o" --sample-prompt '%value%' $M
  # The other programs parse with the same library: refused there too, never a hang.
  local out rc
  out=$(timeout 20 "$BIN/braid-sample" --out "$WORK/o" --prompt '%value%' 2>&1); rc=$?
  if [ $rc -ne 2 ] || ! grep -q "argument 4 contains '%value%'" <<<"$out"; then
    fail "$CASE: braid-sample exit $rc: $out"
  fi
  out=$(timeout 20 "$BIN/braid-data" --out "$WORK/d" --input '%value%' 2>&1); rc=$?
  if [ $rc -ne 1 ] || ! grep -q "argument 4 contains '%value%'" <<<"$out"; then
    fail "$CASE: braid-data exit $rc: $out"
  fi
}
case_missing_config() {
  expect_error $CASE 1 "config file $WORK/none.ini cannot be opened" --config "$WORK/none.ini" --data "$DATA" --out "$WORK/o"
}
case_contradictory_stop_after() {
  expect_error $CASE 2 "--stop-after 10 is past --steps 4" --data "$DATA" --out "$WORK/o" $M --stop-after 10
}
case_contradictory_virtual_stages() {
  expect_error $CASE 2 "--virtual-stages 2 needs --schedule interleaved" --data "$DATA" --out "$WORK/o" \
    --layers 4 --heads 4 --width 32 --seq-len 16 --steps 2 --pp 2 --virtual-stages 2 --grad-accum 2
}
case_contradictory_device() {
  expect_error $CASE 2 "--attention cudnn is a CUDA kernel but --device is cpu" --data "$DATA" --out "$WORK/o" $M --attention cudnn
}
case_unwritable_output() {
  touch "$WORK/afile"
  expect_error $CASE 2 "cannot create the output directory $WORK/afile/out" --data "$DATA" --out "$WORK/afile/out" $M
}
case_readonly_output() { in_mount_namespace readonly_output_inner; }
case_readonly_output_inner() {
  mount_tmpfs "$WORK/ro" 64 ro
  expect_error readonly_output 2 "the output directory $WORK/ro is not writable: Read-only file system" \
    --data "$DATA" --out "$WORK/ro" $M
}

# --- checkpoints -------------------------------------------------------------------------
case_checkpoint_missing() {
  expect_error $CASE 2 "checkpoint $WORK/nothere does not exist" --data "$DATA" --out "$WORK/o" $M --resume "$WORK/nothere"
}
case_checkpoint_no_manifest() {
  copy_run r && rm "$WORK/r/checkpoints/$CK/manifest.json"
  expect_error $CASE 2 "checkpoint $WORK/r/checkpoints/$CK has no manifest.json" --data "$DATA" --out "$WORK/r" $R --steps 8
}
case_checkpoint_truncated() {
  copy_run r && truncate -s 2000 "$WORK/r/checkpoints/$CK/model.h5"
  expect_error $CASE 2 "checkpoint $WORK/r/checkpoints/$CK is corrupt: cannot open $WORK/r/checkpoints/$CK/model.h5 (truncated file" \
    --data "$DATA" --out "$WORK/r" $R --steps 8
}
case_checkpoint_bitflip_data() {
  copy_run r && flip_byte "$WORK/r/checkpoints/$CK/model.h5" -200  # inside the last tensor's data
  expect_error $CASE 2 "of model.h5 fails its crc32 check" --data "$DATA" --out "$WORK/r" $R --steps 8
}
case_checkpoint_bitflip_metadata() {
  copy_run r && flip_byte "$WORK/r/checkpoints/$CK/model.h5" 20  # inside the superblock
  expect_error $CASE 2 "checkpoint $WORK/r/checkpoints/$CK is corrupt" --data "$DATA" --out "$WORK/r" $R --steps 8
}
case_checkpoint_other_model() {
  copy_run r
  expect_error $CASE 2 "was trained with --layers 2 but this run has --layers 3" --data "$DATA" --out "$WORK/r" \
    --layers 3 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --steps 8 --quiet
}
case_checkpoint_forged_manifest() {
  # A manifest claiming a 1024-wide, 48-layer model: braid-sample builds the model from it,
  # so the claim is checked against the bytes model.h5 holds before anything is allocated.
  copy_run r
  python3 - "$WORK/r/checkpoints/$CK/manifest.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p))
m["config"].update(width=1024, heads=16, layers=48)
json.dump(m, open(p, "w"))
PY
  expect_sample_error $CASE 2 "the file is truncated or the manifest is forged" --checkpoint "$WORK/r/checkpoints/$CK" --tokens 2
}
case_latest_pointer_escape() {
  copy_run r && echo "../../../etc" >"$WORK/r/checkpoints/latest"
  expect_error $CASE 2 "$WORK/r/checkpoints/latest should hold the name of a checkpoint directory" --data "$DATA" --out "$WORK/r" $R --steps 8
}

# --- crashes and full disks during a save ------------------------------------------------
# metrics.jsonl holds steps 1..N once each.
metrics_complete() { python3 - "$1" "$2" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
sys.exit(0 if steps == list(range(1, int(sys.argv[2]) + 1)) else 1)
PY
}
case_interrupted_save() {
  # A crash mid-save left step_N.tmp and latest.tmp: ignored, then removed by the next save.
  copy_run r
  mkdir -p "$WORK/r/checkpoints/step_00000005.tmp" && echo garbage >"$WORK/r/checkpoints/step_00000005.tmp/model.h5"
  echo step_00000005 >"$WORK/r/checkpoints/latest.tmp"
  if timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/r" $R --steps 6 --tp 2 >"$WORK/log" 2>&1 \
     && metrics_complete "$WORK/r/metrics.jsonl" 6 && [ ! -e "$WORK/r/checkpoints/step_00000005.tmp" ] \
     && [ ! -e "$WORK/r/checkpoints/latest.tmp" ] && [ "$(cat "$WORK/r/checkpoints/latest")" = step_00000006 ]; then
    pass "$CASE: the partial save was ignored and removed"
  else fail "$CASE"; sed 's/^/    /' "$WORK/log" | head; ls "$WORK/r/checkpoints"; fi
}
case_killed_during_save() {
  # Every rank is SIGKILLed in the middle of writing step 6's checkpoint.
  copy_run r
  BRAID_FAULT_KILL_DURING_SAVE=6 timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/r" $R \
    --steps 8 --save-every 2 --tp 2 >"$WORK/killed.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ ! -d "$WORK/r/checkpoints/step_00000006.tmp" ] \
     || [ "$(cat "$WORK/r/checkpoints/latest")" != $CK ]; then
    fail "$CASE: the kill did not leave a partial step 6 behind (rc $rc)"; sed 's/^/    /' "$WORK/killed.log" | head
    ls "$WORK/r/checkpoints"; return
  fi
  # Relaunch: resumes from step 4 (never the partial 6), removes the partial directory.
  if timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/r" \
       --layers 2 --heads 4 --width 32 --seq-len 16 --micro-batch 2 --steps 8 --save-every 2 --tp 2 >"$WORK/resumed.log" 2>&1 \
     && grep -q "resumed from $WORK/r/checkpoints/$CK at step 4" "$WORK/resumed.log" \
     && metrics_complete "$WORK/r/metrics.jsonl" 8 && [ ! -e "$WORK/r/checkpoints/step_00000006.tmp" ] \
     && [ "$(cat "$WORK/r/checkpoints/latest")" = step_00000008 ]; then
    pass "$CASE: killed mid-save (exit $rc), resumed from step 4, partial save removed"
  else fail "$CASE: relaunch"; sed 's/^/    /' "$WORK/resumed.log" | head; ls "$WORK/r/checkpoints"; fi
}
case_disk_full() { in_mount_namespace disk_full_inner; }
case_disk_full_inner() {
  # The run directory on a tmpfs with room for its step-4 checkpoint and half of another.
  local ckpt_kb
  ckpt_kb=$(du -sk "$FIX/run/checkpoints/$CK" | cut -f1)
  mount_tmpfs "$WORK/full" $((ckpt_kb + ckpt_kb / 2 + 32))
  mkdir -p "$WORK/full/r/checkpoints" && cp "$FIX/run/metrics.jsonl" "$WORK/full/r/" \
    && cp -r "$FIX/run/checkpoints/$CK" "$FIX/run/checkpoints/latest" "$WORK/full/r/checkpoints/" \
    || { fail "disk_full: the tmpfs cannot hold one checkpoint"; return; }
  local args=(--data "$DATA" --out "$WORK/full/r" $R --steps 8 --save-every 2 --tp 2)
  local saving="saving checkpoint step_00000006 in $WORK/full/r/checkpoints failed"
  # 1. The free-space check refuses the save before writing anything.
  expect_error disk_full 2 "$saving: not enough free space, nothing was written" "${args[@]}"
  # 2. Without the check, the disk fills up in the middle of writing model.h5.
  BRAID_TEST_SKIP_SPACE_CHECK=1 expect_error disk_full_mid_write 2 "$saving: writing /" "${args[@]}"
  for log in "$WORK/disk_full.log" "$WORK/disk_full_mid_write.log"; do
    grep -q "the disk is full or the quota is exhausted)" "$log" && grep -q "the previous checkpoint ($CK) is intact" "$log" \
      || fail "disk_full: $(basename "$log") does not say what happened"
  done
  grep -q "the partial checkpoint was removed" "$WORK/disk_full_mid_write.log" || fail "disk_full: partial checkpoint not reported removed"
  [ ! -e "$WORK/full/r/checkpoints/step_00000006.tmp" ] && [ "$(cat "$WORK/full/r/checkpoints/latest")" = $CK ] \
    || fail "disk_full: the partial checkpoint was left behind or the pointer moved"
  # The previous checkpoint is intact: the run continues from it elsewhere.
  cp -r "$WORK/full/r" "$WORK/moved"
  if timeout 120 $MPIRUN -n 2 "$BIN/braid-train" --data "$DATA" --out "$WORK/moved" $R --steps 6 --tp 2 \
       --quiet >"$WORK/moved.log" 2>&1 && [ "$(cat "$WORK/moved/checkpoints/latest")" = step_00000006 ]; then
    pass "disk_full: the previous checkpoint loads and the run continues"
  else fail "disk_full: resuming from the previous checkpoint"; sed 's/^/    /' "$WORK/moved.log" | head; fi
}

declare -F "case_$CASE" >/dev/null || { echo "unknown case '$CASE'"; exit 2; }
"case_$CASE"
echo "$failures failure(s)"
[ "$failures" -eq 0 ]
