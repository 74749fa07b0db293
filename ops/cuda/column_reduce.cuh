// Deterministic column sums over rows, shared by the bias gradient and the LayerNorm weight
// gradients: dst[c] += sum_n f(n, c). Pass one: the rows are cut into chunks of
// kColumnChunkRows; block (column tile, chunk) sums its chunk's rows for 32 columns (8 warps
// stride over the rows, then the 8 partial sums are added in warp order) and writes one
// partial per (chunk, column). Pass two: one thread per column adds the partials in chunk
// order and adds the total into dst. The chunking depends on N only, so the result is the
// same on every device and every run, with no atomics.
#pragma once
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {

constexpr int kColumnChunkRows = 256;
inline int64_t column_chunks(int64_t N) { return ceil_div(N, kColumnChunkRows); }

// Partial sums of dout (into partial_db) and, when kWithXhat, of xhat * dout with
// xhat = (inp - mean[n]) * rstd[n] (into partial_dw). Partials are [chunks, C].
template <bool kWithXhat>
__global__ void __launch_bounds__(256)
column_partials_kernel(float* partial_db, float* partial_dw, const bf16* dout, const bf16* inp,
                       const float* mean, const float* rstd, int64_t N, int C) {
  __shared__ float s_db[8][33];
  __shared__ float s_dw[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t r_end = min(N, (chunk + 1) * kColumnChunkRows);
  float db = 0.f, dw = 0.f;
  if (c < C) {
    for (int64_t n = chunk * kColumnChunkRows + ty; n < r_end; n += 8) {
      const float g = to_float(dout[n * C + c]);
      db += g;
      if (kWithXhat) dw += (to_float(inp[n * C + c]) - mean[n]) * rstd[n] * g;
    }
  }
  s_db[ty][tx] = db;
  s_dw[ty][tx] = dw;
  __syncthreads();
  if (ty == 0 && c < C) {
    float sdb = 0.f, sdw = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      sdb += s_db[k][tx];
      sdw += s_dw[k][tx];
    }
    if (partial_db) partial_db[chunk * C + c] = sdb;
    if (kWithXhat && partial_dw) partial_dw[chunk * C + c] = sdw;
  }
}

// static: this header is included by several translation units.
static __global__ void column_finalize_kernel(float* dst, const float* partial, int64_t chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * C + c];
  dst[c] += s;
}

// Launches both passes. partial_db / partial_dw are [column_chunks(N), C] scratch; a null
// destination skips its sum.
template <bool kWithXhat>
inline void column_sums(float* db, float* dw, float* partial_db, float* partial_dw,
                        const bf16* dout, const bf16* inp, const float* mean, const float* rstd,
                        int64_t N, int C, cudaStream_t stream) {
  const int64_t chunks = column_chunks(N);
  BRAID_CHECK(chunks <= 65535, "column_sums: " << N << " rows is more than supported");
  const dim3 grid(unsigned(ceil_div(C, 32)), unsigned(chunks));
  column_partials_kernel<kWithXhat><<<grid, dim3(32, 8), 0, stream>>>(
      db ? partial_db : nullptr, dw ? partial_dw : nullptr, dout, inp, mean, rstd, N, C);
  BRAID_CHECK_LAUNCH();
  const unsigned blocks = unsigned(ceil_div(C, 256));
  if (db) {
    column_finalize_kernel<<<blocks, 256, 0, stream>>>(db, partial_db, chunks, C);
    BRAID_CHECK_LAUNCH();
  }
  if (kWithXhat && dw) {
    column_finalize_kernel<<<blocks, 256, 0, stream>>>(dw, partial_dw, chunks, C);
    BRAID_CHECK_LAUNCH();
  }
}

}  // namespace braid::cuda
