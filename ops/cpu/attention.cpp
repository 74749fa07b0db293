// Causal multi-head self-attention on CPU, the reference: materialises the T x T
// probabilities per head (att) for the backward pass. qkv is [B, T, 3, NH, HS]: the query,
// key and value groups of a row are consecutive NH*HS-wide blocks, heads consecutive
// HS-wide slices inside each block (so a tensor-parallel shard of heads is the same layout
// with fewer heads).
#include <cmath>
#include <vector>

#include "ops/ops.h"

namespace braid::cpu {

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int NH, int HS) {
  const int C = NH * HS;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const float* q = qkv + (int64_t(b) * T + t) * C3 + h * HS;
        float* a = att + ((int64_t(b) * NH + h) * T + t) * T;
        float maxv = -INFINITY;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* k = qkv + (int64_t(b) * T + t2) * C3 + C + h * HS;
          float s = 0.f;
          for (int i = 0; i < HS; ++i) s += q[i] * k[i];
          s *= scale;
          a[t2] = s;
          if (s > maxv) maxv = s;
        }
        float sum = 0.f;
        for (int t2 = 0; t2 <= t; ++t2) {
          float e = std::exp(a[t2] - maxv);
          a[t2] = e;
          sum += e;
        }
        float inv = 1.f / sum;
        for (int t2 = 0; t2 <= t; ++t2) a[t2] *= inv;
        for (int t2 = t + 1; t2 < T; ++t2) a[t2] = 0.f;
        float* o = out + (int64_t(b) * T + t) * C + h * HS;
        for (int i = 0; i < HS; ++i) o[i] = 0.f;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* v = qkv + (int64_t(b) * T + t2) * C3 + 2 * C + h * HS;
          float p = a[t2];
          for (int i = 0; i < HS; ++i) o[i] += p * v[i];
        }
      }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int NH, int HS) {
  const int C = NH * HS;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
  std::vector<float> datt(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const float* a = att + ((int64_t(b) * NH + h) * T + t) * T;
        const float* g = dout + (int64_t(b) * T + t) * C + h * HS;
        // through o = sum_t2 a[t2] v[t2]
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* v = qkv + (int64_t(b) * T + t2) * C3 + 2 * C + h * HS;
          float* dv = dqkv + (int64_t(b) * T + t2) * C3 + 2 * C + h * HS;
          float s = 0.f;
          for (int i = 0; i < HS; ++i) {
            s += g[i] * v[i];
            dv[i] += a[t2] * g[i];
          }
          datt[t2] = s;
        }
        // through softmax: dpre = a * (datt - sum(a * datt))
        float dot = 0.f;
        for (int t2 = 0; t2 <= t; ++t2) dot += a[t2] * datt[t2];
        const float* q = qkv + (int64_t(b) * T + t) * C3 + h * HS;
        float* dq = dqkv + (int64_t(b) * T + t) * C3 + h * HS;
        for (int t2 = 0; t2 <= t; ++t2) {
          float dpre = a[t2] * (datt[t2] - dot) * scale;
          const float* k = qkv + (int64_t(b) * T + t2) * C3 + C + h * HS;
          float* dk = dqkv + (int64_t(b) * T + t2) * C3 + C + h * HS;
          for (int i = 0; i < HS; ++i) {
            dq[i] += dpre * k[i];
            dk[i] += dpre * q[i];
          }
        }
      }
}

}  // namespace braid::cpu
