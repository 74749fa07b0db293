// The vocab-parallel softmax cross-entropy pieces on CPU (xent_local_max, _local_sumexp,
// _target_logit, _losses, _backward) against a double-precision reference of the whole
// loss, and composed by hand across vocabulary shards the way the tensor-parallel layer
// composes them with all-reduces: max over shards, then the sum of exponentials (either
// under the global max or rescaled from each shard's local max), then the sum of target
// logits. Also: padded columns (id >= vocab_real) take no part and get zero gradient;
// ignore_index rows give zero loss and zero gradient. Method and tolerance rules:
// tests/ops/reference_check.h.
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "tests/ops/reference_check.h"

namespace braid::test {
namespace {

constexpr int64_t N = 10;       // B*T rows
constexpr float kPadLogit = 30.f;  // padding logits that would dominate if they were used

// One test batch: logits[N, V] over the padded vocabulary V, real ids [0, vocab_real).
struct Batch {
  int V = 0;
  int64_t vocab_real = 0;
  VecF logits;
  std::vector<int32_t> targets;
};

Batch make_batch(std::mt19937& rng, int V, int64_t vocab_real) {
  Batch b{V, vocab_real, random_normal(rng, N * V, 0.f, 2.f), std::vector<int32_t>(N)};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = vocab_real; v < V; ++v) b.logits[n * V + v] = kPadLogit;
  std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab_real) - 1);
  for (auto& t : b.targets) t = pick(rng);
  b.targets[2] = b.targets[7] = cpu::kIgnoreIndex;
  b.targets[0] = 0;                             // the first real id
  b.targets[1] = int32_t(vocab_real) - 1;       // the last real id
  b.targets[3] = 6;                             // the first ids of shards of 6 and of 8
  b.targets[4] = 8;
  return b;
}

// Columns [vocab_start, vocab_start + Vl) of the full logits: one shard's local logits.
VecF shard_logits(const Batch& b, int64_t vocab_start, int Vl) {
  VecF l(N * Vl);
  for (int64_t n = 0; n < N; ++n)
    for (int v = 0; v < Vl; ++v) l[n * Vl + v] = b.logits[n * b.V + vocab_start + v];
  return l;
}

// Reference per-row pieces over the whole (unsharded) vocabulary, real columns only.
template <class F>
struct XentRef {
  std::vector<F> row_max, row_sum, target_logit, losses;
};

template <class F>
XentRef<F> xent_ref(const std::vector<F>& logits, const std::vector<int32_t>& targets, int V,
                    int64_t vocab_real) {
  XentRef<F> r{std::vector<F>(N), std::vector<F>(N), std::vector<F>(N), std::vector<F>(N)};
  for (int64_t n = 0; n < N; ++n) {
    F m = -INFINITY;
    for (int64_t v = 0; v < vocab_real; ++v) m = std::max(m, logits[n * V + v]);
    F s = 0;
    for (int64_t v = 0; v < vocab_real; ++v) s += std::exp(logits[n * V + v] - m);
    const bool ignored = targets[n] == cpu::kIgnoreIndex;
    r.row_max[n] = m;
    r.row_sum[n] = s;
    r.target_logit[n] = ignored ? F(0) : logits[n * V + targets[n]];
    r.losses[n] = ignored ? F(0) : std::log(s) + m - r.target_logit[n];
  }
  return r;
}

// The objective whose gradient xent_backward returns: dloss_scale * sum of the row losses.
double scaled_loss(const VecD& logits, const Batch& b, double dloss_scale) {
  double L = 0.0;
  for (double l : xent_ref(logits, b.targets, b.V, b.vocab_real).losses) L += l;
  return dloss_scale * L;
}

float mean_scale(const Batch& b) {
  int valid = 0;
  for (int32_t t : b.targets) valid += t != cpu::kIgnoreIndex;
  return 1.f / float(valid);
}

// Largest |logit - row max| over real columns: the subtraction's rounding u |l - m| turns
// into relative error of exp(l - m), so it enters every softmax tolerance below.
double max_shift(const Batch& b) {
  const auto r = xent_ref(to_double(b.logits), b.targets, b.V, b.vocab_real);
  double s = 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < b.vocab_real; ++v)
      s = std::max(s, r.row_max[n] - b.logits[n * b.V + v]);
  return s;
}

// dlogits = dloss_scale * (p - onehot), p = exp(l - m) / S: p's relative error collects the
// shift (|l - m|), exp (2: at most one ulp), the row sum over vocab_real terms each carrying
// the same (vocab_real + |l - m| + 2), 1/S and the product (2); the subtraction of the one-hot
// and the scale add 2, on values bounded by dloss_scale.
double dlogits_tol(const Batch& b, float dloss_scale) {
  const double k = double(b.vocab_real) + 2 * max_shift(b) + 10;
  return gamma32(k) * dloss_scale;
}

