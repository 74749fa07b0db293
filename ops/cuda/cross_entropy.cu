// Vocab-parallel softmax cross-entropy on CUDA over bf16 logits, in the pieces of the CPU
// op (ops/cpu/cross_entropy.cpp): the tensor-parallel layer all-reduces the row max, then
// the row sum of exponentials, then the target logit, between these launches. One block
// per row; statistics in fp32, block reductions in a fixed order (deterministic). Rows are
// read with 16-byte loads when the row length allows (Vl a multiple of 8, as the padded
// GPT-2 vocabulary 50304 is).
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/ops.h"

namespace braid::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int32_t kIgnore = cpu::kIgnoreIndex;

// exp of a logit minus a row maximum (x <= 0, or -inf): the hardware's ex2.approx on
// x * log2(e) (__expf), two instructions instead of expf's accurate range reduction. The
// one-pass max and sum of exponentials was bound by expf (56% of the copy bandwidth at
// 0.69 ms for the 124M logits against 0.39 ms to read them); __expf's error, a few fp32
// ulps, is far below the bf16 logits' own rounding. exp(-inf) is still 0.
__device__ __forceinline__ float softmax_exp(float x) { return __expf(x); }

// Number of real (non-padding) columns of this shard, as the CPU op's local_real.
__host__ __device__ inline int local_real(int Vl, int64_t vocab_start, int64_t vocab_real) {
  const int64_t r = vocab_real - vocab_start;
  if (r < 0) return 0;
  return r < Vl ? int(r) : Vl;
}

// Calls f(v, logit) for v in [0, R) of the row, each column by one thread of the block.
template <class F>
__device__ __forceinline__ void for_each_logit(const bf16* row, int Vl, int R, F&& f) {
  if ((Vl & 7) == 0 && (reinterpret_cast<uintptr_t>(row) & 15) == 0) {
    for (int v0 = threadIdx.x * 8; v0 < R; v0 += blockDim.x * 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + v0);
      const bf16* x = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (v0 + k < R) f(v0 + k, to_float(x[k]));
    }
  } else {
    for (int v = threadIdx.x; v < R; v += blockDim.x) f(v, to_float(row[v]));
  }
}

__global__ void __launch_bounds__(kThreads)
local_max_kernel(float* row_max, const bf16* logits, int Vl, int R) {
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  float m = -INFINITY;
  for_each_logit(logits + n * Vl, Vl, R, [&](int, float x) { m = fmaxf(m, x); });
  m = block_max(m, shared);
  if (threadIdx.x == 0) row_max[n] = m;
}

__global__ void __launch_bounds__(kThreads)
local_sumexp_kernel(float* row_sum, const bf16* logits, const float* row_max, int Vl, int R) {
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  const float m = row_max[n];
  float s = 0.f;
  for_each_logit(logits + n * Vl, Vl, R, [&](int, float x) { s += softmax_exp(x - m); });
  s = block_sum(s, shared);
  if (threadIdx.x == 0) row_sum[n] = s;
}

// Max and sum of exponentials in one pass (online softmax): each thread keeps (m, s) with s
// the sum of exp(x - m) over its elements, taking a vector's 8 values at a time (one
// rescale per vector, not per element); the block then takes M = max m and sums
// s * exp(m - M) in a fixed order. Saves the max kernel's read of the logits. Every thread
// returns the row's (M, S).
__device__ __forceinline__ void stats_vec(const uint4& raw, int v0, int R, float& m, float& s) {
  const bf16* x = reinterpret_cast<const bf16*>(&raw);
  float vm = -INFINITY;
#pragma unroll
  for (int k = 0; k < 8; ++k)
    if (v0 + k < R) vm = fmaxf(vm, to_float(x[k]));
  if (vm > m) {
    s = __fmul_rn(s, softmax_exp(m - vm));  // m = -inf: s is 0, and stays 0; never contracted with the sum below
    m = vm;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k)
    if (v0 + k < R) s += softmax_exp(to_float(x[k]) - m);
}
// The block's (M, S) from each thread's (m, s); every thread returns them.
__device__ __forceinline__ void combine_stats(float m, float s, float* shared, float& M, float& S) {
  M = block_max(m, shared);
  s = m == -INFINITY ? 0.f : s * softmax_exp(m - M);
  S = block_sum(s, shared);
}
__device__ __forceinline__ void row_stats(const bf16* row, int Vl, int R, float* shared, float& M, float& S) {
  float m = -INFINITY, s = 0.f;
  if ((Vl & 7) == 0 && (reinterpret_cast<uintptr_t>(row) & 15) == 0) {
    for (int v0 = threadIdx.x * 8; v0 < R; v0 += blockDim.x * 8)
      stats_vec(*reinterpret_cast<const uint4*>(row + v0), v0, R, m, s);
  } else {
    for (int v = threadIdx.x; v < R; v += blockDim.x) {
      const float x = to_float(row[v]);
      if (x > m) {
        s = __fmul_rn(s, softmax_exp(m - x));
        m = x;
      }
      s += softmax_exp(x - m);
    }
  }
  combine_stats(m, s, shared, M, S);
}

