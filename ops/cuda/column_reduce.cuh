// Deterministic column sums over rows, shared by the bias gradient and the LayerNorm weight
// gradients: dst[c] += sum_n f(n, c), in two passes with no atomics. Pass one writes
// per-block partial sums [num_partials, cols] (how they are formed is the caller's kernel);
// pass two, column_finalize, adds them in a fixed order: block (32 columns) with 32 row
// groups, group ty sums partial rows ty, ty + 32, ... in order, then the 32 group sums are
// added in order. Block and group counts depend on the problem shape only, so the result is
// the same on every device and every run.
#pragma once
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {

// The destinations of the column sums: columns [i * width, (i + 1) * width) go to d[i]
// (a null one is skipped), overwritten where bit i of `overwrite` is set, else added to.
struct ColumnDsts {
  float* d[3];
  int width;
  unsigned overwrite;
};

// dst(c) += sum_r partial[r * cols + c] for c < cols.
// static: this header is included by several translation units.
static __global__ void __launch_bounds__(1024)
column_finalize_kernel(ColumnDsts dst, const float* partial, int64_t rows, int cols) {
  __shared__ float s[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  float acc = 0.f;
  if (c < cols)
    for (int64_t r = ty; r < rows; r += 32) acc += partial[r * cols + c];
  s[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < cols) {
    float total = 0.f;
#pragma unroll
    for (int k = 0; k < 32; ++k) total += s[k][tx];
    const int i = c / dst.width, j = c - i * dst.width;
    float* d = i < 3 ? dst.d[i] : nullptr;
    if (d) d[j] = (dst.overwrite >> i) & 1u ? total : d[j] + total;
  }
}

inline void column_finalize(const ColumnDsts& dst, const float* partial, int64_t rows, int cols,
                            cudaStream_t stream) {
  column_finalize_kernel<<<unsigned(ceil_div(cols, 32)), dim3(32, 32), 0, stream>>>(dst, partial, rows, cols);
  BRAID_CHECK_LAUNCH();
}
// One destination of `cols` columns.
inline void column_finalize(float* dst, const float* partial, int64_t rows, int cols, cudaStream_t stream,
                            bool overwrite = false) {
  column_finalize(ColumnDsts{{dst, nullptr, nullptr}, cols, overwrite ? 1u : 0u}, partial, rows, cols, stream);
}

}  // namespace braid::cuda