TEST(CrossEntropyCpu, SingleShardMatchesReference) {
  std::mt19937 rng(800);
  const Batch b = make_batch(rng, 16, 13);  // 3 padded columns
  const int Vl = b.V;
  VecF row_max(N), row_sum(N), target_logit(N), losses(N);
  cpu::xent_local_max(row_max.data(), b.logits.data(), N, Vl, 0, b.vocab_real);
  cpu::xent_local_sumexp(row_sum.data(), b.logits.data(), row_max.data(), N, Vl, 0, b.vocab_real);
  cpu::xent_target_logit(target_logit.data(), b.logits.data(), b.targets.data(), N, Vl, 0);
  cpu::xent_losses(losses.data(), row_max.data(), row_sum.data(), target_logit.data(),
                   b.targets.data(), N);
  const auto r64 = xent_ref(to_double(b.logits), b.targets, b.V, b.vocab_real);
  const auto r32 = xent_ref(b.logits, b.targets, b.V, b.vocab_real);
  // The max and the target logit select one input: no rounding, exact.
  expect_close("xent_local_max", row_max, r64.row_max, 0.0);
  expect_close("xent_target_logit", target_logit, r64.target_logit, 0.0);
  // Sum of exponentials and the loss: twice the error of the same reference in fp32.
  expect_close("xent_local_sumexp", row_sum, r64.row_sum,
               tol_vs_fp32_reference(r32.row_sum, r64.row_sum));
  expect_close("xent_losses", losses, r64.losses, tol_vs_fp32_reference(r32.losses, r64.losses));

  const float scale = mean_scale(b);
  VecF dlogits(N * Vl, NAN);  // NaN: xent_backward overwrites every element
  cpu::xent_backward(dlogits.data(), b.logits.data(), b.targets.data(), row_max.data(),
                     row_sum.data(), N, Vl, 0, b.vocab_real, scale);
  const VecD g = numeric_grad([&](const VecD& l) { return scaled_loss(l, b, scale); },
                              to_double(b.logits));
  expect_close("xent_backward", dlogits, g, dlogits_tol(b, scale));
}

