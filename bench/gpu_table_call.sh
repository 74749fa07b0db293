#!/usr/bin/env bash
# One GPU, one call under a 10-minute limit (about 300 s on an H100): the CUDA op tests and
# the one-GPU training tests (stops if either fails), the per-kernel figures at the 124M and
# 1.5B shapes, then issue 5's table: Braid (defaults and the best option under
# torch.compile's memory) beside torch.compile and eager PyTorch, every row in this run.
# The 1.5B torch.compile row gets whatever time is left of BUDGET_S (default 555 s).
#   bench/gpu_table_call.sh BIN_DIR OUT_DIR     (BIN_DIR: test_cuda_ops, test_cuda_training,
#                                               bench_kernels, braid-bench; run under the
#                                               GPU host's environment, MPIRUN_FLAGS set)
set -uo pipefail
BIN=${1:?bin dir}
O=${2:?output dir}
BUDGET_S=${BUDGET_S:-555}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$O"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader | tee "$O/gpu.txt"
t0=$SECONDS
S='s/\x1b\[[0-9;]*m//g'
timeout 60 "$BIN/test_cuda_ops" >"$O/cuda_ops.log" 2>&1; rc1=$?
echo "test_cuda_ops rc=$rc1 t=$((SECONDS - t0))"
sed "$S" "$O/cuda_ops.log" | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|Failure" -A3 | head -30
timeout 90 mpirun ${MPIRUN_FLAGS:-} -np 1 "$BIN/test_cuda_training" >"$O/cuda_training.log" 2>&1; rc2=$?
echo "test_cuda_training rc=$rc2 t=$((SECONDS - t0))"
sed "$S" "$O/cuda_training.log" | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|Failure" -A3 | head -20
if [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then echo "tests failed: no timings"; exit 1; fi
for shape in 124m 1.5b; do
  timeout 60 "$BIN/bench_kernels" --shape $shape >"$O/kernels_$shape.log" 2>&1
  echo "bench_kernels --shape $shape rc=$?"
done
RES=$O/speed.jsonl
row() {  # Braid: preset, micro-batch, timed steps, options
  local p=$1 b=$2 n=$3
  shift 3
  timeout 90 "$BIN/braid-bench" --preset "$p" --device cuda --attention cudnn --micro-batch "$b" --grad-accum 1 \
    --bench-steps "$n" --label "$p" --json "$RES" "$@" >>"$O/speed.log" 2>&1
  grep -E "^braid-bench|rror" "$O/speed.log" | tail -1
}
torch_row() {  # PyTorch: preset, batch, timed steps, time limit, options
  local p=$1 b=$2 n=$3 lim=$4
  shift 4
  timeout "$lim" python3 "$HERE/torch_reference.py" --preset "$p" --batch "$b" --steps "$n" --json "$RES" "$@" \
    >>"$O/speed.log" 2>&1
  echo "rc=$? $(grep -E "^torch-reference|Error" "$O/speed.log" | tail -1)"
}
row gpt2-124m 16 20; row gpt2-124m 16 20 --recompute none
row gpt2-350m 16 20; row gpt2-350m 16 20 --recompute none
row gpt2-1.5b 8 10; row gpt2-1.5b 8 10 --optimizer-overlap-sms 16
# ROW15: more options for one more 1.5B row (e.g. "--optimizer-overlap-sms 16 --recompute-num-layers 27")
[ -n "${ROW15:-}" ] && row gpt2-1.5b 8 10 $ROW15
torch_row gpt2-124m 16 20 70 --compile
torch_row gpt2-350m 16 20 90 --compile
torch_row gpt2-124m 16 20 40; torch_row gpt2-350m 16 20 50; torch_row gpt2-1.5b 8 10 60
left=$((BUDGET_S - (SECONDS - t0)))
echo "left for the 1.5B torch.compile row: $left s"
[ $left -gt 30 ] && torch_row gpt2-1.5b 8 10 $left --compile
echo "total $((SECONDS - t0)) s; rows in $RES"
