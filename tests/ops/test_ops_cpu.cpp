// The fp32 CPU kernels of ops/ops.h (embedding, position, layernorm, matmul, attention, GELU,
// residual/add/scale) against double-precision references written here as plain loops:
// forwards against the fp64 reference, backwards against central finite differences of it
// (tests/ops/reference_check.h explains the method and the tolerance rules). Backwards
// accumulate, so every gradient buffer is pre-filled with random values and the expectation
// is prefill + gradient. Cross-entropy and AdamW live in their own files. Sizes are tiny
// (B=2, T=5, C=8, NH=2) so that finite differences at every input element stay cheap.
#include <gtest/gtest.h>

#include <set>

#include "ops/ops.h"
#include "tests/ops/reference_check.h"

namespace braid::test {
namespace {

constexpr int B = 2, T = 5, C = 8, NH = 2, HS = C / NH;
constexpr int64_t N = int64_t(B) * T;

// ---------------------------------------------------------------------------------------
// Token embedding (vocab-parallel) and position embedding.

// out[N,C] = wte[tokens[n] - vocab_start] for owned ids, zero rows for the others.
template <class F>
std::vector<F> embedding_ref(const std::vector<F>& wte, const std::vector<int32_t>& tokens,
                             int64_t vocab_start, int64_t vocab_count) {
  std::vector<F> out(tokens.size() * C, F(0));
  for (size_t n = 0; n < tokens.size(); ++n) {
    const int64_t v = tokens[n] - vocab_start;
    if (v < 0 || v >= vocab_count) continue;
    for (int c = 0; c < C; ++c) out[n * C + c] = wte[v * C + c];
  }
  return out;
}

TEST(EmbeddingCpu, VocabShardsMatchReferenceAndCompose) {
  constexpr int kShards = 3, V = 18, Vl = V / kShards;
  std::mt19937 rng(101);
  const VecF wte = random_normal(rng, size_t(V) * C);
  std::uniform_int_distribution<int32_t> pick(0, V - 1);
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = pick(rng);
  tokens[1] = tokens[4] = tokens[0];  // a repeated id: its gradient row sums three dout rows
  // The ids on either side of each shard boundary (6 and 12), where off-by-one errors live.
  tokens[2] = Vl - 1, tokens[3] = Vl, tokens[5] = 2 * Vl - 1, tokens[6] = 2 * Vl;
  const VecF R = random_normal(rng, N * C);
  const VecD Rd = to_double(R);

  VecD assembled(N * C, 0.0);  // what the all-reduce over the shards would produce
  for (int s = 0; s < kShards; ++s) {
    SCOPED_TRACE("shard " + std::to_string(s));
    const int64_t start = int64_t(s) * Vl;
    const VecF wte_s(wte.begin() + start * C, wte.begin() + (start + Vl) * C);
    // The shard's table between two guard rows of NaN: a read outside it poisons the output.
    VecF guarded_wte(size_t(Vl + 2) * C, NAN);
    std::copy(wte_s.begin(), wte_s.end(), guarded_wte.begin() + C);
    VecF out(N * C, NAN);  // NaN: every row, owned or not, must be written
    cpu::embedding_forward(out.data(), tokens.data(), guarded_wte.data() + C, N, C, start, Vl);
    // A row copy or a zero row does no arithmetic: the fp32 output equals the reference.
    expect_close("embedding_forward", out, embedding_ref(to_double(wte_s), tokens, start, Vl),
                 0.0);
    for (int64_t i = 0; i < N * C; ++i) assembled[i] += out[i];

    const VecF prefill = random_normal(rng, wte_s.size());
    // The gradient between two guard rows, which must stay untouched (no write outside).
    const VecF guard = random_normal(rng, 2 * C);
    VecF guarded(size_t(Vl + 2) * C);
    std::copy(guard.begin(), guard.begin() + C, guarded.begin());
    std::copy(prefill.begin(), prefill.end(), guarded.begin() + C);
    std::copy(guard.begin() + C, guard.end(), guarded.end() - C);
    cpu::embedding_backward(guarded.data() + C, R.data(), tokens.data(), N, C, start, Vl);
    const VecF dwte(guarded.begin() + C, guarded.end() - C);
    EXPECT_TRUE(std::equal(guard.begin(), guard.begin() + C, guarded.begin()) &&
                std::equal(guard.begin() + C, guard.end(), guarded.end() - C))
        << "embedding_backward wrote outside the shard's rows";
    const VecD g = numeric_grad(
        [&](const VecD& w) { return dot(embedding_ref(w, tokens, start, Vl), Rd); },
        to_double(wte_s));
    // A row of dwte adds at most N rows of dout, one after the other.
    expect_grad("embedding_backward dwte", dwte, prefill, g, double(N));
    // Rows of ids that no token maps to (here or in another shard) get no gradient at all.
    const std::set<int32_t> used(tokens.begin(), tokens.end());
    for (int v = 0; v < Vl; ++v) {
      if (used.count(int32_t(start + v))) continue;
      for (int c = 0; c < C; ++c)
        EXPECT_EQ(dwte[v * C + c], prefill[v * C + c]) << "id " << start + v;
    }
  }
  // Every id is owned by exactly one shard and the others add exact zeros, so the sum over
  // the shards is the unsharded lookup, bitwise.
  std::vector<float> sum_f(assembled.begin(), assembled.end());
  expect_close("embedding shards summed", sum_f, embedding_ref(to_double(wte), tokens, 0, V),
               0.0);
}

// out[b,t,:] += wpe[pos_offset + t, :]
template <class F>
void position_ref(std::vector<F>& out, const std::vector<F>& wpe, int pos_offset) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) out[(b * T + t) * C + c] += wpe[(pos_offset + t) * C + c];
}

