// Pipeline schedules as data: a pure function of (kind, stages, microbatches, virtual
// stages) returns, for every pipeline stage, the ordered list of actions that stage runs
// (compute and point-to-point messages). An engine executes the lists; this file knows no
// MPI and no tensors, so every schedule can be checked without a model: sends and receives
// pair up, the discrete-event simulation finishes (no deadlock), the bubble fraction and
// the peak number of in-flight microbatches match the closed forms below.
//
// Vocabulary (Megatron-LM): P = stages (--pp), m = microbatches (--grad-accum),
// V = virtual stages (--virtual-stages), model chunks per stage. The model is cut into
// G = P * V chunks in layer order; global chunk g lives on stage g % P as local chunk
// g / P, so stage s holds the virtual stages s, s + P, s + 2P, ...
//
// Contract the engine relies on (for every stage's list):
//   * Forward(mb, c) on global chunk g > 0 is preceded by RecvAct(mb, c, peer = stage of
//     g - 1); after it, if g < G - 1, comes SendAct(mb, c, peer = stage of g + 1). The
//     last chunk's Forward computes the loss, its Backward starts from the loss.
//   * Backward(mb, c) on g < G - 1 is preceded by RecvGrad(mb, c, peer = stage of g + 1);
//     after it, if g > 0, comes SendGrad(mb, c, peer = stage of g - 1).
//   * With P == 1 there is no Send/Recv at all: chunk g hands its output to chunk g + 1
//     on the same stage, even when V > 1.
//   * Sends are non-blocking (MPI_Isend, completed later), receives block; every schedule
//     made here is deadlock-free under that rule (simulate_schedule proves it per config).
//   * Backward(mb, c) always comes after Forward(mb, c) on the same stage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/p2p_channel.h"

namespace braid {

enum class ScheduleKind { GPipe, OneFOneB, Interleaved1F1B };

// "gpipe" | "1f1b" | "interleaved" (the values of --schedule); InputError otherwise.
ScheduleKind parse_schedule_kind(const std::string& name);
std::string to_string(ScheduleKind kind);  // inverse of parse_schedule_kind

enum class ActionKind { Forward, Backward, RecvAct, SendAct, RecvGrad, SendGrad };

struct Action {
  ActionKind kind;
  int microbatch;  // 0 .. m-1
  int chunk;       // local model chunk 0 .. V-1 (global chunk = chunk * P + stage)
  int peer;        // pipeline stage of the peer for Send/Recv, -1 for Forward/Backward
  bool operator==(const Action&) const = default;
};

struct ScheduleSpec {
  ScheduleKind kind;
  int stages;          // P, --pp
  int microbatches;    // m, --grad-accum
  int virtual_stages;  // V, --virtual-stages: 1 unless kind == Interleaved1F1B
};

// InputError naming the flag at fault: every count >= 1; GPipe and 1F1B need V == 1;
// interleaved needs V >= 2 and m % P == 0 (Megatron's constraint: microbatches enter in
// groups of P per virtual stage); the message tags must fit in an int.
void validate_schedule_spec(const ScheduleSpec& spec);

// One action list per stage (index = stage). Pure function; validates the spec first.
//   GPipe:       all m forwards, then all m backwards (microbatch order 0..m-1).
//   1F1B:        PipeDream-flush: warm-up of min(P - s - 1, m) forwards, steady state of
//                one forward + one backward, cool-down backwards.
//   Interleaved: Megatron's interleaved 1F1B over m * V (microbatch, chunk) units, warm-up
//                min((P - s - 1) * 2 + (V - 1) * P, m * V) forwards.
// Each receive sits just before the compute that needs it, each send just after the
// compute that produced it.
std::vector<std::vector<Action>> make_schedule(const ScheduleSpec& spec);

// Model chunk index in layer order: chunk * stages + stage.
int global_chunk(int stage, int chunk, int stages);

// MPI tag of one pipeline message, identical on the sending and the receiving side:
//   tag = (is_grad * total_chunks + global_chunk_of_receiver) * microbatches + microbatch,
// where is_grad is 0 for SendAct/RecvAct and 1 for SendGrad/RecvGrad. The range is
// [0, 2 * total_chunks * microbatches): unique per message, activation tags and gradient
// tags disjoint. MPI only guarantees tags up to 32767 (MPI_TAG_UB may be larger), which
// holds while 2 * P * V * m <= 32768, e.g. P = 8, V = 4, m = 512; the engine should
// compare with MPI_TAG_UB once. `kind` must be a Send or Recv kind (BRAID_CHECK).
int message_tag(ActionKind kind, int microbatch, int global_chunk_of_receiver, int microbatches,
                int total_chunks);
// Convenience: the tag of a Send/Recv action found in stage `stage`'s list.
int message_tag(const Action& action, int stage, const ScheduleSpec& spec);

// "Forward(mb=3, chunk=0)", "SendAct(mb=3, chunk=1, peer=2)".
std::string to_string(ActionKind kind);
std::string to_string(const Action& action);

// Cost model of the simulation, in time units per (microbatch, chunk). The default 1:2
// forward:backward ratio is the usual rule of thumb (backward computes two GEMMs per
// forward GEMM). Communication is instantaneous.
struct ActionCosts {
  int64_t forward = 1;
  int64_t backward = 2;
};

struct ScheduleStats {
  // Idle compute time over all stages / (stages * makespan). With uniform costs the
  // schedules made here meet, exactly:
  //   GPipe, 1F1B:  (P - 1) / (m + P - 1)
  //   Interleaved:  (P - 1) / (V * m + P - 1)
  // i.e. Megatron's bubble/ideal ratios (P - 1) / m and (P - 1) / (V * m) expressed as a
  // fraction of the total time.
  double bubble_fraction;
  int peak_in_flight;  // max over stages
  // Per stage, max number of (microbatch, chunk) pairs forwarded but not yet backwarded.
  // For V == 1 this is a count of microbatches: 1F1B gives min(P - s, m), GPipe m.
  // For interleaved it counts chunk-activations, each 1/V of a stage's layers.
  std::vector<int> peak_in_flight_per_stage;
  int64_t makespan;  // time at which the last stage finishes its last action
};

// Discrete-event simulation of a schedule: each stage runs its list in order; a Forward
// costs costs.forward, a Backward costs.backward; sends never block; a Recv blocks until
// the matching Send has executed on the peer. Throws braid::Error (BRAID_CHECK) naming the
// stage and the action on: deadlock, a receive with no matching send, a send never
// received, a duplicate action, a Backward before its Forward, a compute before its input
// arrived, a send before the compute that produces it, a wrong peer, a missing compute.
ScheduleStats simulate_schedule(const std::vector<std::vector<Action>>& schedule,
                                const ScheduleSpec& spec, const ActionCosts& costs = {});

}  // namespace braid

