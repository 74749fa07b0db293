// The memory plan (braid-train --plan) against what a real CPU run allocates. For layouts
// covering TP, sequence parallelism, PP with 1F1B / GPipe / interleaved schedules, DP with
// ZeRO-1 and their combination, each rank of a real in-process run (the Trainer on the
// first tp*pp*dp ranks) compares with the plan made from the config alone:
//   parameters, gradients   exact: the ParamStore's flat buffers,
//                           and the host tensor bytes alive before the first step
//   optimizer               exact: the AdamW moments the optimizer holds
//   activations             exact: peak host tensor bytes during a training step (and a
//                           validation pass) above those alive before it, from the
//                           allocator's counters (ops/tensor.h host_memory_stats)
// The plan is exact by construction (a dry run of the same allocations), so any difference
// is a change in the model's or the engine's allocations that the plan does not mirror.
// Plus properties computed from the model: parameter counts, ZeRO-1 sharding, 1F1B vs
// GPipe, every failing check reported at once, a 16-rank plan on one process.
#include <gtest/gtest.h>

#include <set>
#include <sstream>

#include "../test_util.h"
#include "framework/plan.h"
#include "ops/tensor.h"

namespace braid {
namespace {

struct Case {
  int tp = 1, pp = 1, dp = 1, vs = 1;
  std::string schedule = "1f1b";
  bool sp = false;
  int zero = 0;
  int microbatches = 2;
  int64_t loss_chunk_bytes = 3072;  // 6 rows of 32 at TP 1 (f32, vocab 128), 12 at TP 2
  std::string recompute = "gelu";
  int recompute_num_layers = -1;  // --recompute-num-layers
  std::string name() const {
    std::ostringstream os;
    os << "tp" << tp << "_pp" << pp << "_dp" << dp << "_" << schedule << "_m" << microbatches;
    if (vs > 1) os << "_v" << vs;
    if (sp) os << "_sp";
    if (zero) os << "_zero1";
    os << "_loss" << loss_chunk_bytes << "_recompute_" << recompute;
    if (recompute_num_layers >= 0) os << recompute_num_layers;
    return os.str();
  }
  int world() const { return tp * pp * dp; }
};

// Tiny model: 4 layers (PP 2 x 2 virtual), 4 heads (TP 2), vocabulary 96 padded to 128.
TrainConfig case_config(const Case& k, const std::string& data, const std::string& out) {
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = out;
  c.resume = "none";
  c.model.n_layer = 4;
  c.model.n_head = 4;
  c.model.n_embd = 32;
  c.model.seq_len = 16;
  c.model.vocab_size = 96;
  c.steps = 2;
  c.micro_batch = 2;
  c.seed = 99;
  c.quiet = true;
  c.eval_batches = 3;
  c.bucket_mb = 0.01;  // several buckets, each padded to a multiple of DP
  c.tp = k.tp;
  c.pp = k.pp;
  c.virtual_stages = k.vs;
  c.schedule = k.schedule;
  c.sequence_parallel = k.sp;
  c.zero = k.zero;
  c.grad_accum = k.microbatches;
  c.loss_chunk_mib = double(k.loss_chunk_bytes) / (1024 * 1024);
  c.recompute = k.recompute;
  c.recompute_num_layers = k.recompute_num_layers;
  return c;
}

std::vector<Case> cases() {
  return {
      {.loss_chunk_bytes = 0, .recompute = "none"},  // logits and GELU output kept for the backward
      {.recompute = "none"},
      {.pp = 2, .microbatches = 4, .recompute = "none"},
      {},
      {.tp = 2},
      {.tp = 2, .loss_chunk_bytes = 0},
      {.tp = 2, .sp = true},
      {.pp = 2, .microbatches = 4},
      {.pp = 2, .schedule = "gpipe", .microbatches = 4},
      {.pp = 2, .vs = 2, .schedule = "interleaved", .microbatches = 4},
      {.dp = 2, .zero = 1},
      {.tp = 2, .dp = 2, .sp = true, .zero = 1},
      {.tp = 2, .pp = 2, .dp = 2, .vs = 2, .schedule = "interleaved", .sp = true, .zero = 1, .microbatches = 4},
      {.recompute = "full"},  // each layer keeps its input; its forward runs again in the backward
      {.tp = 2, .sp = true, .recompute = "full"},
      {.pp = 2, .vs = 2, .schedule = "interleaved", .microbatches = 4, .recompute = "full"},
      // only the first layers of each chunk recompute; the others store everything
      {.recompute = "gelu", .recompute_num_layers = 2},
      {.recompute = "full", .recompute_num_layers = 3},
      {.pp = 2, .vs = 2, .schedule = "interleaved", .microbatches = 4, .recompute = "full", .recompute_num_layers = 0},
      {.tp = 2, .pp = 2, .microbatches = 4, .recompute = "full", .recompute_num_layers = 1},
  };
}

const RankMemoryPlan* find_rank(const TrainPlan& p, int world_rank) {
  for (const RankMemoryPlan& r : p.ranks)
    for (int w : r.world_ranks)
      if (w == world_rank) return &r;
  return nullptr;
}

TEST(MemoryPlan, AgreesWithRealCpuRuns) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string data = test::make_token_dataset("plan", 96, 4096, 1024);
  int ran = 0;
  for (const Case& k : cases()) {
    if (k.world() > world) continue;
    ++ran;
    const TrainConfig cfg = case_config(k, data, test::temp_dir("plan_" + k.name()));
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, rank < k.world() ? 0 : MPI_UNDEFINED, rank, &sub);
    if (sub == MPI_COMM_NULL) continue;
    {
      // The plan from the config alone, before anything of the run exists.
      const TrainPlan plan = make_train_plan(cfg, k.world());
      for (const PlanCheck& ck : plan.checks) EXPECT_TRUE(ck.ok()) << k.name() << " " << ck.name << ": " << ck.problem;
      ProcessGroups groups = make_process_groups(sub, cfg.tp, cfg.pp);
      const RankMemoryPlan* planned = find_rank(plan, groups.grid.world_rank);
      ASSERT_NE(planned, nullptr) << k.name();
      EXPECT_EQ(planned->tp_rank, groups.grid.tp_rank) << k.name();
      EXPECT_EQ(planned->pp_rank, groups.grid.pp_rank) << k.name();

      const int64_t before = host_memory_stats().live_bytes;
      Trainer t(cfg, groups);
      t.init_or_resume();
      const int64_t persistent = host_memory_stats().live_bytes - before;
      EXPECT_EQ(planned->param_bytes, t.store().flat_values().size_bytes()) << k.name();
      // Gradients: the flat buffer alone (ZeRO-1 reduce-scatters into it); with the values
      // they are every tensor the trainer holds between steps.
      EXPECT_EQ(planned->grad_bytes + planned->param_bytes, persistent) << k.name();
      EXPECT_EQ(planned->grad_bytes, t.store().flat_grads().size_bytes()) << k.name();
      EXPECT_EQ(planned->optimizer_bytes, t.optimizer().host_state_bytes()) << k.name();

      for (int step = 0; step < 2; ++step) {
        reset_host_memory_peak();
        const HostMemoryStats s0 = host_memory_stats();
        t.train_step();
        const HostMemoryStats s1 = host_memory_stats();
        EXPECT_EQ(planned->activation_bytes, s1.peak_bytes - s0.live_bytes) << k.name() << " step " << step;
        EXPECT_EQ(s1.live_bytes, s0.live_bytes) << k.name() << ": a step left tensors alive";
        if (groups.grid.world_rank == 0 && step == 1)
          std::printf("%-44s rank 0: planned activations %lld B, measured %lld B; params %lld B\n",
                      k.name().c_str(), static_cast<long long>(planned->activation_bytes),
                      static_cast<long long>(s1.peak_bytes - s0.live_bytes),
                      static_cast<long long>(planned->param_bytes));
      }
      reset_host_memory_peak();
      const HostMemoryStats e0 = host_memory_stats();
      t.evaluate();
      EXPECT_EQ(planned->eval_activation_bytes, host_memory_stats().peak_bytes - e0.live_bytes) << k.name();
    }
    MPI_Comm_free(&sub);
  }
  EXPECT_GT(ran, 1) << "no parallel layout fits a world of " << world;
}

