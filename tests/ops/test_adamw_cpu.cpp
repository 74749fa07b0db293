// adamw_update and sum_squares on CPU. AdamW is compared, step after step, with the update
// written as ops/ops.h states it (bias-corrected m and v, decoupled weight decay on the
// pre-step parameter), run in double; the fp32 kernel may drift from it at most twice as
// far as the same formula run in fp32 (tests/ops/reference_check.h). sum_squares must
// accumulate in double.
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "tests/ops/reference_check.h"

namespace braid::test {
namespace {

struct AdamwHyper {
  float lr, beta1, beta2, eps, weight_decay;
};

// The header's formula, factored as written there (not as the kernel factors it):
//   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2 ; mhat = m / (1-b1^t) ; vhat = v / (1-b2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)
// Hyperparameters enter as the same fp32 values the kernel receives.
template <class F>
void adamw_ref(std::vector<F>& p, const VecF& g, std::vector<F>& m, std::vector<F>& v,
               const AdamwHyper& hp, int64_t t) {
  const F lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
  const F bc1 = F(1) - F(std::pow(double(hp.beta1), double(t)));
  const F bc2 = F(1) - F(std::pow(double(hp.beta2), double(t)));
  for (size_t i = 0; i < p.size(); ++i) {
    const F gi = g[i];
    m[i] = b1 * m[i] + (F(1) - b1) * gi;
    v[i] = b2 * v[i] + (F(1) - b2) * gi * gi;
    const F mhat = m[i] / bc1, vhat = v[i] / bc2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
  }
}

template <class F>
std::vector<F> cast(const VecF& x) {
  return std::vector<F>(x.begin(), x.end());
}

TEST(AdamwCpu, MatchesDoubleReferenceOverSteps) {
  constexpr int64_t n = 64;
  constexpr int kSteps = 6;
  for (float weight_decay : {0.f, 0.1f})
    for (int64_t t0 : {int64_t(1), int64_t(101)}) {  // fresh moments, and mid-training
      SCOPED_TRACE("weight_decay " + std::to_string(weight_decay) + ", first step " +
                   std::to_string(t0));
      const AdamwHyper hp{1e-2f, 0.9f, 0.999f, 1e-8f, weight_decay};
      std::mt19937 rng(1200 + int(t0) + int(weight_decay * 10));
      VecF p = random_normal(rng, n), m(n, 0.f), v(n, 0.f);
      if (t0 > 1) {  // moments as after t0 - 1 steps of O(1) gradients
        m = random_normal(rng, n, 0.f, 0.3f);
        const VecF r = random_normal(rng, n);
        for (int64_t i = 0; i < n; ++i) v[i] = 0.1f * r[i] * r[i] + 0.01f;
      }
      VecD p64 = to_double(p), m64 = to_double(m), v64 = to_double(v);
      VecF p32 = p, m32 = m, v32 = v;
      for (int64_t t = t0; t < t0 + kSteps; ++t) {
        SCOPED_TRACE("step " + std::to_string(t));
        const VecF g = random_normal(rng, n);
        cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, hp.lr, hp.beta1, hp.beta2,
                          hp.eps, hp.weight_decay, t);
        adamw_ref(p64, g, m64, v64, hp, t);
        adamw_ref(p32, g, m32, v32, hp, t);
        // Errors compound over the steps on both fp32 sides alike; the kernel may be at
        // most twice as far from the double trajectory as the fp32 reference is.
        expect_close("adamw param", p, p64, tol_vs_fp32_reference(p32, p64));
        expect_close("adamw m", m, m64, tol_vs_fp32_reference(m32, m64));
        expect_close("adamw v", v, v64, tol_vs_fp32_reference(v32, v64));
      }
    }
}

// From zero moments a zero gradient gives a zero Adam step, so what remains is the decay
// alone: the parameter is unchanged without weight decay and shrinks by the factor
// (1 - lr * wd) with it, whatever the gradient-based part would have done.
TEST(AdamwCpu, WeightDecayIsDecoupledFromTheGradient) {
  constexpr int64_t n = 16;
  std::mt19937 rng(1300);
  const VecF p0 = random_normal(rng, n), zero(n, 0.f);
  for (float wd : {0.f, 0.1f}) {
    VecF p = p0, m(n, 0.f), v(n, 0.f);
    cpu::adamw_update(p.data(), zero.data(), m.data(), v.data(), n, 1e-2f, 0.9f, 0.999f, 1e-8f,
                      wd, 1);
    VecD want(n), tol(n);
    for (int64_t i = 0; i < n; ++i) {
      want[i] = double(p0[i]) * (1.0 - double(1e-2f) * double(wd));
      tol[i] = gamma32(4) * std::fabs(want[i]);  // lr*wd, 1 - it, the product, the Adam step
    }
    expect_close_each(wd == 0.f ? "adamw zero grad, no decay" : "adamw zero grad, decay", p,
                      want, tol);
  }
}

TEST(SumSquaresCpu, AccumulatesInDouble) {
  std::mt19937 rng(1400);
  constexpr int64_t n = 1000;
  const VecF x = random_normal(rng, n, 0.f, 3.f);
  long double ref = 0.0L;
  for (float xi : x) ref += (long double)xi * xi;
  // Squares of floats are exact in double; a double sum of n positive terms errs by at most
  // (n - 1) * DBL_EPSILON / 2 relative (Higham's gamma_{n-1} in double).
  const double bound = double(n) * DBL_EPSILON / 2 * double(ref);
  const double got = cpu::sum_squares(x.data(), n);
  EXPECT_LE(std::fabs(got - double(ref)), bound);
  std::printf("[  max err ] %-34s %.3e  (bound %.3e)\n", "sum_squares",
              std::fabs(got - double(ref)), bound);
  // Partials over a split sum to the whole (the global norm all-reduces the partials).
  const double parts = cpu::sum_squares(x.data(), 371) + cpu::sum_squares(x.data() + 371, n - 371);
  EXPECT_LE(std::fabs(parts - double(ref)), bound);

  // 4096^2 = 2^24, after which an fp32 accumulator cannot add 1 (2^24 + 1 rounds to 2^24).
  // In double every partial sum is an integer below 2^53, so the result is exact.
  VecF y(1001, 1.f);
  y[0] = 4096.f;
  EXPECT_EQ(cpu::sum_squares(y.data(), int64_t(y.size())), 16777216.0 + 1000.0);
  EXPECT_EQ(cpu::sum_squares(y.data(), 0), 0.0);
}

}  // namespace
}  // namespace braid::test
