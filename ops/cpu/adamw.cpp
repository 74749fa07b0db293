// AdamW on CPU (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments.
// Matches torch.optim.AdamW: p -= lr*wd*p first, then the Adam step.
#include <cmath>

#include "ops/ops.h"

namespace braid::cpu {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(beta2), double(t));
  const float step_size = float(lr / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    float mi = beta1 * m[i] + (1.f - beta1) * g;
    float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = param[i] * (1.f - lr * weight_decay);
    float denom = std::sqrt(vi) / bc2_sqrt + eps;
    param[i] = p - step_size * mi / denom;
  }
}

double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

}  // namespace braid::cpu
