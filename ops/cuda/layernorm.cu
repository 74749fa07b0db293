// LayerNorm on CUDA, fused with the residual add in the forward. One warp per row: the row
// (residual sum rounded to bf16, as stored) is kept in shared memory as fp32, the mean and
// then the variance about the mean are warp sums in a fixed order (the CPU op's two-pass
// form), eps 1e-5. The backward computes dinp one warp per row and the weight/bias
// gradients with the deterministic column sums of column_reduce.cuh.
#include "ops/cuda/column_reduce.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr int kWarpsPerBlock = 4;

// b == nullptr: plain layernorm of a (residual not written).
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
layernorm_forward_kernel(bf16* residual, bf16* out, float* mean_out, float* rstd_out,
                         const bf16* a, const bf16* b, const float* w, const float* bias,
                         int64_t N, int C) {
  extern __shared__ float s_rows[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (n >= N) return;
  float* x = s_rows + int64_t(warp) * C;  // only this lane's elements are read back by it
  const bf16* ar = a + n * C;
  float sum = 0.f;
  if (b) {
    const bf16* br = b + n * C;
    bf16* rr = residual + n * C;
    for (int c = lane; c < C; c += 32) {
      const bf16 r = to_bf16(to_float(ar[c]) + to_float(br[c]));
      rr[c] = r;
      x[c] = to_float(r);
      sum += x[c];
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      x[c] = to_float(ar[c]);
      sum += x[c];
    }
  }
  const float m = warp_sum(sum) / C;
  float var = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = x[c] - m;
    var += d * d;
  }
  var = warp_sum(var) / C;
  const float s = 1.f / sqrtf(var + kLayerNormEps);
  bf16* o = out + n * C;
  for (int c = lane; c < C; c += 32) o[c] = to_bf16((x[c] - m) * s * w[c] + bias[c]);
  if (lane == 0) {
    mean_out[n] = m;
    rstd_out[n] = s;
  }
}

// dx = rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * w.
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
layernorm_backward_dinp_kernel(bf16* dinp, const bf16* dout, const bf16* inp, const float* w,
                               const float* mean, const float* rstd, int64_t N, int C,
                               bool accumulate) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (n >= N) return;
  const bf16* g = dout + n * C;
  const bf16* x = inp + n * C;
  const float m = mean[n], s = rstd[n];
  float dnorm_sum = 0.f, dnorm_xhat_sum = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (to_float(x[c]) - m) * s;
    const float dnorm = to_float(g[c]) * w[c];
    dnorm_sum += dnorm;
    dnorm_xhat_sum += dnorm * xhat;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / C;
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / C;
  bf16* dx = dinp + n * C;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (to_float(x[c]) - m) * s;
    const float dnorm = to_float(g[c]) * w[c];
    float d = s * (dnorm - dnorm_mean - xhat * dnorm_xhat_mean);
    if (accumulate) d += to_float(dx[c]);
    dx[c] = to_bf16(d);
  }
}

void launch_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                    const bf16* b, const float* w, const float* bias, int64_t N, int C,
                    cudaStream_t stream) {
  if (N == 0) return;
  const size_t smem = size_t(kWarpsPerBlock) * C * sizeof(float);
  if (smem > 48 * 1024) {
    BRAID_CHECK_CUDA(cudaFuncSetAttribute(layernorm_forward_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(smem)));
  }
  const unsigned blocks = unsigned(ceil_div(N, kWarpsPerBlock));
  layernorm_forward_kernel<<<blocks, kWarpsPerBlock * 32, smem, stream>>>(
      residual, out, mean, rstd, a, b, w, bias, N, C);
  BRAID_CHECK_LAUNCH();
}

}  // namespace

void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd,
                                const bf16* a, const bf16* b, const float* w,
                                const float* bias, int64_t N, int C, cudaStream_t stream) {
  BRAID_CHECK(b != nullptr && residual != nullptr, "residual_layernorm_forward needs a, b, residual");
  launch_forward(residual, out, mean, rstd, a, b, w, bias, N, C, stream);
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const float* w,
                       const float* bias, int64_t N, int C, cudaStream_t stream) {
  launch_forward(nullptr, out, mean, rstd, inp, nullptr, w, bias, N, C, stream);
}

size_t layernorm_backward_scratch_bytes(int64_t N, int C) {
  return 2 * size_t(column_chunks(N)) * size_t(C) * sizeof(float);
}

void layernorm_backward(bf16* dinp, float* dw, float* db, void* scratch, const bf16* dout,
                        const bf16* inp, const float* w, const float* mean, const float* rstd,
                        int64_t N, int C, bool accumulate, cudaStream_t stream) {
  if (N == 0) return;
  if (dinp) {
    const unsigned blocks = unsigned(ceil_div(N, kWarpsPerBlock));
    layernorm_backward_dinp_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        dinp, dout, inp, w, mean, rstd, N, C, accumulate);
    BRAID_CHECK_LAUNCH();
  }
  if (dw || db) {
    BRAID_CHECK(scratch != nullptr,
                "layernorm_backward needs scratch (layernorm_backward_scratch_bytes)");
    float* partial_db = static_cast<float*>(scratch);
    float* partial_dw = partial_db + column_chunks(N) * C;
    column_sums<true>(db, dw, partial_db, partial_dw, dout, inp, mean, rstd, N, C, stream);
  }
}

}  // namespace braid::cuda