TEST(PositionCpu, ForwardAndBackwardWithOffset) {
  constexpr int kMaxT = 12;  // rows of wpe; a pipeline/sequence shard starts at pos_offset
  for (int pos_offset : {0, 4, kMaxT - T}) {
    SCOPED_TRACE("pos_offset " + std::to_string(pos_offset));
    std::mt19937 rng(200 + pos_offset);
    const VecF x = random_normal(rng, N * C);  // the token embedding it is added to
    const VecF wpe = random_normal(rng, size_t(kMaxT) * C);
    VecF out = x;
    cpu::position_forward(out.data(), wpe.data(), B, T, C, pos_offset);
    VecD want = to_double(x);
    position_ref(want, to_double(wpe), pos_offset);
    // One fp32 addition per element, exactly rounded: |err| <= u |exact|.
    VecD tol(want.size());
    for (size_t i = 0; i < tol.size(); ++i) tol[i] = kU32 * std::fabs(want[i]);
    expect_close_each("position_forward", out, want, tol);

    const VecF R = random_normal(rng, N * C);
    const VecF prefill = random_normal(rng, wpe.size());
    VecF dwpe = prefill;
    cpu::position_backward(dwpe.data(), R.data(), B, T, C, pos_offset);
    const VecD g = numeric_grad(
        [&](const VecD& w) {
          VecD o = to_double(x);
          position_ref(o, w, pos_offset);
          return dot(o, to_double(R));
        },
        to_double(wpe));
    // Each row of dwpe adds the B rows of dout at that position.
    expect_grad("position_backward dwpe", dwpe, prefill, g, B);
    for (int t = 0; t < kMaxT; ++t) {
      if (t >= pos_offset && t < pos_offset + T) continue;  // only the positions outside
      for (int c = 0; c < C; ++c) EXPECT_EQ(dwpe[t * C + c], prefill[t * C + c]) << "t " << t;
    }
  }
}

// ---------------------------------------------------------------------------------------
// LayerNorm over C, eps 1e-5 (GPT-2).

template <class F>
struct LayerNormOut {
  std::vector<F> out, mean, rstd;
};