__global__ void __launch_bounds__(kThreads)
local_stats_kernel(float* row_max, float* row_sum, const bf16* logits, int Vl, int R) {
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  float M, S;
  row_stats(logits + n * Vl, Vl, R, shared, M, S);
  if (threadIdx.x == 0) {
    row_max[n] = M;
    row_sum[n] = S;
  }
}

// A shard's sum of exp(x - local max) onto the global max: sum *= exp(local - global).
__global__ void rescale_sum_kernel(float* row_sum, const float* local_max, const float* global_max, int64_t N) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  row_sum[n] = local_max[n] == -INFINITY ? 0.f : row_sum[n] * softmax_exp(local_max[n] - global_max[n]);
}

__global__ void target_logit_kernel(float* target_logit, const bf16* logits,
                                    const int32_t* targets, int64_t N, int Vl,
                                    int64_t vocab_start) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int64_t v = int64_t(targets[n]) - vocab_start;
  const bool owned = targets[n] != kIgnore && v >= 0 && v < Vl;
  target_logit[n] = owned ? to_float(logits[n * Vl + v]) : 0.f;
}

// A row's loss from its statistics and target logit (0 for an ignored row).
__device__ __forceinline__ float row_loss(int32_t target, float row_max, float row_sum, float target_logit) {
  return target == kIgnore ? 0.f : logf(row_sum) + row_max - target_logit;
}
// The fused kernels' end of the statistics: thread 0 writes the row's max, sum and loss.
// tlogit is thread 0's read of the target logit, made before the block's first reduction,
// so before any in-place write of the row.
__device__ __forceinline__ void write_row_stats(float* losses, float* row_max, float* row_sum, int64_t n,
                                                int32_t target, float M, float S, float tlogit) {
  if (threadIdx.x != 0) return;
  row_max[n] = M;
  row_sum[n] = S;
  losses[n] = row_loss(target, M, S, tlogit);
}
__device__ __forceinline__ float first_thread_target_logit(const bf16* row, int32_t target, int Vl) {
  return threadIdx.x == 0 && target != kIgnore && target >= 0 && target < Vl ? to_float(row[target]) : 0.f;
}

__global__ void losses_kernel(float* losses, const float* row_max, const float* row_sum,
                              const float* target_logit, const int32_t* targets, int64_t N) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  losses[n] = row_loss(targets[n], row_max[n], row_sum[n], target_logit[n]);
}

// Eight dlogits of a row (columns v0..v0+7) from their logits; inv = 1 / the row's sum.
__device__ __forceinline__ uint4 backward_vec(const uint4& raw, int v0, int R, int64_t tv, float m, float inv,
                                              float dloss_scale) {
  const bf16* x = reinterpret_cast<const bf16*>(&raw);
  uint4 res;
  bf16* y = reinterpret_cast<bf16*>(&res);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int v = v0 + k;
    const float p = __fmul_rn(softmax_exp(to_float(x[k]) - m), inv);  // never contracted into p - 1
    y[k] = to_bf16(v < R ? (p - (v == tv ? 1.f : 0.f)) * dloss_scale : 0.f);
  }
  return res;
}

// One row's dlogits from its statistics. Every element is read and written by the same
// thread, so d may alias l.
__device__ __forceinline__ void row_backward(bf16* d, const bf16* l, int32_t target, float m, float sum, int Vl,
                                             int R, int64_t vocab_start, float dloss_scale) {
  if (target == kIgnore) {
    for (int v = threadIdx.x; v < Vl; v += blockDim.x) d[v] = to_bf16(0.f);
    return;
  }
  const float inv = 1.f / sum;
  const int64_t tv = int64_t(target) - vocab_start;
  if ((Vl & 7) == 0 && (reinterpret_cast<uintptr_t>(l) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(d) & 15) == 0) {
    for (int v0 = threadIdx.x * 8; v0 < Vl; v0 += blockDim.x * 8)
      *reinterpret_cast<uint4*>(d + v0) = backward_vec(*reinterpret_cast<const uint4*>(l + v0), v0, R, tv, m, inv,
                                                       dloss_scale);
  } else {
    for (int v = threadIdx.x; v < Vl; v += blockDim.x) {
      const float p = __fmul_rn(softmax_exp(to_float(l[v]) - m), inv);
      d[v] = to_bf16(v < R ? (p - (v == tv ? 1.f : 0.f)) * dloss_scale : 0.f);
    }
  }
}

