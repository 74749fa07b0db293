// The bias gradient of a linear layer, dbias[OC] += sum_n dout[n, :], as a deterministic
// two-pass column sum: block (64-column tile, chunk of kChunkRows rows) sums its rows (8
// warps stride over them; each lane owns two adjacent columns, read as one bf16 pair), adds
// the 8 warp sums in order and writes one partial per (chunk, column); column_finalize adds
// the partials in chunk order.
#include "ops/cuda/column_reduce.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr int kChunkRows = 256;

__global__ void __launch_bounds__(256)
bias_partials_kernel(float* partial, const bf16* dout, int64_t N, int OC) {
  __shared__ float s[8][65];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 64 + 2 * tx;
  const int64_t chunk = blockIdx.y;
  const int64_t end = min(N, (chunk + 1) * kChunkRows);
  float a0 = 0.f, a1 = 0.f;
  const bool pair = (OC % 2 == 0);  // then (row, c) pairs are 4-byte aligned
  for (int64_t n = chunk * kChunkRows + ty; n < end; n += 8) {
    const bf16* row = dout + n * OC;
    if (pair && c + 1 < OC) {
      const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(row + c);
      a0 += __low2float(v);
      a1 += __high2float(v);
    } else {
      if (c < OC) a0 += to_float(row[c]);
      if (c + 1 < OC) a1 += to_float(row[c + 1]);
    }
  }
  s[ty][2 * tx] = a0;
  s[ty][2 * tx + 1] = a1;
  __syncthreads();
  if (ty == 0) {
    for (int k = 0; k < 2; ++k) {
      const int cc = c + k;
      if (cc >= OC) continue;
      float t = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) t += s[w][2 * tx + k];
      partial[chunk * OC + cc] = t;
    }
  }
}

int64_t chunks(int64_t N) { return ceil_div(N, kChunkRows); }

}  // namespace

size_t bias_backward_scratch_bytes(int64_t N, int OC) {
  return size_t(chunks(N)) * size_t(OC) * sizeof(float);
}

void bias_backward(float* dbias, void* scratch, const bf16* dout, int64_t N, int OC,
                   cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  BRAID_CHECK(scratch != nullptr, "bias_backward needs scratch (bias_backward_scratch_bytes)");
  BRAID_CHECK(chunks(N) <= 65535, "bias_backward: " << N << " rows is more than supported");
  float* partial = static_cast<float*>(scratch);
  const dim3 grid(unsigned(ceil_div(OC, 64)), unsigned(chunks(N)));
  bias_partials_kernel<<<grid, dim3(32, 8), 0, stream>>>(partial, dout, N, OC);
  BRAID_CHECK_LAUNCH();
  column_finalize(dbias, nullptr, OC, partial, chunks(N), OC, stream);
}

}  // namespace braid::cuda