// (a) Two or three vocabulary shards composed by hand equal the single-shard result.
TEST(CrossEntropyCpu, ShardsComposeToSingleShard) {
  struct Config { int shards, Vl; int64_t vocab_real; };
  // 2 x 8 with real 13: the second shard is part real, part padding. 3 x 6 with real 11:
  // the last shard [12, 18) is padding only (local max -inf, local sum 0).
  for (const Config cfg : {Config{2, 8, 13}, Config{3, 6, 11}}) {
    SCOPED_TRACE(std::to_string(cfg.shards) + " shards of " + std::to_string(cfg.Vl));
    std::mt19937 rng(900 + cfg.shards);
    const Batch b = make_batch(rng, cfg.shards * cfg.Vl, cfg.vocab_real);
    const auto r64 = xent_ref(to_double(b.logits), b.targets, b.V, b.vocab_real);

    // The single-shard kernel pipeline, to compare the composition with.
    VecF max1(N), sum1(N), tl1(N), loss1(N);
    cpu::xent_local_max(max1.data(), b.logits.data(), N, b.V, 0, b.vocab_real);
    cpu::xent_local_sumexp(sum1.data(), b.logits.data(), max1.data(), N, b.V, 0, b.vocab_real);
    cpu::xent_target_logit(tl1.data(), b.logits.data(), b.targets.data(), N, b.V, 0);
    cpu::xent_losses(loss1.data(), max1.data(), sum1.data(), tl1.data(), b.targets.data(), N);

    std::vector<VecF> local(cfg.shards);
    std::vector<VecF> local_max(cfg.shards, VecF(N));
    VecF global_max(N, -INFINITY), global_tl(N, 0.f);
    for (int s = 0; s < cfg.shards; ++s) {
      const int64_t start = int64_t(s) * cfg.Vl;
      local[s] = shard_logits(b, start, cfg.Vl);
      cpu::xent_local_max(local_max[s].data(), local[s].data(), N, cfg.Vl, start, b.vocab_real);
      VecF tl(N, NAN);
      cpu::xent_target_logit(tl.data(), local[s].data(), b.targets.data(), N, cfg.Vl, start);
      for (int64_t n = 0; n < N; ++n) {  // all-reduce(max) and all-reduce(sum)
        global_max[n] = std::max(global_max[n], local_max[s][n]);
        global_tl[n] += tl[n];
      }
    }
    // Max is exact and associative; the target logit is one shard's copy plus exact zeros.
    EXPECT_EQ(global_max, max1);
    EXPECT_EQ(global_tl, tl1);

    // Flow 1, the all-reduce order: every shard sums exp(l - M) under the global max M.
    VecF global_sum(N, 0.f);
    VecD rescaled(N, 0.0);
    for (int s = 0; s < cfg.shards; ++s) {
      const int64_t start = int64_t(s) * cfg.Vl;
      VecF part(N, NAN), part_local(N, NAN);
      cpu::xent_local_sumexp(part.data(), local[s].data(), global_max.data(), N, cfg.Vl, start,
                             b.vocab_real);
      // Flow 2: each shard under its own local max, rescaled by exp(m_s - M) when combined
      // (in double here); a padding-only shard has m_s = -inf and contributes 0 * 0.
      cpu::xent_local_sumexp(part_local.data(), local[s].data(), local_max[s].data(), N, cfg.Vl,
                             start, b.vocab_real);
      for (int64_t n = 0; n < N; ++n) {
        global_sum[n] += part[n];
        rescaled[n] += double(part_local[n]) * std::exp(double(local_max[s][n]) - global_max[n]);
      }
    }
    // Flow 1 sums bitwise the same fp32 exp terms as the single shard, in another order:
    // each sum is within gamma_{vocab_real} S of the exact sum of those terms (all positive).
    VecD tol_sum(N), tol_rescaled(N);
    for (int64_t n = 0; n < N; ++n) {
      tol_sum[n] = 2 * gamma32(double(b.vocab_real)) * r64.row_sum[n];
      // Flow 2's terms differ from the reference by the shift, exp and the sum's roundings.
      tol_rescaled[n] = gamma32(double(b.vocab_real) + max_shift(b) + 3) * r64.row_sum[n];
    }
    expect_close_each("xent sumexp, global max", global_sum, to_double(sum1), tol_sum);
    expect_close_each("xent sumexp, rescaled", VecF(rescaled.begin(), rescaled.end()),
                      r64.row_sum, tol_rescaled);

    // Losses from the composed pieces: the sums differ by at most 2 gamma_{vocab_real}
    // relative, so log S by that much absolute; log and the two additions round on each side.
    VecF loss(N, NAN);
    cpu::xent_losses(loss.data(), global_max.data(), global_sum.data(), global_tl.data(),
                     b.targets.data(), N);
    VecD tol_loss(N);
    for (int64_t n = 0; n < N; ++n)
      tol_loss[n] = 2 * gamma32(double(b.vocab_real)) +
                    2 * gamma32(4) * (std::fabs(std::log(r64.row_sum[n])) +
                                      std::fabs(r64.row_max[n]) + std::fabs(r64.target_logit[n]));
    expect_close_each("xent losses, composed", loss, to_double(loss1), tol_loss);

    // Each shard's backward under the global max and sum is its slice of the full gradient.
    const float scale = mean_scale(b);
    const VecD g = numeric_grad([&](const VecD& l) { return scaled_loss(l, b, scale); },
                                to_double(b.logits));
    VecF dlogits(N * b.V, NAN);
    for (int s = 0; s < cfg.shards; ++s) {
      const int64_t start = int64_t(s) * cfg.Vl;
      VecF d(N * cfg.Vl, NAN);
      cpu::xent_backward(d.data(), local[s].data(), b.targets.data(), global_max.data(),
                         global_sum.data(), N, cfg.Vl, start, b.vocab_real, scale);
      for (int64_t n = 0; n < N; ++n)
        for (int v = 0; v < cfg.Vl; ++v) dlogits[n * b.V + start + v] = d[n * cfg.Vl + v];
    }
    expect_close("xent_backward, sharded", dlogits, g, dlogits_tol(b, scale));
  }
}