template <class F>
LayerNormOut<F> layernorm_ref(const std::vector<F>& x, const std::vector<F>& w,
                              const std::vector<F>& b) {
  LayerNormOut<F> r{std::vector<F>(N * C), std::vector<F>(N), std::vector<F>(N)};
  for (int64_t n = 0; n < N; ++n) {
    F m = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= F(C);
    F var = 0;
    for (int c = 0; c < C; ++c) var += (x[n * C + c] - m) * (x[n * C + c] - m);
    var /= F(C);
    const F s = F(1) / std::sqrt(var + F(1e-5));
    for (int c = 0; c < C; ++c) r.out[n * C + c] = (x[n * C + c] - m) * s * w[c] + b[c];
    r.mean[n] = m;
    r.rstd[n] = s;
  }
  return r;
}

TEST(LayerNormCpu, ForwardAndBackwardMatchReference) {
  std::mt19937 rng(300);
  const VecF x = random_normal(rng, N * C, 0.5f, 2.f);  // nonzero mean, non-unit spread
  const VecF w = random_normal(rng, C, 1.f, 0.5f);
  const VecF b = random_normal(rng, C);
  VecF out(N * C), mean(N), rstd(N);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  const auto r64 = layernorm_ref(to_double(x), to_double(w), to_double(b));
  const auto r32 = layernorm_ref(x, w, b);
  // Compound op (two length-C sums, sqrt, division): the rule of twice the fp32 reference.
  expect_close("layernorm out", out, r64.out, tol_vs_fp32_reference(r32.out, r64.out));
  expect_close("layernorm mean", mean, r64.mean, tol_vs_fp32_reference(r32.mean, r64.mean));
  expect_close("layernorm rstd", rstd, r64.rstd, tol_vs_fp32_reference(r32.rstd, r64.rstd));

  const VecF R = random_normal(rng, N * C);
  const VecD Rd = to_double(R), xd = to_double(x), wd = to_double(w), bd = to_double(b);
  const VecF p_inp = random_normal(rng, N * C), p_w = random_normal(rng, C),
             p_b = random_normal(rng, C);
  VecF dinp = p_inp, dw = p_w, db = p_b;
  cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
  const VecD g_inp =
      numeric_grad([&](const VecD& v) { return dot(layernorm_ref(v, wd, bd).out, Rd); }, xd);
  const VecD g_w =
      numeric_grad([&](const VecD& v) { return dot(layernorm_ref(xd, v, bd).out, Rd); }, wd);
  const VecD g_b =
      numeric_grad([&](const VecD& v) { return dot(layernorm_ref(xd, wd, v).out, Rd); }, bd);
  // dinp: the saved mean and rstd carry the forward's chain (length-C mean, length-C
  // variance, sqrt, division: 2C + 3 roundings), then xhat (2), the backward's length-C
  // means (C + 1), and the combination s (dnorm - mean - xhat mean2) plus the += (5): 3C + 11.
  expect_grad("layernorm dinp", dinp, p_inp, g_inp, 3 * C + 11);
  // dw: a length-N sum of xhat * dout, xhat carrying the 2C + 5 roundings above.
  expect_grad("layernorm dw", dw, p_w, g_w, double(N) + 2 * C + 6);
  // db: a length-N sum of dout.
  expect_grad("layernorm db", db, p_b, g_b, double(N));
}

// ---------------------------------------------------------------------------------------
// Linear layer: out[N,OC] = inp[N,IC] @ w[OC,IC]^T + bias[OC].

constexpr int IC = C, OC = 12;

VecD matmul_ref(const VecD& inp, const VecD& w, const VecD* bias) {
  VecD out(N * OC);
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int i = 0; i < IC; ++i) s += inp[n * IC + i] * w[o * IC + i];
      out[n * OC + o] = s;
    }
  return out;
}

