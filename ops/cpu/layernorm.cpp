// LayerNorm over the channel dim on CPU: statistics in double-free fp32 two-pass form
// (mean, then variance about the mean), eps 1e-5 as GPT-2.
#include <cmath>

#include "ops/ops.h"

namespace braid::cpu {

constexpr float kLayerNormEps = 1e-5f;

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;
    float m = 0.f;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    float var = 0.f;
    for (int c = 0; c < C; ++c) {
      float d = x[c] - m;
      var += d * d;
    }
    var /= C;
    float s = 1.f / std::sqrt(var + kLayerNormEps);
    float* o = out + n * C;
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int64_t N, int C,
                        float* dsum) {
  for (int64_t n = 0; n < N; ++n) {
    const float* g = dout + n * C;
    const float* x = inp + n * C;
    float m = mean[n], s = rstd[n];
    // dnorm = g * w; dx = s * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
    float dnorm_mean = 0.f, dnorm_xhat_mean = 0.f;
    for (int c = 0; c < C; ++c) {
      float xhat = (x[c] - m) * s;
      float dnorm = g[c] * w[c];
      dnorm_mean += dnorm;
      dnorm_xhat_mean += dnorm * xhat;
    }
    dnorm_mean /= C;
    dnorm_xhat_mean /= C;
    float* dx = dinp + n * C;
    for (int c = 0; c < C; ++c) {
      float xhat = (x[c] - m) * s;
      float dnorm = g[c] * w[c];
      if (db) db[c] += g[c];
      if (dw) dw[c] += xhat * g[c];
      dx[c] += s * (dnorm - dnorm_mean - xhat * dnorm_xhat_mean);
      if (dsum) dsum[c] += dx[c];
    }
  }
}

}  // namespace braid::cpu
