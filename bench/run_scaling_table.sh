#!/usr/bin/env bash
# Two-GPU scaling, one process per GPU (NCCL data plane): GPT-2 350M (B=16) and 1.5B (B=8)
# per GPU on 1 GPU, DP2 (with and without ZeRO-1, B per GPU), TP2 (and TP2 + sequence
# parallelism, B per TP group) and PP2 1F1B (B/2 per microbatch, 8 microbatches). Per-GPU
# efficiency = per-GPU tokens/s / one GPU's tokens/s. Prints a Markdown table.
#   bench/run_scaling_table.sh BIN_DIR OUT_DIR [STEPS]   (mpirun flags from $MPIRUN_FLAGS)
set -uo pipefail
BIN=${1:?bin dir with braid-bench}
OUTD=${2:?output dir}
STEPS=${3:-15}
mkdir -p "$OUTD"
RES=$OUTD/scaling.jsonl
: > "$RES"
for row in "gpt2-350m 16" "gpt2-1.5b 8"; do
  set -- $row
  preset=$1 b=$2
  common=(--preset "$preset" --device cuda --attention cudnn --bench-steps "$STEPS" --warmup 3 --label "$preset" --json "$RES")
  run() {  # NP ARGS...
    local np=$1; shift
    timeout 240 mpirun ${MPIRUN_FLAGS:-} -np "$np" "$BIN/braid-bench" "${common[@]}" "$@" 2>&1 | tee -a "$OUTD/scaling.log" |
      grep -E "^braid-bench|error" | cut -c1-250
  }
  run 1 --micro-batch "$b" --grad-accum 1
  run 2 --micro-batch "$b" --grad-accum 1                     # DP2
  run 2 --micro-batch "$b" --grad-accum 1 --zero 1            # DP2 ZeRO-1
  run 2 --micro-batch "$b" --grad-accum 1 --tp 2              # TP2
  run 2 --micro-batch "$b" --grad-accum 1 --tp 2 --sequence-parallel
  run 2 --micro-batch $((b / 2)) --grad-accum 8 --pp 2 --schedule 1f1b
done
python3 - "$RES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
one = {r["label"]: r["tokens_per_s"] for r in rows if r["gpus"] == 1}
print("| model | layout | GPUs | micro-batch x accum | tok/s | tok/s per GPU | per-GPU efficiency | MFU per GPU | peak memory GiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    eff = r["tokens_per_s_per_gpu"] / one[r["label"]] if r["label"] in one else float("nan")
    print("| %s | %s | %d | %d x %d | %.0f | %.0f | %.0f%% | %.1f%% | %.1f |" % (r["label"], r["layout"], r["gpus"],
          r["micro_batch"], r["grad_accum"], r["tokens_per_s"], r["tokens_per_s_per_gpu"], 100 * eff, 100 * r["mfu"],
          r["peak_allocator_gib"]))
PY
