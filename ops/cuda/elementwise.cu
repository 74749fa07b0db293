// Pointwise kernels: GELU (tanh approximation) forward/backward, residual add, in-place add
// and scale, fp32 <-> bf16 conversion. Memory-bound: one grid-stride pass, fp32 math, one
// rounding per bf16 output.
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)

__device__ __forceinline__ float gelu(float x) {
  const float cube = 0.044715f * x * x * x;
  return 0.5f * x * (1.0f + tanhf(kGeluScale * (x + cube)));
}
__device__ __forceinline__ float gelu_grad(float x) {
  const float cube = 0.044715f * x * x * x;
  const float th = tanhf(kGeluScale * (x + cube));
  const float sech2 = 1.0f - th * th;
  return 0.5f * (1.0f + th) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
}

#define BRAID_GRID_STRIDE(i, n)                                                      \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);          \
       i += int64_t(gridDim.x) * blockDim.x)

// GELU in groups of V elements (V = 8: 16-byte accesses); i counts groups.
template <int V>
__global__ void gelu_forward_kernel(bf16* out, const bf16* inp, int64_t groups) {
  BRAID_GRID_STRIDE(i, groups) {
    float x[V];
    load_bf16<V>(x, inp + i * V);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = gelu(x[k]);
    store_bf16<V>(out + i * V, x);
  }
}
// Each group is read before it is written by the same thread: dinp may alias dout.
template <int V>
__global__ void gelu_backward_kernel(bf16* dinp, const bf16* inp, const bf16* dout,
                                     int64_t groups, bool accumulate) {
  BRAID_GRID_STRIDE(i, groups) {
    float x[V], g[V];
    load_bf16<V>(x, inp + i * V);
    load_bf16<V>(g, dout + i * V);
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] *= gelu_grad(x[k]);
    if (accumulate) {
      float old[V];
      load_bf16<V>(old, dinp + i * V);
#pragma unroll
      for (int k = 0; k < V; ++k) g[k] += old[k];
    }
    store_bf16<V>(dinp + i * V, g);
  }
}
// In groups of V elements like GELU (V = 8: 16-byte accesses; the scalar kernels moved
// 2 bytes per access and reached 41% of the copy bandwidth). Same arithmetic per element.
template <int V>
__global__ void residual_kernel(bf16* out, const bf16* a, const bf16* b, int64_t groups) {
  BRAID_GRID_STRIDE(i, groups) {
    float x[V], y[V];
    load_bf16<V>(x, a + i * V);
    load_bf16<V>(y, b + i * V);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] += y[k];
    store_bf16<V>(out + i * V, x);
  }
}
template <int V>
__global__ void f32_to_bf16_kernel(bf16* out, const float* in, int64_t groups) {
  BRAID_GRID_STRIDE(i, groups) {
    float x[V];
    load_f32<V>(x, in + i * V);
    store_bf16<V>(out + i * V, x);
  }
}
__global__ void add_bf16_kernel(bf16* dst, const bf16* src, int64_t n) {
  BRAID_GRID_STRIDE(i, n) dst[i] = to_bf16(to_float(dst[i]) + to_float(src[i]));
}
__global__ void add_f32_kernel(float* dst, const float* src, int64_t n) {
  BRAID_GRID_STRIDE(i, n) dst[i] += src[i];
}
__global__ void scale_bf16_kernel(bf16* x, float s, int64_t n) {
  BRAID_GRID_STRIDE(i, n) x[i] = to_bf16(to_float(x[i]) * s);
}
__global__ void scale_f32_kernel(float* x, float s, int64_t n) {
  BRAID_GRID_STRIDE(i, n) x[i] *= s;
}
__global__ void bf16_to_f32_kernel(float* out, const bf16* in, int64_t n) {
  BRAID_GRID_STRIDE(i, n) out[i] = to_float(in[i]);
}

#undef BRAID_GRID_STRIDE

}  // namespace

void gelu_forward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(out) && aligned16(inp))
    gelu_forward_kernel<8><<<elementwise_blocks(n / 8, kThreads), kThreads, 0, stream>>>(
        out, inp, n / 8);
  else
    gelu_forward_kernel<1><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, inp, n);
  BRAID_CHECK_LAUNCH();
}

void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, bool accumulate,
                   cudaStream_t stream) {
  if (n == 0) return;
  BRAID_CHECK(!accumulate || dinp != dout, "gelu_backward: accumulate with dinp aliasing dout");
  if (n % 8 == 0 && aligned16(dinp) && aligned16(inp) && aligned16(dout))
    gelu_backward_kernel<8><<<elementwise_blocks(n / 8, kThreads), kThreads, 0, stream>>>(
        dinp, inp, dout, n / 8, accumulate);
  else
    gelu_backward_kernel<1><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
        dinp, inp, dout, n, accumulate);
  BRAID_CHECK_LAUNCH();
}

void residual_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(out) && aligned16(a) && aligned16(b))
    residual_kernel<8><<<elementwise_blocks(n / 8, kThreads), kThreads, 0, stream>>>(out, a, b, n / 8);
  else
    residual_kernel<1><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  BRAID_CHECK_LAUNCH();
}

void add_inplace(bf16* dst, const bf16* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_bf16_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(dst, src, n);
  BRAID_CHECK_LAUNCH();
}

void add_inplace(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_f32_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(dst, src, n);
  BRAID_CHECK_LAUNCH();
}

void scale_inplace(bf16* x, float s, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_bf16_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(x, s, n);
  BRAID_CHECK_LAUNCH();
}

void scale_inplace(float* x, float s, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_f32_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(x, s, n);
  BRAID_CHECK_LAUNCH();
}

void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(out) && aligned16(in))  // 8 floats (two 16-byte loads) per group
    f32_to_bf16_kernel<8><<<elementwise_blocks(n / 8, kThreads), kThreads, 0, stream>>>(out, in, n / 8);
  else
    f32_to_bf16_kernel<1><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  BRAID_CHECK_LAUNCH();
}

void convert(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  BRAID_CHECK_LAUNCH();
}

}  // namespace braid::cuda
