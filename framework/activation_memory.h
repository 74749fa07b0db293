// Activation memory of one training step, computed without running the model: a dry run
// of the pipeline engine (framework/pipeline_engine.cpp) over this stage's action list
// and of the model's chunk forward/backward (framework/gpt.cpp) in which every tensor is
// a byte count with shared ownership instead of a buffer. Each allocation and each release
// happens where the real code makes it (a saved activation lives in the chunk's
// activations until its layer's backward; a temporary dies at the end of its scope; a
// sent tensor lives until the end of the step), so the peak of the dry run is the peak of
// activation bytes alive at once in the real step. tests/framework/test_plan.cpp holds the
// two to exact agreement on the CPU backend; a change to the model's allocations that is
// not mirrored here fails that test.
//
// CPU: fp32 activations, attention saves its probabilities [B, NH, T, T]. CUDA: bf16
// activations, f32 statistics, attention saves its log-sum-exp [B, NH, T], plus the
// cross-entropy and token-upload temporaries; not modelled there: cuBLASLt workspace,
// the backend's grow-only scratch buffer, the caching allocator's slack.
#pragma once
#include <cstdint>

#include "framework/model_config.h"
#include "parallel/schedule.h"

namespace braid {

struct ActivationPlanInput {
  ModelConfig model;
  ModelLayout layout;          // this rank's layout (make_model_layout)
  int micro_batch = 1;         // B
  ScheduleSpec schedule;       // stages == layout.pp
  bool cuda = false;           // bf16 activations, CUDA attention state
  int eval_microbatches = 0;   // validation pass (run_forward) microbatches
  int64_t loss_chunk_bytes = 0;  // Gpt::set_loss_chunk_bytes
  bool recompute_gelu = false;   // Gpt::set_recompute_gelu
  bool recompute_layers = false; // Gpt::set_recompute_layers
  int recompute_num_layers = -1; // Gpt::set_recompute_num_layers
};

struct ActivationPlan {
  int64_t train_peak_bytes = 0;  // one optimizer step (the schedule's forwards and backwards)
  int64_t eval_peak_bytes = 0;   // one validation pass (forward only, microbatch by microbatch)
};

ActivationPlan plan_activation_memory(const ActivationPlanInput& in);

}  // namespace braid
