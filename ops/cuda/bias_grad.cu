// The bias gradient of a linear layer, dbias[OC] += sum_n dout[n, :], as a deterministic
// two-pass column sum: a block sums a tile of columns over a chunk of rows (8 warps stride
// over them), adds the 8 warp sums in order and writes one partial per (chunk, column);
// column_finalize adds the partials in chunk order.
// - 16-byte path (OC % 8 == 0, aligned dout: every linear layer): 256-column tiles, each
//   lane owns 8 adjacent columns read as one 16-byte vector, and a chunk is 256 rows, so a
//   lane's rows are loaded 8 at a time before they are added (the pair path below waits
//   for memory once per row: 37-43% of the copy bandwidth measured).
// - pair path: 64-column tiles, each lane owns two adjacent columns (one bf16 pair).
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

// 256 rows per block: each warp row ty adds rows ty, ty + 8, ... (32 of them) in order, in
// 4 batches of 8 16-byte loads, the next batch loaded before the current one is added.
// (64-row blocks, one batch each, measured 57-70% of copy at 1.5B: short blocks, a tail
// wave, and 4x the partial rows for column_finalize.)
constexpr int kVecChunkRows = 256;
constexpr int kVecBatch = 8;
constexpr int kVecBatches = kVecChunkRows / 8 / kVecBatch;
__global__ void __launch_bounds__(256)
bias_partials_vec_kernel(float* partial, const bf16* dout, int64_t N, int OC) {
  __shared__ float s[8][257];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c0 = blockIdx.y * 256 + 8 * tx;  // chunks on x (up to 2^31 - 1), tiles on y
  const int64_t chunk = blockIdx.x;
  const int64_t first = chunk * kVecChunkRows + ty;  // this warp row's first row
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c0 < OC) {
    auto load = [&](uint4 (&raw)[kVecBatch], int batch) {
#pragma unroll
      for (int j = 0; j < kVecBatch; ++j) {
        const int64_t n = first + 8 * (batch * kVecBatch + j);
        if (n < N) raw[j] = *reinterpret_cast<const uint4*>(dout + n * OC + c0);
      }
    };
    uint4 cur[kVecBatch], next[kVecBatch];
    load(cur, 0);
#pragma unroll
    for (int batch = 0; batch < kVecBatches; ++batch) {
      if (batch + 1 < kVecBatches) load(next, batch + 1);
#pragma unroll
      for (int j = 0; j < kVecBatch; ++j) {
        if (first + 8 * (batch * kVecBatch + j) >= N) break;
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&cur[j]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float2 f = __bfloat1622float2(h[k]);
          acc[2 * k] += f.x;
          acc[2 * k + 1] += f.y;
        }
      }
      if (batch + 1 < kVecBatches) {
#pragma unroll
        for (int j = 0; j < kVecBatch; ++j) cur[j] = next[j];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) s[ty][8 * tx + k] = acc[k];
  __syncthreads();
  const int t = ty * 32 + tx;  // 256 threads, one column of the tile each
  const int c = blockIdx.y * 256 + t;
  if (c < OC) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < 8; ++w) total += s[w][t];
    partial[chunk * OC + c] = total;
  }
}

bool vec_path(const bf16* dout, int OC) { return OC % 8 == 0 && aligned16(dout); }
int64_t partial_rows(const bf16* dout, int64_t N, int OC) {
  return vec_path(dout, OC) ? ceil_div(N, kVecChunkRows) : chunks(N);
}

}  // namespace

size_t bias_backward_scratch_bytes(int64_t N, int OC) {  // the larger of the two paths
  return size_t(ceil_div(N, kVecChunkRows)) * size_t(OC) * sizeof(float);
}

void bias_backward(float* dbias, void* scratch, const bf16* dout, int64_t N, int OC,
                   cudaStream_t stream, bool overwrite) {
  if (N == 0 || OC == 0) {  // a sum over no rows: an overwrite writes zeros
    if (overwrite && OC > 0) BRAID_CHECK_CUDA(cudaMemsetAsync(dbias, 0, size_t(OC) * sizeof(float), stream));
    return;
  }
  BRAID_CHECK(scratch != nullptr, "bias_backward needs scratch (bias_backward_scratch_bytes)");
  float* partial = static_cast<float*>(scratch);
  const int64_t rows = partial_rows(dout, N, OC);
  if (vec_path(dout, OC)) {
    const dim3 grid(unsigned(rows), unsigned(ceil_div(OC, 256)));
    bias_partials_vec_kernel<<<grid, dim3(32, 8), 0, stream>>>(partial, dout, N, OC);
  } else {
    BRAID_CHECK(rows <= 65535, "bias_backward: " << N << " rows is more than supported");
    const dim3 grid(unsigned(ceil_div(OC, 64)), unsigned(rows));
    bias_partials_kernel<<<grid, dim3(32, 8), 0, stream>>>(partial, dout, N, OC);
  }
  BRAID_CHECK_LAUNCH();
  column_finalize(dbias, partial, rows, OC, stream, overwrite);
}

}  // namespace braid::cuda
