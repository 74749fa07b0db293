// AdamW over every parameter tensor in one launch, the global gradient norm, and the
// clipping factor, on CUDA.
//
// The tensors live in flat fp32 buffers (param, grad, m, v; a bf16 copy of param for the
// GEMMs). A segment table (device memory, sorted by offset, non-overlapping) says which
// ranges are parameters and which get weight decay. Block b owns the flat range
// [b * kChunk, (b + 1) * kChunk); it finds the first segment reaching into its range by
// binary search and walks the segments that overlap it, so gaps between segments (padding,
// tensors another rank updates) are left alone. The block count depends on `total` only.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;

// First segment whose end lies beyond `start`.
__device__ int first_segment(const ParamSegment* seg, int num_segments, int64_t start) {
  int lo = 0, hi = num_segments;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (seg[mid].offset + seg[mid].length <= start) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt;
};

// One element: the CPU op's arithmetic (ops/cpu/adamw.cpp, built with -ffp-contract=off),
// rounding for rounding: every product and sum rounded on its own (the _rn intrinsics are
// never contracted into FMAs, which nvcc would otherwise choose per kernel, so that two
// kernels or the CPU could differ in the last bit once the moments are non-zero).
__device__ __forceinline__ float adamw_element(float& p, float g, float& m, float& v, float decay,
                                               const AdamWScalars& k) {
  m = __fadd_rn(__fmul_rn(k.beta1, m), __fmul_rn(1.f - k.beta1, g));
  v = __fadd_rn(__fmul_rn(k.beta2, v), __fmul_rn(__fmul_rn(1.f - k.beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bc2_sqrt), k.eps);
  p = __fsub_rn(__fmul_rn(p, decay), __fdiv_rn(__fmul_rn(k.step_size, m), denom));
  return p;
}
__device__ __forceinline__ float adamw_decay(const AdamWScalars& k, bool weight_decay) {
  return __fsub_rn(1.f, __fmul_rn(k.lr, weight_decay ? k.weight_decay : 0.f));
}

__global__ void __launch_bounds__(kThreads)
adamw_kernel(float* param, bf16* param_bf16, const float* grad, float* m, float* v,
             const ParamSegment* seg, int num_segments, int64_t total, AdamWScalars k,
             const float* grad_scale) {
  const int64_t start = int64_t(blockIdx.x) * kChunk;
  const int64_t end = min(total, start + kChunk);
  const float gs = grad_scale ? *grad_scale : 1.f;
  for (int s = first_segment(seg, num_segments, start);
       s < num_segments && seg[s].offset < end; ++s) {
    const int64_t a = max(start, seg[s].offset);
    const int64_t b = min(end, seg[s].offset + seg[s].length);
    const float decay = adamw_decay(k, seg[s].weight_decay != 0);
    for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x) {
      float p = param[i], mi = m[i], vi = v[i];
      adamw_element(p, __fmul_rn(grad[i], gs), mi, vi, decay, k);
      m[i] = mi, v[i] = vi, param[i] = p;
      if (param_bf16) param_bf16[i] = to_bf16(p);
    }
  }
}

