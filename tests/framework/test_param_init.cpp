// ParamStore::init_values splits the parameters into work items shared by threads; every
// element must still get the value of the single-threaded definition: Philox normal of
// (seed, the parameter's stream, the element's flat index in the FULL tensor) times its
// std, zero in TP padding rows and in rows from zero_rows_from on (padded vocabulary).
#include <gtest/gtest.h>

#include "framework/params.h"
#include "framework/philox.h"

namespace braid {
namespace {

// The definition, written out directly: one element at a time, no shared index state.
float expected(const ParamSpec& s, const std::vector<int64_t>& local_idx, uint64_t seed) {
  std::vector<int64_t> full_idx = local_idx;
  if (s.shard_dim >= 0) {
    if (local_idx[size_t(s.shard_dim)] >= s.shard_count) return 0.f;  // TP padding
    full_idx[size_t(s.shard_dim)] += s.shard_offset;
  }
  if (s.zero_rows_from >= 0 && full_idx[0] >= s.zero_rows_from) return 0.f;
  if (s.init == InitKind::Zeros) return 0.f;
  if (s.init == InitKind::Ones) return 1.f;
  int64_t flat = 0;
  for (size_t d = 0; d < full_idx.size(); ++d) flat = flat * s.full_shape[d] + full_idx[d];
  return s.init_std * philox_normal(seed, param_stream_id(s.name), uint64_t(flat));
}

TEST(ParamInit, EveryElementIsItsSingleThreadedDefinition) {
  ParamStore store;
  // A TP shard of a 3-D tensor with padding rows along dim 1, large enough (3.2M elements)
  // to span several work items, so item boundaries fall mid-row.
  ParamSpec a{"h.0.attn.qkv.w", {3, 1000, 2000}, 1, 600, 397, 400, InitKind::Normal, 0.02f};
  // A padded vocabulary: rows from 50257 on start at zero; 1.3M elements.
  ParamSpec b{"wte", {50304, 26}, -1, 0, 0, 0, InitKind::Normal, 0.5f, 50257};
  ParamSpec c{"ln.w", {777}, -1, 0, 0, 0, InitKind::Ones};
  ParamSpec d{"ln.b", {777}, -1, 0, 0, 0, InitKind::Zeros};
  ParamSpec e{"h.0.mlp.fc.b", {5, 1}, 0, 2, 3, 5, InitKind::Normal, 1.0f};  // TP rows, 2 padding
  for (const ParamSpec& s : {a, b, c, d, e}) store.add(s);
  store.finalize(int64_t(1) << 22, 1);
  const uint64_t seed = 1234567;
  store.init_values(seed);

  int64_t checked = 0, nonzero = 0;
  for (const Param& p : store.params()) {
    const Shape local = p.spec.local_shape();
    const float* v = p.value.f32();
    std::vector<int64_t> idx(local.size(), 0);
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      int64_t rem = i;
      for (int dd = int(local.size()) - 1; dd >= 0; --dd) {
        idx[size_t(dd)] = rem % local[size_t(dd)];
        rem /= local[size_t(dd)];
      }
      const float want = expected(p.spec, idx, seed);
      // Same arithmetic, same inputs: bit-for-bit equal, no tolerance.
      ASSERT_EQ(v[i], want) << p.spec.name << " element " << i;
      ++checked;
      nonzero += v[i] != 0.f;
    }
  }
  EXPECT_EQ(checked, 3 * 400 * 2000 + 50304 * 26 + 777 + 777 + 5);
  // The zero rules must not have zeroed everything: padding and zero rows are a minority.
  EXPECT_GT(nonzero, checked / 2);
}

}  // namespace
// Lazy gradient zeroing (Trainer's steps): mark_grads_stale leaves the values alone and
// hands each gradient out as stale exactly once (its first op overwrites it); a gradient
// nobody took is zeroed by zero_if_stale, one that was taken is left as its op wrote it;
// zero_grads zeroes eagerly and clears the stale marks; bucket bookkeeping is reset.
TEST(ParamStore, LazyZeroingHandsEachGradientOutOnce) {
  ParamStore store;
  ParamSpec a{"a", {4, 3}, -1, 0, 0, 0, InitKind::Normal, 0.02f};
  ParamSpec b{"b", {5}, -1, 0, 0, 0, InitKind::Zeros};
  store.add(a);
  store.add(b);
  store.finalize(int64_t(1) << 20, 2);
  auto fill = [&](int i, float x) {
    float* g = store[i].grad.f32();
    for (int64_t k = 0; k < store[i].grad.numel(); ++k) g[k] = x;
  };
  auto all_equal = [&](int i, float x) {
    const float* g = store[i].grad.f32();
    for (int64_t k = 0; k < store[i].grad.numel(); ++k)
      if (g[k] != x) return false;
    return true;
  };
  fill(0, 3.f);
  fill(1, 4.f);
  store.buckets()[0].pending = 0;
  store.mark_grads_stale();
  EXPECT_TRUE(all_equal(0, 3.f)) << "marking must not touch the values (no pass over them)";
  EXPECT_TRUE(all_equal(1, 4.f));
  int params_in_buckets = 0;
  for (const Bucket& bk : store.buckets()) params_in_buckets += bk.pending;
  EXPECT_EQ(params_in_buckets, 2);
  EXPECT_TRUE(store.take_stale(0));   // the first writer of "a" overwrites it
  EXPECT_FALSE(store.take_stale(0));  // later writers add
  fill(0, 7.f);                       // what that op wrote
  store.zero_if_stale(0);             // written: left alone
  store.zero_if_stale(1);             // never written this step: zeroed, not last step's 4
  EXPECT_TRUE(all_equal(0, 7.f));
  EXPECT_TRUE(all_equal(1, 0.f));
  EXPECT_FALSE(store.take_stale(1));
  store.mark_grads_stale();
  store.zero_grads();  // eager: zero, and nothing stale any more
  EXPECT_TRUE(all_equal(0, 0.f));
  EXPECT_FALSE(store.take_stale(0));
  EXPECT_FALSE(store.take_stale(1));
}

}  // namespace braid