TrainConfig plan_only_config() {
  TrainConfig c = case_config({}, "", "");
  c.model.n_layer = 8;
  c.model.n_head = 8;
  c.model.n_embd = 64;
  c.model.seq_len = 32;
  c.bucket_mb = 1000;  // one bucket besides the embedding's
  return c;
}

TEST(MemoryPlan, ParametersMatchTheModelCount) {
  // One rank holds every parameter once: num_parameters() exactly (DP 1: no padding).
  TrainConfig c = plan_only_config();
  TrainPlan one = make_train_plan(c, 1);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one.ranks.size(), 1u);
  EXPECT_EQ(one.ranks[0].param_elems, c.model.num_parameters());
  EXPECT_EQ(one.ranks[0].param_bytes, 4 * c.model.num_parameters());
  EXPECT_EQ(one.ranks[0].optimizer_bytes, 2 * one.ranks[0].param_bytes);
  // Over PP 2 the stages add up to the model plus the last stage's copy of the tied
  // embedding.
  const int64_t C = c.model.n_embd;
  c.pp = 2;
  TrainPlan pipe = make_train_plan(c, 2);
  ASSERT_TRUE(pipe.ok());
  ASSERT_EQ(pipe.ranks.size(), 2u);
  EXPECT_EQ(pipe.ranks[0].param_elems + pipe.ranks[1].param_elems,
            c.model.num_parameters() + c.model.vocab_padded() * C);
  // Over TP 2 the two ranks hold halves of every sharded matrix and each a full copy of
  // the replicated ones: per layer ln1, ln2 (2C each) and the row-parallel biases (C
  // each), plus wpe [T, C] and lnf (2C).
  c.pp = 1;
  c.tp = 2;
  TrainPlan tensor = make_train_plan(c, 2);
  ASSERT_TRUE(tensor.ok());
  ASSERT_EQ(tensor.ranks.size(), 2u);
  const int64_t replicated = c.model.n_layer * 6 * C + int64_t(c.model.seq_len) * C + 2 * C;
  EXPECT_EQ(tensor.ranks[0].param_elems, tensor.ranks[1].param_elems);
  EXPECT_EQ(tensor.ranks[0].param_elems + tensor.ranks[1].param_elems, c.model.num_parameters() + replicated);
  c.tp = 1;
  // ZeRO-1 over DP 4: the optimizer keeps a quarter; gradients are reduced in place.
  c.zero = 1;
  c.dp = 4;
  TrainPlan zero = make_train_plan(c, 1);
  ASSERT_TRUE(zero.ok());
  ASSERT_EQ(zero.ranks.size(), 1u);
  const RankMemoryPlan& z = zero.ranks[0];
  EXPECT_EQ(z.param_elems % 4, 0);  // buckets padded to a multiple of DP
  EXPECT_EQ(z.grad_bytes, z.param_bytes);
  EXPECT_EQ(z.optimizer_bytes, 2 * z.param_bytes / 4);
  EXPECT_EQ(z.world_ranks, (std::vector<int>{0, 1, 2, 3}));
}