__global__ void __launch_bounds__(kThreads)
backward_kernel(bf16* dlogits, const bf16* logits, const int32_t* targets, const float* row_max,
                const float* row_sum, int Vl, int R, int64_t vocab_start, float dloss_scale) {
  const int64_t n = blockIdx.x;
  row_backward(dlogits + n * Vl, logits + n * Vl, targets[n], row_max[n], row_sum[n], Vl, R, vocab_start,
               dloss_scale);
}

// The unsharded vocabulary in one kernel: a row's statistics, its loss, then its dlogits.
// The second read of the row follows the first within the block, so it comes from L2
// (132 rows of 100 KB in flight at 124M): one DRAM read of the logits instead of two. The
// same per-thread partition and formulas as local_stats_kernel, losses_kernel and
// backward_kernel, so the same bits. The target logit is read before any thread of the
// block overwrites the row (in place: the block's reductions separate the two).
__global__ void __launch_bounds__(kThreads)
fused_kernel(float* losses, float* row_max, float* row_sum, bf16* dlogits, const bf16* logits,
             const int32_t* targets, int Vl, int R, float dloss_scale) {
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  const bf16* row = logits + n * Vl;
  const int32_t target = targets[n];
  const float tlogit = first_thread_target_logit(row, target, Vl);
  float M, S;
  row_stats(row, Vl, R, shared, M, S);
  write_row_stats(losses, row_max, row_sum, n, target, M, S, tlogit);
  if (dlogits) row_backward(dlogits + n * Vl, row, target, M, S, Vl, R, 0, dloss_scale);
}

// The same with the row kept in shared memory (Vl a multiple of 8, 16-byte aligned rows,
// 2 Vl bytes of shared memory: two blocks per SM at the GPT-2 vocabulary, one block's
// backward beside the other's loads): one DRAM read and no second read at all. The
// L2 form above reached only 67% of the copy bandwidth (about 53 MB of rows in flight
// against 50 MB of L2). Each thread reads back the vectors it stored, so no barrier
// guards the row; the same partition and formulas, so the same bits.
__global__ void __launch_bounds__(kThreads, 2)
fused_smem_kernel(float* losses, float* row_max, float* row_sum, bf16* dlogits, const bf16* logits,
                  const int32_t* targets, int Vl, int R, float dloss_scale) {
  extern __shared__ uint4 srow[];
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  const uint4* row = reinterpret_cast<const uint4*>(logits + n * Vl);
  const int32_t target = targets[n];
  const float tlogit = first_thread_target_logit(logits + n * Vl, target, Vl);
  float m = -INFINITY, s = 0.f;
#pragma unroll 4
  for (int q = threadIdx.x; q * 8 < R; q += blockDim.x) {
    const uint4 raw = row[q];
    srow[q] = raw;
    stats_vec(raw, q * 8, R, m, s);
  }
  float M, S;
  combine_stats(m, s, shared, M, S);
  write_row_stats(losses, row_max, row_sum, n, target, M, S, tlogit);
  if (!dlogits) return;
  uint4* d = reinterpret_cast<uint4*>(dlogits + n * Vl);
  const uint4 zero = make_uint4(0, 0, 0, 0);  // bf16 +0
  if (target == kIgnore) {
    for (int q = threadIdx.x; q * 8 < Vl; q += blockDim.x) d[q] = zero;
    return;
  }
  const float inv = 1.f / S;
#pragma unroll 4
  for (int q = threadIdx.x; q * 8 < Vl; q += blockDim.x)
    d[q] = q * 8 < R ? backward_vec(srow[q], q * 8, R, target, M, inv, dloss_scale) : zero;
}

}  // namespace

void xent_local_max(float* row_max, const bf16* logits, int64_t N, int Vl, int64_t vocab_start,
                    int64_t vocab_real, cudaStream_t stream) {
  if (N == 0) return;
  local_max_kernel<<<unsigned(N), kThreads, 0, stream>>>(row_max, logits, Vl,
                                                         local_real(Vl, vocab_start, vocab_real));
  BRAID_CHECK_LAUNCH();
}

