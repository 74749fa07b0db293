// Token embedding (vocab-parallel) and position embedding on CUDA. The backward passes are
// deterministic without atomics: the token gradient is summed per vocabulary row by one
// block, over the positions of that row in increasing order (a host-built grouping, see
// group_token_rows), and the position gradient by one thread per element, over b in order.
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(bf16* out, const int32_t* tokens, const float* wte,
                                         int64_t N, int C, int64_t vocab_start,
                                         int64_t vocab_count) {
  const int64_t total = N * C;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / C;
    const int c = int(i - n * C);
    const int64_t v = int64_t(tokens[n]) - vocab_start;
    out[i] = to_bf16(v >= 0 && v < vocab_count ? wte[v * C + c] : 0.f);
  }
}

// One block per occurring row; threads stride over channels. Each gradient element is read,
// added to in position order, and written once: the same sequence of fp32 additions as the
// CPU loop (dwte[v] += dout[n] for n ascending).
__global__ void embedding_backward_kernel(float* dwte, const bf16* dout, const int32_t* rows,
                                          const int32_t* offsets, const int32_t* positions,
                                          int C) {
  const int r = blockIdx.x;
  const int64_t row = rows[r];
  const int begin = offsets[r], end = offsets[r + 1];
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = dwte[row * C + c];
    for (int k = begin; k < end; ++k) acc += to_float(dout[int64_t(positions[k]) * C + c]);
    dwte[row * C + c] = acc;
  }
}

__global__ void position_forward_kernel(bf16* out, const float* wpe, int B, int T, int C,
                                        int pos_offset) {
  const int64_t total = int64_t(B) * T * C;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t tc = i % (int64_t(T) * C);  // t * C + c
    out[i] = to_bf16(to_float(out[i]) + wpe[int64_t(pos_offset) * C + tc]);
  }
}

// One thread per (t, c): sums over b in order, then adds into dwpe once.
__global__ void position_backward_kernel(float* dwpe, const bf16* dout, int B, int T, int C,
                                         int pos_offset) {
  const int64_t TC = int64_t(T) * C;
  for (int64_t tc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; tc < TC;
       tc += int64_t(gridDim.x) * blockDim.x) {
    float acc = dwpe[int64_t(pos_offset) * C + tc];
    for (int b = 0; b < B; ++b) acc += to_float(dout[b * TC + tc]);
    dwpe[int64_t(pos_offset) * C + tc] = acc;
  }
}

}  // namespace

void embedding_forward(bf16* out, const int32_t* tokens, const float* wte, int64_t N, int C,
                       int64_t vocab_start, int64_t vocab_count, cudaStream_t stream) {
  if (N == 0) return;
  embedding_forward_kernel<<<elementwise_blocks(N * C, kThreads), kThreads, 0, stream>>>(
      out, tokens, wte, N, C, vocab_start, vocab_count);
  BRAID_CHECK_LAUNCH();
}

TokenRows group_token_rows(const int32_t* tokens, int64_t N, int64_t vocab_start,
                           int64_t vocab_count) {
  // Counting sort by local row: stable, so positions inside a row stay increasing.
  std::vector<int32_t> count(size_t(vocab_count) + 1, 0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t v = int64_t(tokens[n]) - vocab_start;
    if (v >= 0 && v < vocab_count) ++count[size_t(v)];
  }
  TokenRows g;
  g.offsets.push_back(0);
  std::vector<int32_t> start(size_t(vocab_count), 0);
  int32_t total = 0;
  for (int64_t v = 0; v < vocab_count; ++v) {
    start[size_t(v)] = total;
    if (count[size_t(v)] == 0) continue;
    total += count[size_t(v)];
    g.rows.push_back(int32_t(v));
    g.offsets.push_back(total);
  }
  g.positions.resize(size_t(total));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t v = int64_t(tokens[n]) - vocab_start;
    if (v >= 0 && v < vocab_count) g.positions[size_t(start[size_t(v)]++)] = int32_t(n);
  }
  return g;
}

void embedding_backward(float* dwte, const bf16* dout, const int32_t* rows,
                        const int32_t* offsets, const int32_t* positions, int num_rows, int C,
                        cudaStream_t stream) {
  if (num_rows == 0) return;
  embedding_backward_kernel<<<num_rows, kThreads, 0, stream>>>(dwte, dout, rows, offsets,
                                                               positions, C);
  BRAID_CHECK_LAUNCH();
}

void position_forward(bf16* out, const float* wpe, int B, int T, int C, int pos_offset,
                      cudaStream_t stream) {
  const int64_t total = int64_t(B) * T * C;
  if (total == 0) return;
  position_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(
      out, wpe, B, T, C, pos_offset);
  BRAID_CHECK_LAUNCH();
}

void position_backward(float* dwpe, const bf16* dout, int B, int T, int C, int pos_offset,
                       cudaStream_t stream) {
  const int64_t total = int64_t(T) * C;
  if (total == 0) return;
  position_backward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(
      dwpe, dout, B, T, C, pos_offset);
  BRAID_CHECK_LAUNCH();
}

}  // namespace braid::cuda
