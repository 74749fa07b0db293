// Stop requests (what SIGUSR1/SIGTERM become in braid-train): the ranks agree on a request
// that only some of them saw, save a checkpoint of the last completed step and return;
// --resume auto then continues bitwise as if the run had never stopped. With --pp 1 the
// agreement happens at every microbatch boundary (a partial step is abandoned), with
// --pp > 1 at the end of each step. The requests are injected in-process at an exact
// agreement point, so every case is deterministic (the signal path itself is tested by
// tests/launch/test_cli_train.sh and test_slurm.sh).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../test_util.h"

namespace braid {
namespace {

using test::world_size;
using test::world_rank;

TrainConfig make_config(const std::string& data, const std::string& out, int dp, int pp, int grad_accum) {
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = out;
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.n_embd = 16;
  c.model.seq_len = 16;
  c.model.vocab_size = 64;
  c.steps = 8;
  c.micro_batch = 2;
  c.grad_accum = grad_accum;
  c.lr = 3e-3f;
  c.seed = 5;
  c.eval_batches = 1;
  c.quiet = true;
  c.pp = pp;
  c.zero = dp > 1 ? 1 : 0;  // ZeRO-1: the abandoned step leaves reduce-scatters to drain
  c.bucket_mb = 0.001;      // several gradient buckets, some launched mid-step
  return c;
}

struct Stopped {
  StopRequest request = StopRequest::None;
  std::vector<double> losses;
  int64_t step = 0;
  int calls = 0;  // times this rank was asked (= agreement points reached)
};

// Runs cfg on the first `ranks` ranks; request(call) is this rank's answer at its
// call-th agreement point (1-based). Results are valid on the ranks that ran.
Stopped run(const TrainConfig& cfg, int ranks, const std::function<StopRequest(int)>& request) {
  MPI_Comm sub;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() < ranks ? 0 : MPI_UNDEFINED, world_rank(), &sub);
  Stopped s;
  if (sub != MPI_COMM_NULL) {
    ProcessGroups groups = make_process_groups(sub, cfg.tp, cfg.pp);
    Trainer t(cfg, groups);
    t.init_or_resume();
    s.request = t.train([&] { return request(++s.calls); });
    s.losses = t.losses();
    s.step = t.step();
    MPI_Comm_free(&sub);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return s;
}

std::string latest(const std::string& out) {
  std::ifstream f(out + "/checkpoints/latest");
  std::string name;
  std::getline(f, name);
  return name;
}

void plant_partial_save(const std::string& out) {
  // A partial save with a higher step (a crash mid-save) must not be picked by --resume auto.
  if (world_rank() == 0) {
    std::filesystem::create_directories(out + "/checkpoints/step_00000099.tmp");
    std::ofstream(out + "/checkpoints/step_00000099.tmp/model.h5") << "partial";
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// --pp 1, DP2 (ZeRO-1) x 4 microbatches, or 1 rank: one rank alone asks at the 2nd
// microbatch boundary of step 4. Agreement points per step: 3 mid-step + 1 at the end.
TEST(StopRequest, MidStepStopAbandonsThePartialStepAndResumesBitwise) {
  const int ranks = std::min(2, world_size());
  const bool in = world_rank() < ranks;
  const int M = 4;
  auto data = test::make_token_dataset("stop_mid", 64, 8192, 1024);
  auto never = [](int) { return StopRequest::None; };
  auto straight = run(make_config(data, test::temp_dir("stop_mid_straight"), ranks, 1, M), ranks, never);
  const std::string out = test::temp_dir("stop_mid_split");
  const int at = 3 * M + 2;  // step 4, after microbatch 2 of 4
  const bool asker = world_rank() == ranks - 1;
  auto first = run(make_config(data, out, ranks, 1, M), ranks,
                   [&](int call) { return asker && call >= at ? StopRequest::Requeue : StopRequest::None; });
  plant_partial_save(out);
  auto second = run(make_config(data, out, ranks, 1, M), ranks, never);
  if (!in) return;
  ASSERT_EQ(straight.losses.size(), 8u);
  EXPECT_EQ(straight.calls, 8 * (M - 1) + 7);  // 3 per step inside, 1 at the end but the last
  EXPECT_EQ(first.request, StopRequest::Requeue);
  EXPECT_EQ(first.calls, at);  // asked at every microbatch boundary, stopped at the first yes
  EXPECT_EQ(first.step, 3);    // step 4 was abandoned; its checkpoint holds step 3
  ASSERT_EQ(first.losses.size(), 3u);
  EXPECT_EQ(second.request, StopRequest::None);
  EXPECT_EQ(second.step, 8);
  ASSERT_EQ(second.losses.size(), 5u);  // resumed from step_00000003, not the partial step 99
  for (size_t i = 0; i < 8; ++i) {
    double resumed = i < 3 ? first.losses[i] : second.losses[i - 3];
    EXPECT_EQ(resumed, straight.losses[i]) << "step " << i + 1;  // bitwise
  }
  EXPECT_EQ(latest(out), "step_00000008");
}

// --pp 2: the agreement is at step ends only. Rank 0 asks for a requeue and the last rank
// for a stop at the same point: every rank agrees on the stronger request, Stop.
TEST(StopRequest, PipelineStopsAtTheStepEndAndTheStrongerRequestWins) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int ranks = 2;
  const bool in = world_rank() < ranks;
  auto data = test::make_token_dataset("stop_pp", 64, 8192, 1024);
  auto never = [](int) { return StopRequest::None; };
  auto straight = run(make_config(data, test::temp_dir("stop_pp_straight"), 1, 2, 4), ranks, never);
  const std::string out = test::temp_dir("stop_pp_split");
  auto first = run(make_config(data, out, 1, 2, 4), ranks, [&](int call) {
    if (call < 3) return StopRequest::None;
    return world_rank() == 0 ? StopRequest::Requeue : StopRequest::Stop;
  });
  auto second = run(make_config(data, out, 1, 2, 4), ranks, never);
  if (!in) return;
  EXPECT_EQ(straight.calls, 7);  // once per step, none after the last
  EXPECT_EQ(first.request, StopRequest::Stop);
  EXPECT_EQ(first.calls, 3);
  EXPECT_EQ(first.step, 3);
  ASSERT_EQ(first.losses.size(), 3u);
  ASSERT_EQ(second.losses.size(), 5u);
  for (size_t i = 0; i < 8; ++i) {
    double resumed = i < 3 ? first.losses[i] : second.losses[i - 3];
    EXPECT_EQ(resumed, straight.losses[i]) << "step " << i + 1;  // bitwise
  }
}

// A request that arrives when the run is at its last step changes nothing: the run is done.
TEST(StopRequest, RequestAtTheLastStepFinishesNormally) {
  const int ranks = std::min(2, world_size());
  auto data = test::make_token_dataset("stop_last_data", 64, 8192, 1024);
  TrainConfig cfg = make_config(data, test::temp_dir("stop_last"), ranks, 1, 1);
  cfg.steps = 2;
  auto r = run(cfg, ranks, [](int) { return StopRequest::Requeue; });
  TrainConfig one_cfg = cfg;
  one_cfg.steps = 1;
  one_cfg.out_dir = test::temp_dir("stop_last_one");
  auto one = run(one_cfg, ranks, [](int) { return StopRequest::Requeue; });
  if (world_rank() >= ranks) return;
  // 2 steps: asked after step 1, stops there. 1 step: never asked, finishes.
  EXPECT_EQ(r.request, StopRequest::Requeue);
  EXPECT_EQ(r.step, 1);
  EXPECT_EQ(one.request, StopRequest::None);
  EXPECT_EQ(one.calls, 0);
  EXPECT_EQ(one.step, 1);
}

}  // namespace
}  // namespace braid