TEST(MatmulCpu, ForwardWithAndWithoutBias) {
  std::mt19937 rng(400);
  const VecF inp = random_normal(rng, N * IC), w = random_normal(rng, size_t(OC) * IC),
             bias = random_normal(rng, OC);
  const VecD inp_d = to_double(inp), w_d = to_double(w), bias_d = to_double(bias);
  for (bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    VecF out(N * OC, NAN);
    cpu::matmul_forward(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, N,
                        IC, OC);
    // Higham's bound per element: a dot product of IC terms (plus the bias term) errs by at
    // most gamma_{IC+1} * (sum_i |inp||w| + |bias|), in any summation order.
    VecD tol(N * OC);
    for (int64_t n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        double s = with_bias ? std::fabs(bias_d[o]) : 0.0;
        for (int i = 0; i < IC; ++i) s += std::fabs(inp_d[n * IC + i] * w_d[o * IC + i]);
        tol[n * OC + o] = gamma32(IC + 1) * s;
      }
    expect_close_each(with_bias ? "matmul_forward +bias" : "matmul_forward", out,
                      matmul_ref(inp_d, w_d, with_bias ? &bias_d : nullptr), tol);
  }
}

TEST(MatmulCpu, BackwardAccumulatesIntoPrefilledGradients) {
  std::mt19937 rng(401);
  const VecF inp = random_normal(rng, N * IC), w = random_normal(rng, size_t(OC) * IC),
             bias = random_normal(rng, OC), R = random_normal(rng, N * OC);
  const VecD inp_d = to_double(inp), w_d = to_double(w), bias_d = to_double(bias),
             R_d = to_double(R);
  const VecF p_inp = random_normal(rng, N * IC), p_w = random_normal(rng, w.size()),
             p_bias = random_normal(rng, OC);
  VecF dinp = p_inp, dw = p_w, dbias = p_bias;
  cpu::matmul_backward(dinp.data(), dw.data(), dbias.data(), R.data(), inp.data(), w.data(), N,
                       IC, OC);
  const VecD g_inp = numeric_grad(
      [&](const VecD& v) { return dot(matmul_ref(v, w_d, &bias_d), R_d); }, inp_d);
  const VecD g_w = numeric_grad(
      [&](const VecD& v) { return dot(matmul_ref(inp_d, v, &bias_d), R_d); }, w_d);
  const VecD g_bias = numeric_grad(
      [&](const VecD& v) { return dot(matmul_ref(inp_d, w_d, &v), R_d); }, bias_d);
  // Higham's bound per element; beta = 1 makes the prefill one more term of each sum:
  // dinp[n,i] = p + sum_o R[n,o] w[o,i]      -> gamma_{OC+1} (|p| + sum_o |R w|)
  // dw[o,i]   = p + sum_n R[n,o] inp[n,i]    -> gamma_{N+1}  (|p| + sum_n |R inp|)
  // dbias[o]  = p + sum_n R[n,o]             -> gamma_{N+1}  (|p| + sum_n |R|)
  VecD want_inp(dinp.size()), tol_inp(dinp.size()), want_w(dw.size()), tol_w(dw.size()),
      want_b(OC), tol_b(OC);
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < IC; ++i) {
      double s = std::fabs(double(p_inp[n * IC + i]));
      for (int o = 0; o < OC; ++o) s += std::fabs(R_d[n * OC + o] * w_d[o * IC + i]);
      want_inp[n * IC + i] = p_inp[n * IC + i] + g_inp[n * IC + i];
      tol_inp[n * IC + i] = gamma32(OC + 1) * s;
    }
  for (int o = 0; o < OC; ++o) {
    double sb = std::fabs(double(p_bias[o]));
    for (int64_t n = 0; n < N; ++n) sb += std::fabs(R_d[n * OC + o]);
    want_b[o] = p_bias[o] + g_bias[o];
    tol_b[o] = gamma32(double(N) + 1) * sb;
    for (int i = 0; i < IC; ++i) {
      double s = std::fabs(double(p_w[o * IC + i]));
      for (int64_t n = 0; n < N; ++n) s += std::fabs(R_d[n * OC + o] * inp_d[n * IC + i]);
      want_w[o * IC + i] = p_w[o * IC + i] + g_w[o * IC + i];
      tol_w[o * IC + i] = gamma32(double(N) + 1) * s;
    }
  }
  expect_close_each("matmul_backward dinp", dinp, want_inp, tol_inp);
  expect_close_each("matmul_backward dw", dw, want_w, tol_w);
  expect_close_each("matmul_backward dbias", dbias, want_b, tol_b);

  // Any of the three gradients may be null; each is computed independently of the others
  // (same BLAS call, same inputs, same thread count), so the rest are bitwise unchanged.
  VecF only_inp = p_inp, only_w = p_w, only_b = p_bias;
  cpu::matmul_backward(only_inp.data(), nullptr, nullptr, R.data(), inp.data(), w.data(), N, IC,
                       OC);
  cpu::matmul_backward(nullptr, only_w.data(), nullptr, R.data(), inp.data(), w.data(), N, IC,
                       OC);
  cpu::matmul_backward(nullptr, nullptr, only_b.data(), R.data(), inp.data(), w.data(), N, IC,
                       OC);
  EXPECT_EQ(only_inp, dinp);
  EXPECT_EQ(only_w, dw);
  EXPECT_EQ(only_b, dbias);
}

