// The step profiler (ops/profiler.h) and braid-bench --profile's op breakdown: Scopes at
// the top level only, time inside a Scope charged to its name, the rest to idle, and the
// sum of both equal to the span; a profiled TP2 training step on the CPU names every op
// the model calls, as often as the model calls it.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "../test_util.h"
#include "ops/profiler.h"

namespace braid {
namespace {

using test::world_rank;
using test::world_size;

const prof::Entry* find(const prof::Report& r, const std::string& name) {
  for (const prof::Entry& e : r.entries)
    if (e.name == name) return &e;
  return nullptr;
}

double entries_ms(const prof::Report& r) {
  double s = 0;
  for (const prof::Entry& e : r.entries) s += e.ms;
  return s;
}

TEST(Profiler, TopLevelScopesAndIdleTimeAddUpToTheSpan) {
  { prof::Scope off("not profiling"); }  // records nothing: the profiler is off
  EXPECT_FALSE(prof::active());
  prof::start(nullptr);
  EXPECT_TRUE(prof::active());
  {
    prof::Scope a("outer");
    prof::Scope b("inner");  // inside "outer": adds no mark of its own
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // between Scopes: idle
  for (int i = 0; i < 3; ++i) prof::Scope c("repeated");
  const prof::Report r = prof::collect();
  EXPECT_FALSE(prof::active());
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(find(r, "inner"), nullptr);
  EXPECT_EQ(find(r, "not profiling"), nullptr);
  ASSERT_NE(find(r, "outer"), nullptr);
  EXPECT_EQ(find(r, "outer")->calls, 1);
  EXPECT_EQ(find(r, "repeated")->calls, 3);
  // sleep_for sleeps at least as long as asked; the host clock is monotonic.
  EXPECT_GE(find(r, "outer")->ms, 20.0);
  EXPECT_GE(r.idle_ms, 10.0);
  EXPECT_EQ(r.entries.front().name, "outer");  // largest first
  // Every interval between consecutive marks goes to exactly one side (rounding only).
  EXPECT_NEAR(entries_ms(r) + r.idle_ms, r.span_ms, 1e-9 * r.span_ms);
  EXPECT_THROW(prof::collect(), std::exception);  // not started
}

TEST(Profiler, Tp2TrainingStepsAreProfiledOpByOp) {
  if (world_size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string data = test::make_token_dataset("profiler", 64, 20000, 2000);
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = test::temp_dir("profiler_out");
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.seq_len = 16;
  c.model.vocab_size = 64;
  c.steps = 4;
  c.micro_batch = 2;
  c.grad_accum = 2;
  c.tp = 2;
  c.quiet = true;
  c.save_every = 0;
  c.eval_every = 0;
  c.profile_ops = true;
  ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, c.tp, c.pp);
  Trainer t(c, groups);
  t.init_or_resume();
  t.train_step();  // not profiled
  const int steps = 2;
  prof::start(t.backend().cuda_compute_stream());  // null on the CPU: the host clock
  double wall_ms = 0;
  for (int s = 0; s < steps; ++s) wall_ms += 1e3 * t.train_step().seconds;
  const prof::Report r = prof::collect();
  t.train_step();  // after collect(): nothing is recorded, nothing breaks
  EXPECT_FALSE(prof::active());

  const int64_t per_layer = int64_t(c.model.n_layer) * c.grad_accum * steps;  // layer op calls
  auto calls = [&](const std::string& name) {
    const prof::Entry* e = find(r, name);
    return e ? e->calls : int64_t(0);
  };
  EXPECT_EQ(calls("attention fwd"), per_layer);
  EXPECT_EQ(calls("attention bwd"), per_layer);
  // qkv is column-parallel: 3C / TP = 24 output columns on each rank.
  EXPECT_EQ(calls("matmul fwd 16->24"), per_layer);
  // attention's output projection is row-parallel: C / TP = 8 input columns.
  EXPECT_EQ(calls("matmul fwd 8->16"), per_layer);
  EXPECT_EQ(calls("AdamW"), steps);
  EXPECT_EQ(calls("gradient norm and clip"), steps);
  EXPECT_EQ(calls("zero gradients"), 0) << "the gradients are zeroed lazily, with no pass of their own";
  // The row-parallel layers' forward all-reduces (2 per layer and microbatch) are blocking
  // MPI calls of the TP group: at least those are named after it.
  const std::string tp_label = "MPI " + groups.tp->name();
  EXPECT_GE(calls(tp_label), 2 * per_layer) << tp_label;
  for (const prof::Entry& e : r.entries) {
    EXPECT_GE(e.ms, 0.0) << e.name;
    EXPECT_GT(e.calls, 0) << e.name;
  }
  EXPECT_NEAR(entries_ms(r) + r.idle_ms, r.span_ms, 1e-9 * r.span_ms);
  // The marks lie inside the profiled steps, and all of a step but its data loading and
  // bookkeeping lies between its first mark (the first forward op) and its last (the
  // bf16 weight refresh): the span is at most the steps' wall time and most of it.
  EXPECT_LE(r.span_ms, wall_ms * (1 + 1e-6));
  EXPECT_GE(r.span_ms, 0.5 * wall_ms);
}

}  // namespace
}  // namespace braid
