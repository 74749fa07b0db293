// Executes a pipeline schedule (parallel/schedule.h: a list of actions per stage) over the
// model chunks of this rank: Forward/Backward run the chunk, Send/Recv move activations
// [B, Ts, C] and their gradients between stages over the PP communicator's channels (one
// per sender, receiver and lane; MPI matches by unique tags, NCCL by order on the channel).
// Sends are non-blocking; each sent tensor is freed at the first action that the schedule
// proves comes after its receive (send_completion_points), else at the end of the step.
// Receives block (on the GPU: the compute stream waits, the host goes on). Activations
// of a (microbatch, chunk) live from its Forward to its Backward, so memory follows the
// schedule (1F1B: at most PP microbatches in flight on the first stage).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "framework/gpt.h"
#include "parallel/rank_grid.h"
#include "parallel/schedule.h"

namespace braid {

class PipelineEngine {
 public:
  PipelineEngine(Gpt& model, ProcessGroups& groups, ScheduleSpec spec);

  // One training step over the microbatches: tokens[m] / targets[m] are [B*T] each.
  // Returns the sum of per-token losses seen by this rank's head chunk (0 elsewhere).
  // poll() is called between actions (lets the data-parallel reducer progress).
  double run_train(const std::vector<std::vector<int32_t>>& tokens,
                   const std::vector<std::vector<int32_t>>& targets, float dloss_scale,
                   const Gpt::FinalFn& on_param_final, const std::function<void()>& poll);
  // Forward only (validation): same data layout, returns the head's loss sum.
  double run_forward(const std::vector<std::vector<int32_t>>& tokens,
                     const std::vector<std::vector<int32_t>>& targets);

  const ScheduleSpec& spec() const { return spec_; }
  int peak_live_activations() const { return peak_live_; }

 private:
  using Key = std::pair<int, int>;  // (microbatch, local chunk)
  Tensor new_activation() const;

  Gpt& model_;
  ProcessGroups& groups_;
  ScheduleSpec spec_;
  std::vector<Action> actions_;  // this stage's list
  // Per action of this stage: the sends (action indices) that send_completion_points
  // proves complete once it has run; their tensors are freed there.
  std::vector<std::vector<int>> complete_after_;
  int peak_live_ = 0;
  // True when the PP communicator carries the channels on ordered links (NCCL).
  bool ordered_channels_ = false;

 public:
  bool uses_ordered_channels() const { return ordered_channels_; }
};

}  // namespace braid