namespace braid {

// Channels (parallel/p2p_channel.h): the messages of one lane from one stage to another.
// The channel of a Send/Recv action found in stage `stage`'s list (BRAID_CHECK otherwise).
P2PChannel p2p_channel(const Action& action, int stage);
// Every channel the schedule uses, sorted (the same list on every stage).
std::vector<P2PChannel> p2p_channels(const std::vector<std::vector<Action>>& schedule);

// When each send is known to be complete, from the schedule alone: for stage s and the
// index i of a Send in its list, done[s][i] is the index of the first later action of the
// same stage that runs only after the matching receive has run on the peer (a chain of
// program order and messages leads from that receive to it), or -1 when no action of the
// step follows it that way (the send completes at the end of the step). Lets the engine
// free each sent tensor as early as it may, at the same point on every run; a gradient
// sent down the pipeline otherwise stays allocated for the rest of the step, so 1F1B's
// memory would grow with the number of microbatches. -1 for actions that are not sends.
std::vector<std::vector<int>> send_completion_points(const std::vector<std::vector<Action>>& schedule,
                                                    const ScheduleSpec& spec);

// True when, on every channel, the receiver posts its receives in the order the sender
// issues its sends (compared by message_tag); otherwise false with `why` naming the first
// mismatch of each bad channel. This is what a transport that matches by order (NCCL)
// needs on top of simulate_schedule's guarantee: with each channel on its own ordered
// link and sends that never hold up the sender's compute, a schedule that completes with
// non-blocking sends and blocking receives completes there too (each receive's message is
// the next one on its link, issued by a sender that the MPI-model run shows gets there).
bool check_channel_order(const std::vector<std::vector<Action>>& schedule, const ScheduleSpec& spec,
                         std::string* why);

}  // namespace braid