TEST(MemoryPlan, OneFOneBHoldsFewerMicrobatchesThanGPipe) {
  TrainConfig c = plan_only_config();
  c.pp = 4;
  auto plan = [&](const std::string& schedule, int m) {
    c.schedule = schedule;
    c.grad_accum = m;
    TrainPlan p = make_train_plan(c, 4);
    EXPECT_TRUE(p.ok()) << schedule << " m=" << m;
    EXPECT_EQ(p.ranks.size(), 4u);
    return p;
  };
  const TrainPlan onef4 = plan("1f1b", 4), onef8 = plan("1f1b", 8), onef16 = plan("1f1b", 16);
  const TrainPlan gpipe4 = plan("gpipe", 4), gpipe8 = plan("gpipe", 8), gpipe16 = plan("gpipe", 16);
  // One [B, T, C] fp32 activation (or its gradient): what a stage sends per microbatch.
  const int64_t message_bytes = int64_t(c.micro_batch) * c.model.seq_len * c.model.n_embd * 4;
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(onef8.ranks[s].peak_in_flight, 4 - int(s)) << "stage " << s;
    EXPECT_EQ(gpipe8.ranks[s].peak_in_flight, 8) << "stage " << s;
    EXPECT_LT(onef8.ranks[s].activation_bytes, gpipe8.ranks[s].activation_bytes) << "stage " << s;
    // GPipe holds every microbatch's activations at once: linear in m.
    EXPECT_EQ(gpipe16.ranks[s].activation_bytes - gpipe8.ranks[s].activation_bytes,
              2 * (gpipe8.ranks[s].activation_bytes - gpipe4.ranks[s].activation_bytes)) << "stage " << s;
    // 1F1B with m >= P holds P - s microbatches whatever m is, and each sent tensor is freed
    // once the schedule proves its receive done (send_completion_points), so nothing grows
    // with m. (Kept to the end of the step, the sent activations and gradients would add
    // one or two messages of message_bytes per microbatch.)
    EXPECT_EQ(onef16.ranks[s].activation_bytes, onef8.ranks[s].activation_bytes)
        << "stage " << s << " (one message is " << message_bytes << " B)";
  }
}

