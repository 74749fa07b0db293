// Vocab-parallel softmax cross-entropy on CPU, in the pieces between which the tensor-
// parallel layer all-reduces (max, then sum of exponentials, then the target's logit).
// With one shard the pieces compose to the ordinary cross-entropy. Padded vocabulary
// columns (global id >= vocab_real) are excluded from the softmax and get zero gradient.
#include <cmath>

#include "ops/ops.h"

namespace braid::cpu {

namespace {
int local_real(int Vl, int64_t vocab_start, int64_t vocab_real) {
  int64_t r = vocab_real - vocab_start;
  if (r < 0) return 0;
  return r < Vl ? int(r) : Vl;
}
}  // namespace

void xent_local_max(float* row_max, const float* logits, int64_t N, int Vl, int64_t vocab_start,
                    int64_t vocab_real) {
  int R = local_real(Vl, vocab_start, vocab_real);
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * Vl;
    float m = -INFINITY;
    for (int v = 0; v < R; ++v) m = l[v] > m ? l[v] : m;
    row_max[n] = m;
  }
}

void xent_local_sumexp(float* row_sum, const float* logits, const float* row_max, int64_t N,
                       int Vl, int64_t vocab_start, int64_t vocab_real) {
  int R = local_real(Vl, vocab_start, vocab_real);
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * Vl;
    float m = row_max[n];
    float s = 0.f;
    for (int v = 0; v < R; ++v) s += std::exp(l[v] - m);
    row_sum[n] = s;
  }
}

void xent_target_logit(float* target_logit, const float* logits, const int32_t* targets,
                       int64_t N, int Vl, int64_t vocab_start) {
  for (int64_t n = 0; n < N; ++n) {
    int64_t v = int64_t(targets[n]) - vocab_start;
    target_logit[n] = (targets[n] != kIgnoreIndex && v >= 0 && v < Vl) ? logits[n * Vl + v] : 0.f;
  }
}

void xent_losses(float* losses, const float* row_max, const float* row_sum,
                 const float* target_logit, const int32_t* targets, int64_t N) {
  for (int64_t n = 0; n < N; ++n)
    losses[n] = targets[n] == kIgnoreIndex
                    ? 0.f
                    : std::log(row_sum[n]) + row_max[n] - target_logit[n];
}

void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                   const float* row_max, const float* row_sum, int64_t N, int Vl,
                   int64_t vocab_start, int64_t vocab_real, float dloss_scale) {
  int R = local_real(Vl, vocab_start, vocab_real);
  for (int64_t n = 0; n < N; ++n) {
    float* d = dlogits + n * Vl;
    const float* l = logits + n * Vl;
    if (targets[n] == kIgnoreIndex) {
      for (int v = 0; v < Vl; ++v) d[v] = 0.f;
      continue;
    }
    float m = row_max[n];
    float inv = 1.f / row_sum[n];
    int64_t tv = int64_t(targets[n]) - vocab_start;
    for (int v = 0; v < R; ++v) {
      float p = std::exp(l[v] - m) * inv;
      d[v] = (p - (v == tv ? 1.f : 0.f)) * dloss_scale;
    }
    for (int v = R; v < Vl; ++v) d[v] = 0.f;
  }
}

void xent_exp_sum_inplace(float* row_sum, float* logits, const float* row_max, int64_t N, int Vl,
                          int64_t vocab_start, int64_t vocab_real) {
  int R = local_real(Vl, vocab_start, vocab_real);
  for (int64_t n = 0; n < N; ++n) {
    float* l = logits + n * Vl;
    float m = row_max[n];
    float s = 0.f;
    for (int v = 0; v < R; ++v) {
      float e = std::exp(l[v] - m);
      l[v] = e;
      s += e;
    }
    for (int v = R; v < Vl; ++v) l[v] = 0.f;
    row_sum[n] = s;
  }
}

void xent_backward_from_exp(float* d, const int32_t* targets, const float* row_sum, int64_t N,
                            int Vl, int64_t vocab_start, int64_t vocab_real, float dloss_scale) {
  int R = local_real(Vl, vocab_start, vocab_real);
  for (int64_t n = 0; n < N; ++n) {
    float* row = d + n * Vl;
    if (targets[n] == kIgnoreIndex) {
      for (int v = 0; v < Vl; ++v) row[v] = 0.f;
      continue;
    }
    // Same arithmetic as xent_backward: p = exp * (1/sum), then (p - onehot) * scale.
    float inv = 1.f / row_sum[n];
    for (int v = 0; v < R; ++v) row[v] = row[v] * inv * dloss_scale;
    int64_t tv = int64_t(targets[n]) - vocab_start;
    if (tv >= 0 && tv < R) row[tv] -= dloss_scale;
    for (int v = R; v < Vl; ++v) row[v] = 0.f;
  }
}

}  // namespace braid::cpu