// The update beside other work (adamw_update's max_blocks): few blocks of 1024 threads
// (one per SM: 64 registers each fill the register file), each striding over chunks of
// kSharedChunk elements and reading them as float4 (the 4-aligned middle of each segment;
// scalar head and tail), so that an SM keeps enough bytes in flight to pull 4-5 times the
// scalar kernel's bandwidth. The same arithmetic per element.
// VEC = false: every element scalar (a buffer not 16-byte aligned; the same bits).
constexpr int64_t kSharedChunk = 32768;
template <bool VEC>
__global__ void __launch_bounds__(1024, 1)
adamw_shared_kernel(float* __restrict__ param, bf16* __restrict__ param_bf16, const float* __restrict__ grad,
                    float* __restrict__ m, float* __restrict__ v, const ParamSegment* seg, int num_segments,
                    int64_t total, AdamWScalars k, const float* grad_scale) {
  const float gs = grad_scale ? *grad_scale : 1.f;
  for (int64_t start = int64_t(blockIdx.x) * kSharedChunk; start < total;
       start += int64_t(gridDim.x) * kSharedChunk) {
    const int64_t end = min(total, start + kSharedChunk);
    for (int s = first_segment(seg, num_segments, start); s < num_segments && seg[s].offset < end; ++s) {
      const int64_t a = max(start, seg[s].offset);
      const int64_t b = min(end, seg[s].offset + seg[s].length);
      const float decay = adamw_decay(k, seg[s].weight_decay != 0);
      const int64_t a4 = VEC ? min(b, (a + 3) & ~int64_t(3)) : b;
      const int64_t b4 = VEC ? a4 + ((b - a4) & ~int64_t(3)) : b;
      auto scalar = [&](int64_t i) {
        float p = param[i], mi = m[i], vi = v[i];
        adamw_element(p, __fmul_rn(grad[i], gs), mi, vi, decay, k);
        m[i] = mi, v[i] = vi, param[i] = p;
        if (param_bf16) param_bf16[i] = to_bf16(p);
      };
      for (int64_t i = a + threadIdx.x; i < a4; i += blockDim.x) scalar(i);
      for (int64_t i = b4 + threadIdx.x; i < b; i += blockDim.x) scalar(i);
#pragma unroll 2
      for (int64_t q = a4 / 4 + threadIdx.x; q < b4 / 4; q += blockDim.x) {
        const float4 g4 = reinterpret_cast<const float4*>(grad)[q];
        float4 p4 = reinterpret_cast<const float4*>(param)[q];
        float4 m4 = reinterpret_cast<const float4*>(m)[q];
        float4 v4 = reinterpret_cast<const float4*>(v)[q];
        adamw_element(p4.x, __fmul_rn(g4.x, gs), m4.x, v4.x, decay, k);
        adamw_element(p4.y, __fmul_rn(g4.y, gs), m4.y, v4.y, decay, k);
        adamw_element(p4.z, __fmul_rn(g4.z, gs), m4.z, v4.z, decay, k);
        adamw_element(p4.w, __fmul_rn(g4.w, gs), m4.w, v4.w, decay, k);
        reinterpret_cast<float4*>(m)[q] = m4;
        reinterpret_cast<float4*>(v)[q] = v4;
        reinterpret_cast<float4*>(param)[q] = p4;
        if (param_bf16) {
          __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(param_bf16 + 4 * q);
          h[0] = __floats2bfloat162_rn(p4.x, p4.y);
          h[1] = __floats2bfloat162_rn(p4.z, p4.w);
        }
      }
    }
  }
}

