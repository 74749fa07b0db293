#!/usr/bin/env bash
# One GPU, one call (the timeouts add up to 580 s, under the 10-minute limit): the CUDA op
# tests, the one-GPU training tests, the layout suite with 8 ranks sharing the GPU (MPI data
# plane; ~130 s), and the per-kernel figures at the 124M and 1.5B shapes. Logs under OUT_DIR.
#   bench/gpu_check.sh BIN_DIR OUT_DIR       (BIN_DIR: test_cuda_ops, test_cuda_training,
#                                             test_layouts, bench_kernels; run under the
#                                             GPU host's env)
set -uo pipefail
BIN=${1:?bin dir}
OUTD=${2:?output dir}
mkdir -p "$OUTD"
t0=$SECONDS
echo "=== test_cuda_ops"
timeout 90 "$BIN/test_cuda_ops" >"$OUTD/cuda_ops.log" 2>&1
echo "rc=$? $((SECONDS - t0))s"
sed 's/\x1b\[[0-9;]*m//g' "$OUTD/cuda_ops.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]|info \]" | head -30
echo "=== test_cuda_training (one rank)"
timeout 150 mpirun ${MPIRUN_FLAGS:-} -np 1 "$BIN/test_cuda_training" >"$OUTD/cuda_training.log" 2>&1
echo "rc=$? $((SECONDS - t0))s"
sed 's/\x1b\[[0-9;]*m//g' "$OUTD/cuda_training.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]" | head -20
echo "=== test_layouts, 8 ranks on one GPU"
BRAID_TEST_DEVICE=cuda timeout 220 mpirun ${MPIRUN_FLAGS:-} --oversubscribe -np 8 "$BIN/test_layouts" \
  >"$OUTD/layouts.log" 2>&1
echo "rc=$? $((SECONDS - t0))s"
sed 's/\x1b\[[0-9;]*m//g' "$OUTD/layouts.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]" | sort | uniq -c
for shape in 124m 1.5b; do
  echo "=== bench_kernels --shape $shape"
  timeout 60 "$BIN/bench_kernels" --shape "$shape" >"$OUTD/kernels_$shape.log" 2>&1
  echo "rc=$? $((SECONDS - t0))s"
  cat "$OUTD/kernels_$shape.log"
done
echo "total $((SECONDS - t0))s"
