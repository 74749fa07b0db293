// Shared by the CPU op tests (tests/ops/test_*_cpu.cpp, test_ops_cpu.cpp). Each fp32 kernel
// is checked against a double-precision reference written in the test as plain loops:
// forward outputs against the fp64 reference forward, gradients against central finite
// differences of the fp64 reference for the scalar objective L = sum(out * R), R a fixed
// random tensor (so the kernel's backward runs with dout = R). Every tolerance is derived
// from fp32 precision by one of the rules below; none is tuned.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace braid::test {

using VecF = std::vector<float>;
using VecD = std::vector<double>;

inline VecF random_normal(std::mt19937& rng, size_t n, float mean = 0.f, float stddev = 1.f) {
  std::normal_distribution<float> dist(mean, stddev);
  VecF x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

inline VecD to_double(const VecF& x) { return VecD(x.begin(), x.end()); }

inline double max_abs(const VecD& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

inline double max_abs_diff(const VecF& a, const VecD& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

inline double dot(const VecD& a, const VecD& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Unit roundoff of fp32 (round to nearest) and Higham's gamma_k = k u / (1 - k u): k chained
// fp32 roundings err by at most gamma_k relative; in particular a sum or dot product of k
// terms, in any order and with or without FMA (BLAS blocking), errs by at most gamma_k times
// the sum of |terms| (Higham, Accuracy and Stability of Numerical Algorithms, 3.1).
constexpr double kU32 = FLT_EPSILON / 2;
inline double gamma32(double k) { return k * kU32 / (1.0 - k * kU32); }

// The rule for compound ops (STYLE.md, as flash-attention's tests): the fp32 kernel may be at
// most twice as far from the fp64 reference as the same reference evaluated in fp32, plus
// one fp32 rounding of the largest output (so that an fp32 reference that happens to be
// exact does not demand bitwise agreement of a different but equally valid order).
inline double tol_vs_fp32_reference(const VecF& ref32, const VecD& ref64) {
  return 2.0 * max_abs_diff(ref32, ref64) + FLT_EPSILON * max_abs(ref64);
}

// Expects |got[i] - want[i]| <= tol[i] for every i (a NaN fails) and prints the largest
// error and the largest error/tolerance ratio, so a run records how close each op comes.
inline void expect_close_each(const std::string& what, const VecF& got, const VecD& want,
                              const VecD& tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(got.size(), tol.size()) << what;
  double max_err = 0.0, worst_ratio = 0.0;
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= tol[i])) {
      if (++failures <= 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
                      << ", |err| " << err << " > tol " << tol[i];
      if (std::isnan(err)) max_err = worst_ratio = INFINITY;
    }
    max_err = std::max(max_err, err);
    if (tol[i] > 0.0) worst_ratio = std::max(worst_ratio, err / tol[i]);
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " elements out of tolerance";
  std::printf("[  max err ] %-34s %.3e  (worst err/tol %.3f)\n", what.c_str(), max_err,
              worst_ratio);
}

inline void expect_close(const std::string& what, const VecF& got, const VecD& want, double tol) {
  expect_close_each(what, got, want, VecD(got.size(), tol));
}

// Central differences of a double objective at every element of x, step h = 1e-5 * max|x|:
// truncation error ~h^2 |L'''| (about 1e-10 relative) and cancellation ~DBL_EPSILON |L| / h
// (about 1e-11 |L|) are both orders of magnitude below the fp32 tolerances (>= 1e-7
// relative) they are compared under, so the finite differences act as the exact gradient.
inline VecD numeric_grad(const std::function<double(const VecD&)>& objective, VecD x) {
  const double h = 1e-5 * std::max(max_abs(x), 1e-3);
  VecD g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double plus = objective(x);
    x[i] = xi - h;
    const double minus = objective(x);
    x[i] = xi;
    g[i] = (plus - minus) / (2.0 * h);
  }
  return g;
}

// An accumulating backward: got must equal prefill + dL/dx. The fp32 gradient element takes
// at most k chained roundings of terms at the scale of the gradient tensor (max|g|), plus
// one more to add into the pre-filled value, hence gamma_{k+1} * (max|g| + |prefill|).
inline void expect_grad(const std::string& what, const VecF& got, const VecF& prefill,
                        const VecD& grad, double k) {
  const double scale = max_abs(grad);
  VecD want(got.size()), tol(got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    want[i] = double(prefill[i]) + grad[i];
    tol[i] = gamma32(k + 1) * (scale + std::fabs(double(prefill[i])));
  }
  expect_close_each(what, got, want, tol);
}

}  // namespace braid::test
