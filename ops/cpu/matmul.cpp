// Linear layer on CPU through OpenBLAS sgemm: out = inp @ w^T + bias, w is [OC, IC]
// (nn.Linear). The backward accumulates (beta = 1) into dinp and dw.
#include <cblas.h>

#include "ops/ops.h"

namespace braid::cpu {

void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                    int IC, int OC) {
  // out[N,OC] = inp[N,IC] * w[OC,IC]^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), OC, IC, 1.0f, inp, IC, w, IC,
              0.0f, out, OC);
  if (bias) {
    for (int64_t n = 0; n < N; ++n) {
      float* o = out + n * OC;
      for (int c = 0; c < OC; ++c) o[c] += bias[c];
    }
  }
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int64_t N, int IC, int OC, bool accumulate_dinp) {
  if (dinp)  // dinp[N,IC] (+)= dout[N,OC] * w[OC,IC]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), IC, OC, 1.0f, dout, OC, w, IC,
                accumulate_dinp ? 1.0f : 0.0f, dinp, IC);
  if (dw)  // dw[OC,IC] += dout[N,OC]^T * inp[N,IC]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, int(N), 1.0f, dout, OC, inp, IC,
                1.0f, dw, IC);
  if (dbias) {
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dout + n * OC;
      for (int c = 0; c < OC; ++c) dbias[c] += g[c];
    }
  }
}

}  // namespace braid::cpu

namespace braid {
void set_cpu_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }
}  // namespace braid