// ---------------------------------------------------------------------------------------
// Causal multi-head attention over qkv[B,T,3,NH,HS]; out[B,T,NH*HS], att[B,NH,T,T].

constexpr int C3 = 3 * C;

template <class F>
void attention_ref(std::vector<F>& out, std::vector<F>& att, const std::vector<F>& qkv) {
  out.assign(N * C, F(0));
  att.assign(size_t(B) * NH * T * T, F(0));
  const F scale = F(1) / std::sqrt(F(HS));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const F* q = &qkv[(b * T + t) * C3 + h * HS];
        F* a = &att[((b * NH + h) * T + t) * T];
        F maxv = -INFINITY;
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* k = &qkv[(b * T + t2) * C3 + C + h * HS];
          F s = 0;
          for (int i = 0; i < HS; ++i) s += q[i] * k[i];
          a[t2] = s * scale;
          maxv = std::max(maxv, a[t2]);
        }
        F sum = 0;
        for (int t2 = 0; t2 <= t; ++t2) sum += (a[t2] = std::exp(a[t2] - maxv));
        for (int t2 = 0; t2 <= t; ++t2) a[t2] /= sum;
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* v = &qkv[(b * T + t2) * C3 + 2 * C + h * HS];
          for (int i = 0; i < HS; ++i) out[(b * T + t) * C + h * HS + i] += a[t2] * v[i];
        }
      }
}

VecD attention_out_ref(const VecD& qkv) {
  VecD out, att;
  attention_ref(out, att, qkv);
  return out;
}