TEST(MemoryPlan, ReportsEveryFailingCheckAtOnce) {
  TrainConfig c = plan_only_config();
  c.lr = -1;                 // options
  c.tp = 3;                  // MLP width 4 x 64 not divisible by 3
  c.pp = 16;                 // 8 layers < 16 stages
  c.schedule = "interleaved";  // needs --virtual-stages >= 2
  TrainPlan p = make_train_plan(c, 48);
  EXPECT_FALSE(p.ok());
  std::set<std::string> failed;
  for (const PlanCheck& ck : p.checks)
    if (!ck.ok()) failed.insert(ck.name);
  EXPECT_EQ(failed, (std::set<std::string>{"options", "tensor parallel", "pipeline split", "schedule"}));
  EXPECT_TRUE(p.ranks.empty());
  const std::string text = format_train_plan(p);
  EXPECT_NE(text.find("--lr must be a positive number"), std::string::npos) << text;
  EXPECT_NE(text.find("the MLP width 4 x --width = 256 is not divisible by --tp 3"), std::string::npos) << text;
  EXPECT_NE(text.find("--layers 8 is fewer than --pp 16"), std::string::npos) << text;
  EXPECT_NE(text.find("--virtual-stages >= 2"), std::string::npos) << text;
  EXPECT_FALSE(train_plan_json(p)["ok"].get<bool>());
}

// GPT-2 124M at B16 x T1024 on one GPU (planned only: nothing is allocated).
TrainConfig gpt2_124m_b16_cuda() {
  TrainConfig c;
  c.model.n_layer = 12, c.model.n_head = 12, c.model.n_embd = 768, c.model.seq_len = 1024;
  c.model.vocab_size = 50257;
  c.micro_batch = 16;
  c.device = "cuda";
  return c;
}

// GPT-2 124M, B16 x T1024 on one GPU: unchunked, the bf16 logits [16384, 50304] (1.57 GiB)
// are alive at the end of the forward, on top of every layer's activations, and that is
// the step's peak. Chunked, the forward holds one chunk's logits and d(lnf) [16384, 768]
// instead, and the peak drops by at least the whole logits less one chunk.
TEST(MemoryPlan, ChunkedLossDropsTheLogitsFromThePeak) {
  TrainConfig c = gpt2_124m_b16_cuda();
  auto plan = [&](double mib) {
    c.loss_chunk_mib = mib;
    return plan_rank_memory(c, 1, 0, 0);
  };
  const RankMemoryPlan whole = plan(0), c64 = plan(64), c256 = plan(256), c512 = plan(512), c1024 = plan(1024);
  const int64_t N = 16 * 1024, V = 50304, C = 768;
  EXPECT_EQ(loss_chunk_rows(int64_t{256} << 20, N, V, 2), 2560);
  EXPECT_EQ(loss_chunk_rows(int64_t{64} << 20, N, V, 2), 640);
  // At most what the head held at the end of the forward (the logits and the CUDA loss's
  // targets and four [N] row vectors) less what the chunked head holds there (one chunk,
  // its three row vectors, the [N] targets and losses, d(lnf_full)) is saved, at least
  // that much when the peak moved elsewhere.
  const int64_t head_saving = N * V * 2 + 5 * N * 4 - (2560 * V * 2 + 3 * 2560 * 4 + 2 * N * 4 + N * C * 2);
  EXPECT_GE(whole.activation_bytes - c256.activation_bytes, head_saving);
  // The peak may sit at the end of the forward, in the head, where it grows with the chunk
  // by at most the larger chunk's logits and row vectors (and not at all when it is elsewhere).
  EXPECT_GE(c256.activation_bytes, c64.activation_bytes);
  EXPECT_LE(c256.activation_bytes - c64.activation_bytes, (2560 - 640) * (V * 2 + 3 * 4));
  EXPECT_GT(whole.activation_bytes - c256.activation_bytes, int64_t(1500) << 20);  // what the option is for
  // Evaluation has no backward and keeps no layer's activations: with large chunks its peak
  // is the head's, one chunk's logits and row vectors.
  const int64_t r512 = loss_chunk_rows(int64_t{512} << 20, N, V, 2), r1024 = loss_chunk_rows(int64_t{1024} << 20, N, V, 2);
  EXPECT_EQ(c1024.eval_activation_bytes - c512.eval_activation_bytes, (r1024 - r512) * (V * 2 + 3 * 4));
  EXPECT_GT(whole.eval_activation_bytes, c256.eval_activation_bytes + N * V * 2 / 2);
}