// (b) Padded columns (id >= vocab_real) are excluded from the softmax and get zero gradient.
TEST(CrossEntropyCpu, PaddedColumnsAreExcluded) {
  std::mt19937 rng(1000);
  Batch b = make_batch(rng, 16, 13);
  // Two shards of 8: shard 1 holds real ids [8, 13) and padding [13, 16). Run its pieces
  // with padding logits +30 and again with fresh random padding: nothing may change.
  constexpr int Vl = 8;
  constexpr int64_t start = 8;
  auto run = [&](const Batch& batch, VecF& max, VecF& sum, VecF& d) {
    const VecF l = shard_logits(batch, start, Vl);
    max.assign(N, NAN);
    sum.assign(N, NAN);
    d.assign(N * Vl, NAN);
    cpu::xent_local_max(max.data(), l.data(), N, Vl, start, batch.vocab_real);
    cpu::xent_local_sumexp(sum.data(), l.data(), max.data(), N, Vl, start, batch.vocab_real);
    cpu::xent_backward(d.data(), l.data(), batch.targets.data(), max.data(), sum.data(), N, Vl,
                       start, batch.vocab_real, 1.f);
  };
  VecF max_a, sum_a, d_a, max_b, sum_b, d_b;
  run(b, max_a, sum_a, d_a);
  const VecF fresh = random_normal(rng, N * b.V, 0.f, 50.f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = b.vocab_real; v < b.V; ++v) b.logits[n * b.V + v] = fresh[n * b.V + v];
  run(b, max_b, sum_b, d_b);
  // The same fp32 operations on the same real columns: bitwise equal.
  EXPECT_EQ(max_a, max_b);
  EXPECT_EQ(sum_a, sum_b);
  EXPECT_EQ(d_a, d_b);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = b.vocab_real - start; v < Vl; ++v)
      EXPECT_EQ(d_a[n * Vl + v], 0.f) << "row " << n << " padded id " << start + v;
  // The local max is the max over real columns only (exact: it selects an input).
  for (int64_t n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int64_t v = start; v < b.vocab_real; ++v) m = std::max(m, b.logits[n * b.V + v]);
    EXPECT_EQ(max_a[n], m) << "row " << n;
  }

  // A shard that holds only padding contributes the identities of the all-reduces (max
  // -inf, sum 0) and a zero gradient, whatever its logits.
  VecF l = random_normal(rng, N * Vl), max(N), sum(N), d(N * Vl, NAN);
  const VecF global_max(N, 0.f), global_sum(N, 1.f);
  cpu::xent_local_max(max.data(), l.data(), N, Vl, 16, 13);
  cpu::xent_local_sumexp(sum.data(), l.data(), global_max.data(), N, Vl, 16, 13);
  cpu::xent_backward(d.data(), l.data(), b.targets.data(), global_max.data(), global_sum.data(),
                     N, Vl, 16, 13, 1.f);
  EXPECT_EQ(max, VecF(N, -INFINITY));
  EXPECT_EQ(sum, VecF(N, 0.f));
  EXPECT_EQ(d, VecF(N * Vl, 0.f));
}

// (c) Rows whose target is ignore_index (-1) give zero loss and zero gradient, and their
// logits do not affect the other rows.
TEST(CrossEntropyCpu, IgnoredRowsGetZeroLossAndGradient) {
  std::mt19937 rng(1100);
  Batch b = make_batch(rng, 16, 13);  // rows 2 and 7 are ignored
  for (int64_t start : {int64_t(0), int64_t(8)}) {  // as shard 0 and as shard 1 of two
    SCOPED_TRACE("vocab_start " + std::to_string(start));
    constexpr int Vl = 8;
    auto run = [&](const Batch& batch, VecF& loss, VecF& d) {
      const VecF l = shard_logits(batch, start, Vl);
      VecF max(N), sum(N), tl(N, NAN);
      cpu::xent_local_max(max.data(), l.data(), N, Vl, start, batch.vocab_real);
      cpu::xent_local_sumexp(sum.data(), l.data(), max.data(), N, Vl, start, batch.vocab_real);
      cpu::xent_target_logit(tl.data(), l.data(), batch.targets.data(), N, Vl, start);
      for (int64_t n : {2, 7}) EXPECT_EQ(tl[n], 0.f) << "row " << n;
      loss.assign(N, NAN);
      d.assign(N * Vl, NAN);
      cpu::xent_losses(loss.data(), max.data(), sum.data(), tl.data(), batch.targets.data(), N);
      cpu::xent_backward(d.data(), l.data(), batch.targets.data(), max.data(), sum.data(), N, Vl,
                         start, batch.vocab_real, 0.5f);
    };
    VecF loss_a, d_a, loss_b, d_b;
    run(b, loss_a, d_a);
    for (int64_t n : {2, 7}) {
      EXPECT_EQ(loss_a[n], 0.f) << "row " << n;
      for (int v = 0; v < Vl; ++v) EXPECT_EQ(d_a[n * Vl + v], 0.f) << "row " << n << " v " << v;
    }
    Batch changed = b;  // new logits on the ignored rows only
    const VecF fresh = random_normal(rng, N * b.V, 0.f, 10.f);
    for (int64_t n : {2, 7})
      for (int v = 0; v < b.V; ++v) changed.logits[n * b.V + v] = fresh[n * b.V + v];
    run(changed, loss_b, d_b);
    EXPECT_EQ(loss_a, loss_b);  // rows are independent: bitwise equal
    EXPECT_EQ(d_a, d_b);
  }
}

}  // namespace
}  // namespace braid::test
