#!/usr/bin/env bash
# Eight-GPU scaling (the nvidia-h200-x8 host), one process per GPU, NCCL data plane:
#  - GPT-2 1.5B, data parallel: weak scaling (B=8 per GPU, 1/2/4/8 GPUs) with and without
#    ZeRO-1, and strong scaling (global batch 64 sequences: gradient accumulation shrinks
#    as GPUs are added);
#  - gpt-13b (12.8B parameters, 220 GiB of training state: does not fit one GPU), in the
#    layouts that fit 2, 4 and 8 GPUs (TP within the node, TP x PP, with enough
#    microbatches for the pipeline).
# Per-GPU efficiency = per-GPU tokens/s / the smallest run's per-GPU tokens/s of the same
# model and series. Prints a Markdown table; every run's line is in OUT/x8.log.
#   bench/run_x8_table.sh BIN_DIR OUT_DIR [STEPS]   (mpirun flags from $MPIRUN_FLAGS)
set -uo pipefail
BIN=${1:?bin dir with braid-bench}
OUTD=${2:?output dir}
STEPS=${3:-10}
mkdir -p "$OUTD"
RES=$OUTD/x8.jsonl
: > "$RES"
run() {  # SERIES PRESET NP ARGS...
  local series=$1 preset=$2 np=$3; shift 3
  timeout 300 mpirun ${MPIRUN_FLAGS:-} -np "$np" "$BIN/braid-bench" --preset "$preset" --device cuda --attention cudnn \
    --bench-steps "$STEPS" --warmup 3 --label "$preset/$series" --json "$RES" "$@" 2>&1 | tee -a "$OUTD/x8.log" |
    grep -E "^braid-bench|error|out of memory" | cut -c1-250
}
for np in 1 2 4 8; do run weak gpt2-1.5b $np --micro-batch 8 --grad-accum 1; done
for np in 2 4 8; do run weak-zero1 gpt2-1.5b $np --micro-batch 8 --grad-accum 1 --zero 1; done
for np in 1 2 4 8; do run strong gpt2-1.5b $np --micro-batch 8 --grad-accum $((8 / np)); done
run tp gpt-13b 2 --tp 2 --micro-batch 1 --grad-accum 8
run tp gpt-13b 4 --tp 4 --micro-batch 2 --grad-accum 4
run tp gpt-13b 8 --tp 8 --micro-batch 4 --grad-accum 2
run tp-pp gpt-13b 8 --tp 4 --pp 2 --micro-batch 2 --grad-accum 8 --schedule 1f1b
run tp-pp gpt-13b 8 --tp 2 --pp 4 --micro-batch 2 --grad-accum 16 --schedule interleaved --virtual-stages 2
python3 - "$RES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {}
for r in rows:
    b = base.get(r["label"])
    if b is None or r["gpus"] < b["gpus"]: base[r["label"]] = r
print("| model / series | layout | GPUs | micro-batch x accum | tok/s | tok/s per GPU | per-GPU efficiency | MFU per GPU | peak memory GiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    b = base[r["label"]]
    eff = r["tokens_per_s_per_gpu"] / b["tokens_per_s_per_gpu"]
    print("| %s | %s | %d | %d x %d | %.0f | %.0f | %.0f%% (vs %d GPU) | %.1f%% | %.1f |" % (r["label"], r["layout"], r["gpus"],
          r["micro_batch"], r["grad_accum"], r["tokens_per_s"], r["tokens_per_s_per_gpu"], 100 * eff, b["gpus"],
          100 * r["mfu"], r["peak_allocator_gib"]))
PY
