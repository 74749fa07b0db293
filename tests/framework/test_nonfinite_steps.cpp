// Non-finite steps (--inject-nan-at-step poisons world rank 0's gradients): every rank
// skips the update together (parameters, AdamW moments and step count bitwise unchanged),
// the skip is counted, and after --max-bad-steps in a row the run rolls back in place to
// the latest checkpoint, keeping its data position; with no checkpoint, or when the
// rollback does not help, every rank gets the same CollectiveError (exit code 3).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../test_util.h"

namespace braid {
namespace {

using test::world_size;

TrainConfig make_config(const std::string& data, const std::string& out, int tp, int zero) {
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = out;
  c.resume = "none";
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.seq_len = 8;
  c.model.vocab_size = 64;
  c.steps = 20;
  c.micro_batch = 1;
  c.grad_accum = 2;
  c.lr = 3e-3f;
  c.seed = 5;
  c.quiet = true;
  c.tp = tp;
  c.zero = zero;
  c.bucket_mb = 0.002;  // several buckets
  return c;
}

struct Snapshot {
  std::vector<float> values, m, v;
  int64_t t = 0, step = 0;
};

// Collective (gathers ZeRO moments).
Snapshot snapshot(Trainer& tr, Optimizer& opt) {
  Snapshot s;
  const float* p = tr.store().flat_values().f32();
  s.values.assign(p, p + tr.store().flat_size());
  opt.gather_moments(s.m, s.v);
  s.t = opt.steps_taken();
  s.step = tr.step();
  return s;
}

void expect_bitwise_equal(const Snapshot& a, const Snapshot& b, const std::string& what) {
  ASSERT_EQ(a.values.size(), b.values.size());
  EXPECT_EQ(0, std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float))) << what << ": parameters";
  EXPECT_EQ(0, std::memcmp(a.m.data(), b.m.data(), a.m.size() * sizeof(float))) << what << ": first moments";
  EXPECT_EQ(0, std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float))) << what << ": second moments";
  EXPECT_EQ(a.t, b.t) << what << ": optimizer steps";
}

class Faults : public ::testing::TestWithParam<int> {};

TEST_P(Faults, SkipIsUnanimousCountedAndChangesNothingThenRollBackAfterK) {
  const int zero = GetParam(), W = world_size();
  const int tp = W % 2 == 0 ? 2 : 1;  // DP = W / tp replicas: rank 0's poison reaches one of them
  auto data = test::make_token_dataset("nonfinite", 64, 4096, 512);
  std::string out = test::temp_dir("faults_z" + std::to_string(zero));
  TrainConfig cfg = make_config(data, out, tp, zero);
  cfg.inject_nan_at_steps = {3, 5, 6};
  cfg.max_bad_steps = 2;
  ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
  Trainer tr(cfg, groups);
  tr.init_or_resume();
  const int64_t per_step = cfg.global_batch(groups.grid.dp);

  for (int s = 1; s <= 2; ++s) EXPECT_FALSE(tr.train_step().skipped) << "step " << s;
  Snapshot before = snapshot(tr, tr.optimizer());
  StepResult r = tr.train_step();  // step 3: poisoned on rank 0 only
  EXPECT_TRUE(r.skipped) << "every rank skips step 3, not only the ranks that saw the NaN";
  EXPECT_EQ(tr.skipped_steps(), 1);
  EXPECT_EQ(tr.step(), 3);
  EXPECT_EQ(tr.data_position(), 3 * per_step) << "the poisoned batch is consumed";
  Snapshot after = snapshot(tr, tr.optimizer());
  expect_bitwise_equal(before, after, "skipped step 3");
  EXPECT_FALSE(tr.roll_back_if_diverging()) << "1 bad step < --max-bad-steps 2";

  EXPECT_FALSE(tr.train_step().skipped);  // step 4 updates again
  tr.save();
  Snapshot saved = snapshot(tr, tr.optimizer());
  EXPECT_TRUE(tr.train_step().skipped);   // step 5
  EXPECT_FALSE(tr.roll_back_if_diverging());
  EXPECT_TRUE(tr.train_step().skipped);   // step 6: the second in a row
  EXPECT_EQ(tr.skipped_steps(), 3);
  ASSERT_TRUE(tr.roll_back_if_diverging());
  EXPECT_EQ(tr.rollbacks(), 1);
  EXPECT_EQ(tr.step(), 4) << "back at the checkpoint's step";
  EXPECT_EQ(tr.data_position(), 6 * per_step) << "the data does not go back";
  expect_bitwise_equal(saved, snapshot(tr, tr.optimizer()), "after the rollback to step 4");
  StepResult again = tr.train_step();  // step 5 again, on new data
  EXPECT_FALSE(again.skipped);
  EXPECT_TRUE(std::isfinite(again.loss) && std::isfinite(again.grad_norm));
  EXPECT_EQ(tr.step(), 5);
  MPI_Barrier(MPI_COMM_WORLD);
}

INSTANTIATE_TEST_SUITE_P(ZeroStage, Faults, ::testing::Values(0, 1));

// Every rank must get the same error, with the diverged exit code.
void expect_diverged(Trainer& tr, const std::string& needle) {
  bool thrown = false;
  try {
    tr.train();
  } catch (const CollectiveError& e) {
    thrown = true;
    EXPECT_EQ(e.exit_code(), kDivergedExitCode);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_TRUE(thrown) << "no CollectiveError";
}

TEST(Faults, WithoutACheckpointKBadStepsEndTheRun) {
  const int W = world_size(), tp = W % 2 == 0 ? 2 : 1;
  auto data = test::make_token_dataset("nonfinite", 64, 4096, 512);
  TrainConfig cfg = make_config(data, test::temp_dir("faults_nockpt"), tp, 0);
  cfg.inject_nan_at_steps = {2, 3};
  cfg.max_bad_steps = 2;
  ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
  Trainer tr(cfg, groups);
  tr.init_or_resume();
  expect_diverged(tr, "no checkpoint");
  EXPECT_EQ(tr.step(), 3);
  EXPECT_EQ(tr.skipped_steps(), 2);
}

TEST(Faults, NonFiniteAgainRightAfterARollbackEndsTheRun) {
  const int W = world_size(), tp = W % 2 == 0 ? 2 : 1;
  auto data = test::make_token_dataset("nonfinite", 64, 4096, 512);
  TrainConfig cfg = make_config(data, test::temp_dir("faults_again"), tp, 0);
  cfg.save_every = 1;
  cfg.keep_last = 1;
  // Steps 2 and 3 fail, the run rolls back to step 1, and steps 2 and 3 fail again.
  cfg.inject_nan_at_steps = {2, 3, 2, 3};
  cfg.max_bad_steps = 2;
  ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
  Trainer tr(cfg, groups);
  tr.init_or_resume();
  expect_diverged(tr, "stays non-finite after rolling back");
  EXPECT_EQ(tr.rollbacks(), 1);
  EXPECT_EQ(tr.skipped_steps(), 4);
}

}  // namespace
}  // namespace braid