// GELU recomputation frees a quarter of each layer's stored activations (4 B T C of 16):
// 12 x 16 x 1024 x 3072 bf16 = 1.13 GiB at GPT-2 124M B16, at the forward's end (the peak).
TEST(MemoryPlan, GeluRecomputationDropsItsOutputFromEveryLayer) {
  TrainConfig c = gpt2_124m_b16_cuda();
  c.recompute = "none";
  const RankMemoryPlan stored = plan_rank_memory(c, 1, 0, 0);
  c.recompute = "gelu";
  const RankMemoryPlan recomputed = plan_rank_memory(c, 1, 0, 0);
  // Less the one layer whose GELU output is alive at the peak either way (the last layer's
  // forward transient, or its backward recomputation, whichever is the peak).
  const int64_t per_layer = int64_t(16) * 1024 * 3072 * 2;
  EXPECT_GE(stored.activation_bytes - recomputed.activation_bytes, 11 * per_layer);
  EXPECT_LE(stored.activation_bytes - recomputed.activation_bytes, 12 * per_layer);
  // A validation forward keeps no layer's activations: GELU's output lives only while its
  // layer runs, recomputed or not.
  EXPECT_EQ(stored.eval_activation_bytes, recomputed.eval_activation_bytes);
}

// --recompute-num-layers N: the first N layers recompute GELU's output, the others store it:
// the plan lies between the two modes, one layer's GELU output per layer stored.
TEST(MemoryPlan, RecomputingSomeLayersStoresTheOthersGeluOutput) {
  TrainConfig c = gpt2_124m_b16_cuda();
  c.recompute = "gelu";
  const int64_t all = plan_rank_memory(c, 1, 0, 0).activation_bytes;
  const int64_t per_layer = int64_t(16) * 1024 * 3072 * 2;
  int64_t previous = all;
  for (int n : {12, 8, 4, 0}) {
    c.recompute_num_layers = n;
    const int64_t bytes = plan_rank_memory(c, 1, 0, 0).activation_bytes;
    if (n == 12) EXPECT_EQ(bytes, all) << "every layer of 12 is every layer";
    else EXPECT_EQ(bytes - previous, 4 * per_layer) << n << " layers recomputed: 4 more layers store GELU's output";
    previous = bytes;
  }
  c.recompute = "none";
  c.recompute_num_layers = -1;
  EXPECT_EQ(plan_rank_memory(c, 1, 0, 0).activation_bytes, previous) << "0 layers recomputed is --recompute none";
}

TEST(MemoryPlan, PlansSixteenRanksOnOneProcess) {
  TrainConfig c = plan_only_config();
  c.tp = 2;
  c.pp = 4;
  c.dp = 2;
  c.grad_accum = 4;
  reset_host_memory_peak();
  const HostMemoryStats before = host_memory_stats();
  TrainPlan p = make_train_plan(c, 1);
  EXPECT_EQ(host_memory_stats().live_bytes, before.live_bytes);
  EXPECT_EQ(host_memory_stats().peak_bytes, before.peak_bytes) << "planning allocated tensors";
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p.world, 16);
  ASSERT_EQ(p.ranks.size(), 8u);  // (tp rank, pp rank) classes
  const nlohmann::json j = train_plan_json(p);
  ASSERT_EQ(j["ranks"].size(), 16u);
  for (int w = 0; w < 16; ++w) {
    const RankGrid g = RankGrid::make(16, w, 2, 4);
    const auto& r = j["ranks"][size_t(w)];
    EXPECT_EQ(r["rank"].get<int>(), w);
    EXPECT_EQ(r["tp_rank"].get<int>(), g.tp_rank);
    EXPECT_EQ(r["dp_rank"].get<int>(), g.dp_rank);
    EXPECT_EQ(r["pp_rank"].get<int>(), g.pp_rank);
    EXPECT_EQ(r["layers"].get<int>(), 2);
    EXPECT_EQ(r["total_bytes"].get<int64_t>(), r["param_bytes"].get<int64_t>() + r["grad_bytes"].get<int64_t>() +
                                                   r["optimizer_bytes"].get<int64_t>() +
                                                   std::max(r["activation_bytes"].get<int64_t>(),
                                                            r["eval_activation_bytes"].get<int64_t>()));
  }
}

}  // namespace
}  // namespace braid
