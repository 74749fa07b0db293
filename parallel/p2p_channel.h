// A point-to-point channel of a pipeline: the messages of one lane (activations or their
// gradients) from one rank of a group to another, in the order the sender issues them.
// Shared by the schedules (which prove that both ends agree on that order) and the
// communicators (which may carry each channel on its own ordered link, e.g. a two-rank
// NCCL communicator with its own stream); this header knows neither MPI nor CUDA.
#pragma once
#include <compare>

namespace braid {

enum class PipeLane : int { Activation = 0, Gradient = 1 };

struct P2PChannel {
  int from;       // sending rank in the group (pipeline stage)
  int to;         // receiving rank in the group
  PipeLane lane;  // what it carries
  auto operator<=>(const P2PChannel&) const = default;
};

}  // namespace braid