TEST(AttentionCpu, ForwardAndBackwardMatchReference) {
  std::mt19937 rng(500);
  const VecF qkv = random_normal(rng, N * C3);
  VecF out(N * C, NAN), att(size_t(B) * NH * T * T, NAN);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, NH, HS);
  VecD out64, att64;
  VecF out32, att32;
  attention_ref(out64, att64, to_double(qkv));
  attention_ref(out32, att32, qkv);
  // Compound op (dot products, softmax, weighted sum): twice the fp32 reference's error.
  expect_close("attention out", out, out64, tol_vs_fp32_reference(out32, out64));
  expect_close("attention att", att, att64, tol_vs_fp32_reference(att32, att64));

  const VecF R = random_normal(rng, N * C);
  const VecF prefill = random_normal(rng, qkv.size());
  VecF dqkv = prefill;
  cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, NH, HS);
  const VecD g = numeric_grad(
      [&](const VecD& v) { return dot(attention_out_ref(v), to_double(R)); }, to_double(qkv));
  // The probabilities carry a length-HS score (HS + 1), the shift by the row max (whose
  // rounding, u |s - max| with |s - max| <= 2 max|s|, becomes relative error through exp),
  // exp (1), a length-T sum and a division (T + 1). The backward adds a length-HS dot
  // (datt), a length-T dot (sum a datt), dpre (3) and a length-T sum into dq/dk (T + 1).
  double max_score = 0.0;
  for (int64_t r = 0; r < N; ++r)
    for (int64_t r2 = (r / T) * T; r2 < (r / T + 1) * T; ++r2)
      for (int h = 0; h < NH; ++h) {
        double s = 0.0;
        for (int i = 0; i < HS; ++i) s += qkv[r * C3 + h * HS + i] * qkv[r2 * C3 + C + h * HS + i];
        max_score = std::max(max_score, std::fabs(s) / std::sqrt(double(HS)));
      }
  expect_grad("attention dqkv", dqkv, prefill, g, 2 * HS + 3 * T + 2 * std::ceil(max_score) + 8);
}

TEST(AttentionCpu, OutputAtTDoesNotDependOnLaterPositions) {
  std::mt19937 rng(501);
  const VecF qkv = random_normal(rng, N * C3);
  VecF out(N * C), att(size_t(B) * NH * T * T);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, NH, HS);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t)
        for (int t2 = t + 1; t2 < T; ++t2)
          EXPECT_EQ(att[((b * NH + h) * T + t) * T + t2], 0.f) << "b" << b << " h" << h;
  for (int cut = 0; cut + 1 < T; ++cut) {
    SCOPED_TRACE("positions > " + std::to_string(cut) + " replaced");
    // Replace q, k and v of every position after `cut` by fresh values: the outputs up to
    // `cut` run the same fp32 operations on the same inputs, so they must match bitwise.
    VecF changed = qkv;
    const VecF fresh = random_normal(rng, changed.size(), 0.f, 3.f);
    for (int b = 0; b < B; ++b)
      for (int t = cut + 1; t < T; ++t)
        for (int j = 0; j < C3; ++j) changed[(b * T + t) * C3 + j] = fresh[(b * T + t) * C3 + j];
    VecF out2(N * C), att2(att.size());
    cpu::attention_forward(out2.data(), att2.data(), changed.data(), B, T, NH, HS);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < C; ++c) {
          const float o1 = out[(b * T + t) * C + c], o2 = out2[(b * T + t) * C + c];
          if (t <= cut) {
            EXPECT_EQ(o1, o2) << "b" << b << " t" << t << " c" << c;
          } else {
            EXPECT_NE(o1, o2) << "b" << b << " t" << t << " c" << c;  // the edit took effect
          }
        }
    // The mirror for the backward: a gradient arriving only at position `cut` reaches
    // q, k and v of positions <= cut and leaves the later ones exactly zero.
    VecF dout(N * C, 0.f);
    const VecF r = random_normal(rng, N * C);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) dout[(b * T + cut) * C + c] = r[(b * T + cut) * C + c];
    VecF dqkv(qkv.size(), 0.f);
    cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, NH, HS);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        double norm = 0.0;
        for (int j = 0; j < C3; ++j) norm += std::fabs(dqkv[(b * T + t) * C3 + j]);
        if (t > cut) {
          EXPECT_EQ(norm, 0.0) << "b" << b << " t" << t;
        } else {
          EXPECT_GT(norm, 0.0) << "b" << b << " t" << t;
        }
      }
  }
}

// ---------------------------------------------------------------------------------------
// Pointwise: GELU (tanh approximation), residual, add, scale.

template <class F>
std::vector<F> gelu_ref(const std::vector<F>& x) {
  const F k = std::sqrt(F(2) / F(M_PI));
  std::vector<F> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = F(0.5) * x[i] * (F(1) + std::tanh(k * (x[i] + F(0.044715) * x[i] * x[i] * x[i])));
  return y;
}

