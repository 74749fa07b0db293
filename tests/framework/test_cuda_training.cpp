// A single-GPU training run tracks the CPU reference: the same model, data and seed on
// --device cuda (bf16 compute, fp32 master weights) and --device cpu (fp32) give losses
// that agree within bf16 accuracy for 10 steps, and the GPU run learns. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "ops/device_memory.h"

namespace braid {
namespace {

TrainConfig config(const std::string& data, const std::string& out, const std::string& device,
                   const std::string& attention = "braid") {
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = out;
  c.resume = "none";
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 64;
  c.model.seq_len = 64;
  c.model.vocab_size = 96;
  c.steps = 10;
  c.micro_batch = 4;
  c.grad_accum = 2;
  c.lr = 2e-3f;
  c.seed = 4321;
  c.quiet = true;
  c.device = device;
  c.attention = attention;
  return c;
}

TEST(CudaTraining, TenLossesTrackTheCpuRun) {
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU visible";
  auto data = test::make_token_dataset("cuda_train", 96, 1 << 15, 4096);
  auto cpu = test::run_on_ranks(config(data, test::temp_dir("cuda_cpu"), "cpu"), 1);
  for (const char* attention : {"braid", "cudnn"}) {
    auto gpu = test::run_on_ranks(config(data, test::temp_dir(std::string("cuda_gpu_") + attention), "cuda", attention), 1);
    ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
    double worst = 0;
    for (size_t i = 0; i < cpu.losses.size(); ++i) {
      double rel = std::abs(gpu.losses[i] - cpu.losses[i]) / cpu.losses[i];
      worst = std::max(worst, rel);
      // bf16 keeps 8 bits of mantissa (unit roundoff 2^-9 = 0.2%); activations, GEMM
      // inputs and logits are rounded to it while every sum is fp32. Through 2 blocks
      // and 10 AdamW steps the loss moves ~0.1-0.5%; 2% flags real errors (a wrong
      // kernel shifts it by >10%) without flaking on rounding.
      EXPECT_LE(rel, 2e-2) << attention << " step " << i + 1;
    }
    EXPECT_LT(gpu.losses.back(), gpu.losses.front() - 0.1) << attention << ": the GPU run must learn";
    std::printf("cuda (%s attention) vs cpu: worst relative loss difference over 10 steps %.3g (loss %.4f -> %.4f)\n",
                attention, worst, gpu.losses.front(), gpu.losses.back());
  }
}

// NCCL as the data plane. On one rank every group has one member, which still runs the
// bootstrap and every collective through NCCL: the losses must equal the MPI run's exactly
// (a one-member collective is a copy).
TEST(CudaTraining, NcclDataPlaneOnOneRankMatchesMpi) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU visible";
  if (world != 1) GTEST_SKIP() << "one-rank test";
  auto data = test::make_token_dataset("cuda_nccl1", 96, 1 << 15, 4096);
  auto c = config(data, test::temp_dir("cuda_mpi1"), "cuda");
  c.comm = "mpi";
  auto mpi = test::run_on_ranks(c, 1);
  c.out_dir = test::temp_dir("cuda_nccl1_out");
  c.comm = "nccl";
  auto nccl = test::run_on_ranks(c, 1);
  ASSERT_EQ(mpi.losses.size(), nccl.losses.size());
  for (size_t i = 0; i < mpi.losses.size(); ++i) EXPECT_EQ(mpi.losses[i], nccl.losses[i]) << "step " << i + 1;
}

// Across GPUs (2+ ranks, one GPU each): TP2 and DP2 over NCCL track the one-GPU run within
// the same bf16 tolerance as the layout suite. Skipped with fewer GPUs or ranks.
TEST(CudaTraining, NcclAcrossGpusMatchesOneGpu) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (gpu_count() < 2 || world < 2) GTEST_SKIP() << "needs 2+ GPUs and 2+ ranks (have " << gpu_count() << " GPUs, "
                                               << world << " ranks)";
  auto data = test::make_token_dataset("cuda_nccl2", 96, 1 << 15, 4096);
  auto ref = test::run_on_ranks(config(data, test::temp_dir("cuda_nccl_ref"), "cuda"), 1);
  for (const char* layout : {"tp2", "dp2", "pp2"}) {
    auto c = config(data, test::temp_dir(std::string("cuda_nccl_") + layout), "cuda");
    const std::string l = layout;
    c.tp = l == "tp2" ? 2 : 1;
    c.pp = l == "pp2" ? 2 : 1;  // 1F1B: pipeline messages in NCCL groups
    c.grad_accum = l == "dp2" ? 1 : 2;  // DP2 halves the microbatches: same global batch
    c.comm = "nccl";
    c.local_device = rank % gpu_count();
    auto r = test::run_on_ranks(c, 2);
    ASSERT_EQ(r.losses.size(), ref.losses.size());
    for (size_t i = 0; i < r.losses.size(); ++i)  // bf16 rounding at other points: 1e-2
      EXPECT_NEAR(r.losses[i], ref.losses[i], 1e-2 * ref.losses[i]) << layout << " step " << i + 1;
  }
}

}  // namespace
}  // namespace braid
