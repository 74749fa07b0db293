// The memory and layout plan of a training run (braid-train --plan): from the config
// alone, without allocating the model and without the ranks of the layout, every rank's
// parameter, gradient, optimizer-state and peak activation bytes, and every check of the
// config and layout that a real launch would fail.
//
// Where the numbers come from (the real code, run in a mode that allocates nothing):
//   parameters, gradients  the rank's ParamStore as Gpt::register_params fills it and
//                          ParamStore::assign_buckets lays it out (bucket padding included);
//                          (ZeRO-1 reduce-scatters the gradients in place)
//   optimizer              AdamW moments m and v: flat size, or the ZeRO-1 shard
//   activations            framework/activation_memory.h: a dry run of this stage's
//                          schedule actions through the model's allocations
// Every data-parallel replica holds the same bytes and so does every TP rank of a stage,
// but the plan computes each (tp rank, pp rank) class on its own.
//
// Checks run the real validation functions, grouped by concern so that each concern can
// fail independently; all failures are reported together (the first per concern).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/train_config.h"

namespace braid {

struct PlanCheck {
  std::string name;     // "options", "rank grid", "tensor parallel", ...
  std::string problem;  // empty when the check passes
  bool ok() const { return problem.empty(); }
};

// Bytes held by one rank (on its device: host memory on CPU, GPU memory with --device cuda).
struct RankMemoryPlan {
  int tp_rank = 0, pp_rank = 0;
  std::vector<int> world_ranks;  // ranks of this class (one per data-parallel replica)
  int layers = 0;                // transformer blocks held (over all virtual chunks)
  int64_t param_elems = 0;       // flat parameter buffer, bucket padding included
  int64_t param_bytes = 0;       // fp32 values (+ bf16 GEMM copies on CUDA)
  int64_t grad_bytes = 0;        // fp32 gradients (ZeRO-1 reduces them in place)
  int64_t optimizer_bytes = 0;   // AdamW m, v (this replica's shard under ZeRO-1)
  int64_t activation_bytes = 0;  // peak during one training step
  int64_t eval_activation_bytes = 0;  // peak during one validation pass
  int peak_in_flight = 0;        // (microbatch, chunk) pairs forwarded, not yet backwarded
  int64_t total_bytes() const {
    return param_bytes + grad_bytes + optimizer_bytes + std::max(activation_bytes, eval_activation_bytes);
  }
};

struct TrainPlan {
  TrainConfig config;  // as planned (vocabulary resolved)
  int world = 1, tp = 1, pp = 1, dp = 1;
  std::string vocab_source;  // "--vocab-size", "dataset DIR" or "GPT-2 default"
  bool nccl_p2p = false;  // pipeline messages planned over NCCL channels (CUDA)
  double bubble_fraction = 0;
  std::vector<PlanCheck> checks;
  std::vector<RankMemoryPlan> ranks;  // one per (pp rank, tp rank); empty if the layout is invalid
  bool ok() const;
};

// Both need MPI initialised (the model is built over a communicator of MPI_COMM_SELF that
// registering parameters never uses).
// The plan of `cfg` on cfg.dp data-parallel replicas (cfg.dp <= 0: as many as
// world_size / (tp * pp) gives, at least 1). Never throws InputError: problems are checks.
TrainPlan make_train_plan(const TrainConfig& cfg, int world_size);

// The memory of one rank class; InputError if the layout or schedule is invalid.
RankMemoryPlan plan_rank_memory(const TrainConfig& cfg, int dp, int tp_rank, int pp_rank);

std::string format_train_plan(const TrainPlan& plan);  // the table braid-train --plan prints
nlohmann::json train_plan_json(const TrainPlan& plan);  // --plan-json FILE

// braid-train --plan: world rank 0 prints the plan and writes --plan-json; returns the exit
// code on every rank: 0 when every check passes, 2 when one fails. InputError (on every
// rank) when the JSON file cannot be written.
int run_train_plan(const TrainConfig& cfg, int world_size);

}  // namespace braid