void xent_local_sumexp(float* row_sum, const bf16* logits, const float* row_max, int64_t N,
                       int Vl, int64_t vocab_start, int64_t vocab_real, cudaStream_t stream) {
  if (N == 0) return;
  local_sumexp_kernel<<<unsigned(N), kThreads, 0, stream>>>(
      row_sum, logits, row_max, Vl, local_real(Vl, vocab_start, vocab_real));
  BRAID_CHECK_LAUNCH();
}

void xent_local_stats(float* row_max, float* row_sum, const bf16* logits, int64_t N, int Vl,
                      int64_t vocab_start, int64_t vocab_real, cudaStream_t stream) {
  if (N == 0) return;
  local_stats_kernel<<<unsigned(N), kThreads, 0, stream>>>(row_max, row_sum, logits, Vl,
                                                           local_real(Vl, vocab_start, vocab_real));
  BRAID_CHECK_LAUNCH();
}

void xent_rescale_sum(float* row_sum, const float* local_max, const float* global_max, int64_t N,
                      cudaStream_t stream) {
  if (N == 0) return;
  rescale_sum_kernel<<<unsigned(ceil_div(N, 256)), 256, 0, stream>>>(row_sum, local_max, global_max, N);
  BRAID_CHECK_LAUNCH();
}

void xent_target_logit(float* target_logit, const bf16* logits, const int32_t* targets,
                       int64_t N, int Vl, int64_t vocab_start, cudaStream_t stream) {
  if (N == 0) return;
  target_logit_kernel<<<unsigned(ceil_div(N, 256)), 256, 0, stream>>>(target_logit, logits,
                                                                      targets, N, Vl, vocab_start);
  BRAID_CHECK_LAUNCH();
}

void xent_losses(float* losses, const float* row_max, const float* row_sum,
                 const float* target_logit, const int32_t* targets, int64_t N,
                 cudaStream_t stream) {
  if (N == 0) return;
  losses_kernel<<<unsigned(ceil_div(N, 256)), 256, 0, stream>>>(losses, row_max, row_sum,
                                                                target_logit, targets, N);
  BRAID_CHECK_LAUNCH();
}

void xent_backward(bf16* dlogits, const bf16* logits, const int32_t* targets,
                   const float* row_max, const float* row_sum, int64_t N, int Vl,
                   int64_t vocab_start, int64_t vocab_real, float dloss_scale,
                   cudaStream_t stream) {
  if (N == 0) return;
  backward_kernel<<<unsigned(N), kThreads, 0, stream>>>(dlogits, logits, targets, row_max,
                                                        row_sum, Vl,
                                                        local_real(Vl, vocab_start, vocab_real),
                                                        vocab_start, dloss_scale);
  BRAID_CHECK_LAUNCH();
}

bool xent_fused_rows_in_shared_memory(int V) {
  static int device_max = -1;  // opt-in shared memory per block, less 1 KiB for the static arrays
  if (device_max < 0) {
    int dev = 0, v = 0;
    BRAID_CHECK_CUDA(cudaGetDevice(&dev));
    BRAID_CHECK_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    device_max = v - 1024;
  }
  return (V & 7) == 0 && size_t(V) * sizeof(bf16) <= size_t(device_max);
}

void xent_fused(float* losses, float* row_max, float* row_sum, bf16* dlogits, const bf16* logits,
                const int32_t* targets, int64_t N, int V, int64_t vocab_real, float dloss_scale,
                cudaStream_t stream) {
  if (N == 0) return;
  const int R = local_real(V, 0, vocab_real);
  const size_t smem = size_t(V) * sizeof(bf16);
  const bool aligned = (reinterpret_cast<uintptr_t>(logits) & 15) == 0 &&
                       (reinterpret_cast<uintptr_t>(dlogits) & 15) == 0;
  if (aligned && xent_fused_rows_in_shared_memory(V)) {
    static size_t attribute_set = 0;
    if (smem > attribute_set) {
      BRAID_CHECK_CUDA(cudaFuncSetAttribute(fused_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      attribute_set = smem;
    }
    fused_smem_kernel<<<unsigned(N), kThreads, smem, stream>>>(losses, row_max, row_sum, dlogits, logits, targets, V,
                                                                R, dloss_scale);
  } else {
    fused_kernel<<<unsigned(N), kThreads, 0, stream>>>(losses, row_max, row_sum, dlogits, logits, targets, V, R,
                                                       dloss_scale);
  }
  BRAID_CHECK_LAUNCH();
}

}  // namespace braid::cuda
