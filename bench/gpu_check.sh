#!/usr/bin/env bash
# One GPU, one call (under 10 minutes on an H200): the CUDA op tests, the one-GPU training
# tests, and the per-kernel figures at the 124M and 1.5B shapes. Logs under OUT_DIR.
#   bench/gpu_check.sh BIN_DIR OUT_DIR       (BIN_DIR: test_cuda_ops, test_cuda_training,
#                                             bench_kernels; run under the GPU host's env)
set -uo pipefail
BIN=${1:?bin dir}
OUTD=${2:?output dir}
mkdir -p "$OUTD"
t0=$SECONDS
echo "=== test_cuda_ops"
timeout 180 "$BIN/test_cuda_ops" >"$OUTD/cuda_ops.log" 2>&1
echo "rc=$? $((SECONDS - t0))s"
grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]|info \]" "$OUTD/cuda_ops.log" | head -30
echo "=== test_cuda_training (one rank)"
timeout 240 mpirun ${MPIRUN_FLAGS:-} -np 1 "$BIN/test_cuda_training" >"$OUTD/cuda_training.log" 2>&1
echo "rc=$? $((SECONDS - t0))s"
grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]" "$OUTD/cuda_training.log" | head -20
for shape in 124m 1.5b; do
  echo "=== bench_kernels --shape $shape"
  timeout 120 "$BIN/bench_kernels" --shape "$shape" >"$OUTD/kernels_$shape.log" 2>&1
  echo "rc=$? $((SECONDS - t0))s"
  cat "$OUTD/kernels_$shape.log"
done
echo "total $((SECONDS - t0))s"
