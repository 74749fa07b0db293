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

__global__ void gelu_forward_kernel(bf16* out, const bf16* inp, int64_t n) {
  BRAID_GRID_STRIDE(i, n) out[i] = to_bf16(gelu(to_float(inp[i])));
}
__global__ void gelu_backward_kernel(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n,
                                     bool accumulate) {
  BRAID_GRID_STRIDE(i, n) {
    float d = gelu_grad(to_float(inp[i])) * to_float(dout[i]);
    if (accumulate) d += to_float(dinp[i]);
    dinp[i] = to_bf16(d);
  }
}
__global__ void residual_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n) {
  BRAID_GRID_STRIDE(i, n) out[i] = to_bf16(to_float(a[i]) + to_float(b[i]));
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
__global__ void f32_to_bf16_kernel(bf16* out, const float* in, int64_t n) {
  BRAID_GRID_STRIDE(i, n) out[i] = to_bf16(in[i]);
}
__global__ void bf16_to_f32_kernel(float* out, const bf16* in, int64_t n) {
  BRAID_GRID_STRIDE(i, n) out[i] = to_float(in[i]);
}

#undef BRAID_GRID_STRIDE

}  // namespace

void gelu_forward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, inp, n);
  BRAID_CHECK_LAUNCH();
}

void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, bool accumulate,
                   cudaStream_t stream) {
  if (n == 0) return;
  BRAID_CHECK(!accumulate || dinp != dout, "gelu_backward: accumulate with dinp aliasing dout");
  gelu_backward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
      dinp, inp, dout, n, accumulate);
  BRAID_CHECK_LAUNCH();
}

void residual_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
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
  f32_to_bf16_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  BRAID_CHECK_LAUNCH();
}

void convert(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  BRAID_CHECK_LAUNCH();
}

}  // namespace braid::cuda