// The gradient norm's partial sums of squares: fp64 accumulation of fp32 squares, one
// partial per block of kSumChunk elements. With VEC (x 16-byte aligned) each segment's
// 4-aligned middle is read as float4 (scalar head and tail): the scalar form, 4096
// elements per block, reached 50-53% of the copy bandwidth (one load in flight per
// thread, a block reduction per 16 KiB).
constexpr int64_t kSumChunk = 32768;
template <bool VEC>
__global__ void __launch_bounds__(kThreads)
sum_squares_partial_kernel(double* partial, const float* x, const ParamSegment* seg,
                           int num_segments, int64_t total) {
  __shared__ double shared[32];
  const int64_t start = int64_t(blockIdx.x) * kSumChunk;
  const int64_t end = min(total, start + kSumChunk);
  double acc = 0.0;
  for (int s = first_segment(seg, num_segments, start);
       s < num_segments && seg[s].offset < end; ++s) {
    const int64_t a = max(start, seg[s].offset);
    const int64_t b = min(end, seg[s].offset + seg[s].length);
    if constexpr (VEC) {
      const int64_t a4 = min(b, (a + 3) & ~int64_t(3));
      const int64_t b4 = a4 + ((b - a4) & ~int64_t(3));
      for (int64_t i = a + threadIdx.x; i < a4; i += blockDim.x) acc += double(x[i]) * x[i];
      const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 8
      for (int64_t i = a4 / 4 + threadIdx.x; i < b4 / 4; i += blockDim.x) {
        const float4 v = x4[i];
        acc += double(v.x) * v.x;
        acc += double(v.y) * v.y;
        acc += double(v.z) * v.z;
        acc += double(v.w) * v.w;
      }
      for (int64_t i = b4 + threadIdx.x; i < b; i += blockDim.x) acc += double(x[i]) * x[i];
    } else {
      for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x) {
        const double xi = x[i];
        acc += xi * xi;
      }
    }
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: thread t adds partials t, t + 1024, ... in order, then a fixed-order block sum.
__global__ void __launch_bounds__(1024)
sum_partials_kernel(double* out, const double* partial, int64_t count) {
  __shared__ double shared[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = acc;
}

__global__ void clip_scale_kernel(float* scale, const double* sum_sq, float max_norm) {
  const double norm = sqrt(*sum_sq);
  const double s = double(max_norm) / (norm + 1e-6);
  *scale = float(s < 1.0 ? s : 1.0);
}

}  // namespace

void adamw_update(float* param, bf16* param_bf16, const float* grad, float* m, float* v,
                  const ParamSegment* segments, int num_segments, int64_t total,
                  const AdamWConfig& cfg, const float* grad_scale, cudaStream_t stream, int max_blocks) {
  if (total == 0 || num_segments == 0) return;
  BRAID_CHECK(cfg.step >= 1, "adamw_update: step must be >= 1, got " << cfg.step);
  // Bias corrections in double on the host, exactly as the CPU op.
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  const AdamWScalars k{cfg.lr,           cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
                       float(cfg.lr / bc1), float(std::sqrt(bc2))};
  const int64_t blocks = ceil_div(total, kChunk);
  BRAID_CHECK(blocks < (int64_t(1) << 31), "adamw_update: too many elements");
  if (max_blocks > 0) {
    // Sharing the GPU. float4 where the buffers are 16-byte aligned (the bf16 copy 8-byte),
    // so that a 4-aligned index is an aligned vector in each; else scalar.
    const bool vec = aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v) &&
                     (param_bf16 == nullptr || (reinterpret_cast<uintptr_t>(param_bf16) & 7) == 0);
    const unsigned grid = unsigned(std::min<int64_t>(max_blocks, ceil_div(total, kSharedChunk)));
    if (vec)
      adamw_shared_kernel<true><<<grid, 1024, 0, stream>>>(param, param_bf16, grad, m, v, segments, num_segments,
                                                            total, k, grad_scale);
    else
      adamw_shared_kernel<false><<<grid, 1024, 0, stream>>>(param, param_bf16, grad, m, v, segments, num_segments,
                                                             total, k, grad_scale);
  } else {
    adamw_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(param, param_bf16, grad, m, v, segments, num_segments,
                                                            total, k, grad_scale);
  }
  BRAID_CHECK_LAUNCH();
}

size_t sum_squares_scratch_bytes(int64_t total) {
  return size_t(ceil_div(total, kSumChunk)) * sizeof(double);
}

void sum_squares(double* out, void* scratch, const float* x, const ParamSegment* segments,
                 int num_segments, int64_t total, cudaStream_t stream) {
  BRAID_CHECK(scratch != nullptr || total == 0,
              "sum_squares needs scratch (sum_squares_scratch_bytes)");
  const int64_t blocks = ceil_div(total, kSumChunk);
  double* partial = static_cast<double*>(scratch);
  if (blocks > 0) {
    if (aligned16(x))
      sum_squares_partial_kernel<true><<<unsigned(blocks), kThreads, 0, stream>>>(partial, x, segments,
                                                                                 num_segments, total);
    else
      sum_squares_partial_kernel<false><<<unsigned(blocks), kThreads, 0, stream>>>(partial, x, segments,
                                                                                  num_segments, total);
    BRAID_CHECK_LAUNCH();
  }
  sum_partials_kernel<<<1, 1024, 0, stream>>>(out, partial, blocks);
  BRAID_CHECK_LAUNCH();
}

void clip_scale_from_sum_squares(float* scale, const double* sum_sq, float max_norm,
                                 cudaStream_t stream) {
  clip_scale_kernel<<<1, 1, 0, stream>>>(scale, sum_sq, max_norm);
  BRAID_CHECK_LAUNCH();
}

}  // namespace braid::cuda
