#!/usr/bin/env bash
# Issue table, one GPU: Braid (braid-bench, both attention kernels; and cuDNN without the
# memory options) beside PyTorch eager and
# torch.compile (bench/torch_reference.py), GPT-2 124M/350M (B=16) and 1.5B (B=8), T=1024,
# measured in one run on the same GPU. Writes RESULTS (JSON lines) and prints a Markdown table.
#   [PRESETS="gpt2-124m:16 ..."] bench/run_speed_table.sh BIN_DIR OUT_DIR [STEPS]
set -uo pipefail
BIN=${1:?bin dir with braid-bench}
OUTD=${2:?output dir}
STEPS=${3:-20}
mkdir -p "$OUTD"
RES=$OUTD/speed.jsonl
touch "$RES"  # appended to: rows of several calls make one table
HERE=$(cd "$(dirname "$0")" && pwd)
# PRESETS (env) picks rows, e.g. PRESETS="gpt2-1.5b:8" for one call under a 10-minute limit.
for row in ${PRESETS:-gpt2-124m:16 gpt2-350m:16 gpt2-1.5b:8}; do
  row=${row/:/ }
  set -- $row
  preset=$1 b=$2
  # Both attention kernels with the defaults, then cuDNN storing every activation and the
  # whole logits (what the memory options cost or save).
  # ROWS (env, ';'-separated option sets) replaces these, e.g. ROWS="--attention cudnn".
  IFS=';' read -r -a row_opts <<<"${ROWS:---attention cudnn;--attention braid;--attention cudnn --recompute none --loss-chunk-mib 0;--attention cudnn --gemm-algos heuristic;--attention cudnn --optimizer-overlap-sms 16}"
  for opts in "${row_opts[@]}"; do
    timeout 300 "$BIN/braid-bench" --preset "$preset" --device cuda $opts --micro-batch "$b" \
      --grad-accum 1 --bench-steps "$STEPS" --label "$preset" --json "$RES" 2>&1 | tee -a "$OUTD/speed.log" | grep -E "^braid-bench|error"
  done
  timeout 300 python3 "$HERE/torch_reference.py" --preset "$preset" --batch "$b" --steps "$STEPS" --json "$RES" 2>&1 |
    tee -a "$OUTD/speed.log" | grep -E "^torch-reference|Error"
  timeout 400 python3 "$HERE/torch_reference.py" --preset "$preset" --batch "$b" --steps "$STEPS" --compile --json "$RES" 2>&1 |
    tee -a "$OUTD/speed.log" | grep -E "^torch-reference|Error"
done
python3 - "$RES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| model | B | run | tok/s | ms/step | MFU | HFU | peak memory GiB |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    name = r["layout"] if "torch" in r["layout"] else "Braid, %s attention, recompute %s, loss chunk %g MiB%s" % (
        r.get("attention", "?"), r.get("recompute", "?"), r.get("loss_chunk_mib", -1),
        ", GEMMs autotuned" if r.get("gemm_autotune") else ", GEMMs heuristic") + (
        (", AdamW beside the forward on %d SMs" % r["optimizer_overlap_sms"] + (
            ", GEMMs limited for %g of the forward" % r["optimizer_overlap_gemm_limit"]
            if r.get("optimizer_overlap_gemm_limit", 1) < 1 else "")) if r.get("optimizer_overlap_sms", 0) > 0 else
        ", AdamW beside the forward at low priority" if r.get("optimizer_overlap_sms", 0) < 0 else "")
    print("| %s | %d | %s | %.0f | %.1f | %.1f%% | %.1f%% | %.1f |" % (r["label"], r["micro_batch"], name, r["tokens_per_s"],
          r["ms_median"], 100 * r["mfu"], 100 * r["hfu"], r["peak_allocator_gib"]))
PY