TEST(GeluCpu, ForwardAndBackwardMatchReference) {
  std::mt19937 rng(600);
  const VecF x = random_normal(rng, 64, 0.f, 2.f);  // covers both tails and the dip at -0.75
  VecF y(x.size(), NAN);
  cpu::gelu_forward(y.data(), x.data(), int64_t(x.size()));
  const VecD y64 = gelu_ref(to_double(x));
  // Compound op (cube, tanh, products): twice the fp32 reference's error.
  expect_close("gelu_forward", y, y64, tol_vs_fp32_reference(gelu_ref(x), y64));

  const VecF R = random_normal(rng, x.size());
  const VecF prefill = random_normal(rng, x.size());
  VecF dx = prefill;
  cpu::gelu_backward(dx.data(), x.data(), R.data(), int64_t(x.size()));
  const VecD g =
      numeric_grad([&](const VecD& v) { return dot(gelu_ref(v), to_double(R)); }, to_double(x));
  // The derivative 0.5 (1 + th) + 0.5 x sech^2 k (1 + 3 a x^2) takes about 20 roundings
  // (cube 3, argument 2, tanh 2, sech^2 2, the polynomial 4, the products and sums 5, times
  // dout 1, += 1); tanh's argument error enters as |arg| sech^2(arg) <= 0.45 of it.
  expect_grad("gelu_backward", dx, prefill, g, 24);
}

TEST(ElementwiseCpu, ResidualAddScaleMatchReference) {
  std::mt19937 rng(700);
  constexpr int64_t n = N * C;
  const VecF a = random_normal(rng, n), b = random_normal(rng, n, 0.f, 3.f);
  const VecD ad = to_double(a), bd = to_double(b);
  VecD sum(n), tol(n);
  for (int64_t i = 0; i < n; ++i) {
    sum[i] = ad[i] + bd[i];  // exact in double: two floats of similar exponent
    tol[i] = kU32 * std::fabs(sum[i]);  // one exactly-rounded fp32 operation: <= u |exact|
  }
  VecF out(n, NAN);
  cpu::residual_forward(out.data(), a.data(), b.data(), n);
  expect_close_each("residual_forward", out, sum, tol);
  VecF acc = a;
  cpu::add_inplace(acc.data(), b.data(), n);
  expect_close_each("add_inplace", acc, sum, tol);

  constexpr float s = 0.37f;
  VecF scaled = a;
  cpu::scale_inplace(scaled.data(), s, n);
  VecD prod(n), tol_prod(n);
  for (int64_t i = 0; i < n; ++i) {
    prod[i] = double(s) * ad[i];                 // exact in double (24 x 24 bit product)
    tol_prod[i] = kU32 * std::fabs(prod[i]);     // one exactly-rounded fp32 multiply
  }
  expect_close_each("scale_inplace", scaled, prod, tol_prod);

  // The residual's backward is add_inplace of dout into both inputs' gradients.
  const VecF R = random_normal(rng, n);
  const VecD Rd = to_double(R);
  const VecF p_a = random_normal(rng, n), p_b = random_normal(rng, n);
  VecF da = p_a, db = p_b;
  cpu::add_inplace(da.data(), R.data(), n);
  cpu::add_inplace(db.data(), R.data(), n);
  auto residual_L = [&](const VecD& x, const VecD& y) {
    double L = 0.0;
    for (int64_t i = 0; i < n; ++i) L += (x[i] + y[i]) * Rd[i];
    return L;
  };
  const VecD g_a = numeric_grad([&](const VecD& v) { return residual_L(v, bd); }, ad);
  const VecD g_b = numeric_grad([&](const VecD& v) { return residual_L(ad, v); }, bd);
  expect_grad("residual backward da", da, p_a, g_a, 0);  // the += alone: one rounding
  expect_grad("residual backward db", db, p_b, g_b, 0);
}

}  // namespace
}  // namespace braid::test
