// Pipeline schedules as data (see schedule.h). Generation is split in two steps so each
// is easy to check by eye: (1) the compute order of one stage, a list of Forward/Backward
// on (microbatch, local chunk); (2) the messages around each compute, which follow from
// the chunk layout alone. The simulator replays the lists with blocking receives and
// non-blocking sends and checks every rule the engine relies on.
#include "parallel/schedule.h"

#include <algorithm>
#include <climits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "ops/check.h"

namespace braid {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::GPipe;
  if (name == "1f1b") return ScheduleKind::OneFOneB;
  if (name == "interleaved") return ScheduleKind::Interleaved1F1B;
  BRAID_REQUIRE(false, "--schedule must be one of gpipe, 1f1b, interleaved (got '" << name << "')");
  return ScheduleKind::GPipe;  // unreachable
}

std::string to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::GPipe: return "gpipe";
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::Interleaved1F1B: return "interleaved";
  }
  return "unknown(" + std::to_string(static_cast<int>(kind)) + ")";
}

void validate_schedule_spec(const ScheduleSpec& spec) {
  const bool known = spec.kind == ScheduleKind::GPipe || spec.kind == ScheduleKind::OneFOneB ||
                     spec.kind == ScheduleKind::Interleaved1F1B;
  BRAID_REQUIRE(known, "--schedule has an unknown value "
                           << static_cast<int>(spec.kind)
                           << " (expected gpipe, 1f1b or interleaved)");
  BRAID_REQUIRE(spec.stages >= 1, "--pp (pipeline stages) must be >= 1, got " << spec.stages);
  BRAID_REQUIRE(spec.microbatches >= 1,
                "--grad-accum (number of microbatches) must be >= 1, got " << spec.microbatches);
  BRAID_REQUIRE(spec.virtual_stages >= 1,
                "--virtual-stages must be >= 1, got " << spec.virtual_stages);
  const std::string schedule = to_string(spec.kind);
  if (spec.kind == ScheduleKind::Interleaved1F1B) {
    BRAID_REQUIRE(
        spec.virtual_stages >= 2,
        "--schedule=interleaved needs --virtual-stages >= 2 (model chunks per stage), got "
            << spec.virtual_stages << "; use --schedule=1f1b for one chunk per stage");
    BRAID_REQUIRE(spec.microbatches % spec.stages == 0,
                  "--schedule=interleaved needs --grad-accum (number of microbatches, "
                      << spec.microbatches << ") to be a multiple of --pp (" << spec.stages
                      << "): microbatches enter the interleaved pipeline in groups of --pp");
  } else {
    BRAID_REQUIRE(spec.virtual_stages == 1,
                  "--schedule=" << schedule << " needs --virtual-stages=1, got "
                                << spec.virtual_stages
                                << "; only --schedule=interleaved splits a stage into chunks");
  }
  // message_tag() must not overflow an int.
  const int64_t tags = 2LL * spec.stages * spec.virtual_stages * spec.microbatches;
  BRAID_REQUIRE(tags <= INT_MAX, "--pp (" << spec.stages << ") x --virtual-stages ("
                                          << spec.virtual_stages << ") x --grad-accum ("
                                          << spec.microbatches << ") is too large for MPI tags");
}

int global_chunk(int stage, int chunk, int stages) { return chunk * stages + stage; }

int message_tag(ActionKind kind, int microbatch, int global_chunk_of_receiver, int microbatches,
                int total_chunks) {
  BRAID_CHECK(kind != ActionKind::Forward && kind != ActionKind::Backward,
              "message_tag: " << to_string(kind) << " is not a message");
  BRAID_CHECK(microbatch >= 0 && microbatch < microbatches,
              "message_tag: microbatch " << microbatch << " outside [0, " << microbatches << ")");
  BRAID_CHECK(
      global_chunk_of_receiver >= 0 && global_chunk_of_receiver < total_chunks,
      "message_tag: chunk " << global_chunk_of_receiver << " outside [0, " << total_chunks << ")");
  const int is_grad = (kind == ActionKind::SendGrad || kind == ActionKind::RecvGrad) ? 1 : 0;
  return (is_grad * total_chunks + global_chunk_of_receiver) * microbatches + microbatch;
}

int message_tag(const Action& action, int stage, const ScheduleSpec& spec) {
  const int g = global_chunk(stage, action.chunk, spec.stages);
  int receiver = g;  // a Recv is addressed to the chunk that runs it
  if (action.kind == ActionKind::SendAct) receiver = g + 1;
  if (action.kind == ActionKind::SendGrad) receiver = g - 1;
  return message_tag(action.kind, action.microbatch, receiver, spec.microbatches,
                     spec.stages * spec.virtual_stages);
}

std::string to_string(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return "Forward";
    case ActionKind::Backward: return "Backward";
    case ActionKind::RecvAct: return "RecvAct";
    case ActionKind::SendAct: return "SendAct";
    case ActionKind::RecvGrad: return "RecvGrad";
    case ActionKind::SendGrad: return "SendGrad";
  }
  return "ActionKind(" + std::to_string(static_cast<int>(kind)) + ")";
}

std::string to_string(const Action& a) {
  std::ostringstream os;
  os << to_string(a.kind) << "(mb=" << a.microbatch << ", chunk=" << a.chunk;
  if (a.kind != ActionKind::Forward && a.kind != ActionKind::Backward) os << ", peer=" << a.peer;
  os << ")";
  return os.str();
}

namespace {

// One compute step of a stage: Forward or Backward of (microbatch, local chunk).
struct Compute {
  bool forward;
  int microbatch;
  int chunk;
};

std::vector<Compute> gpipe_order(int m) {
  std::vector<Compute> order;
  for (int mb = 0; mb < m; ++mb) order.push_back({true, mb, 0});
  for (int mb = 0; mb < m; ++mb) order.push_back({false, mb, 0});
  return order;
}

// PipeDream-flush: stage s keeps at most min(P - s, m) microbatches in flight.
std::vector<Compute> one_f_one_b_order(int stages, int stage, int m) {
  const int warmup = std::min(stages - stage - 1, m);
  std::vector<Compute> order;
  for (int mb = 0; mb < warmup; ++mb) order.push_back({true, mb, 0});
  for (int i = 0; i < m - warmup; ++i) {  // steady state: forward i + warmup, backward i
    order.push_back({true, i + warmup, 0});
    order.push_back({false, i, 0});
  }
  for (int i = m - warmup; i < m; ++i) order.push_back({false, i, 0});
  return order;
}

// Megatron's interleaved 1F1B. The k-th forward (and k-th backward) of a stage is one of
// m * V (microbatch, chunk) units: microbatches enter in groups of P; a group runs through
// chunk 0, then chunk 1, ... (forward) or chunk V-1, V-2, ... (backward).
Compute interleaved_unit(int k, bool forward, int stages, int virtual_stages) {
  const int group_size = stages * virtual_stages;
  const int in_group = k % group_size;
  int chunk = in_group / stages;
  if (!forward) chunk = virtual_stages - 1 - chunk;
  const int microbatch = (k / group_size) * stages + k % stages;
  return {forward, microbatch, chunk};
}

std::vector<Compute> interleaved_order(int stages, int stage, int m, int virtual_stages) {
  const int total = m * virtual_stages;
  // Stage s runs ahead by 2 units per later stage (a forward unit reaches the last stage
  // and its gradient comes back) plus a full round of the other V - 1 chunks.
  const int warmup = std::min((stages - stage - 1) * 2 + (virtual_stages - 1) * stages, total);
  std::vector<Compute> order;
  for (int k = 0; k < warmup; ++k)
    order.push_back(interleaved_unit(k, true, stages, virtual_stages));
  for (int k = 0; k < total - warmup; ++k) {
    order.push_back(interleaved_unit(k + warmup, true, stages, virtual_stages));
    order.push_back(interleaved_unit(k, false, stages, virtual_stages));
  }
  for (int k = total - warmup; k < total; ++k)
    order.push_back(interleaved_unit(k, false, stages, virtual_stages));
  return order;
}

// Wraps one compute in its messages (see the contract in schedule.h).
void append_with_messages(std::vector<Action>& out, const Compute& c, int stage,
                          const ScheduleSpec& spec) {
  const int stages = spec.stages;
  const int last = stages * spec.virtual_stages - 1;
  const int g = global_chunk(stage, c.chunk, stages);
  const bool talk = stages > 1;  // with one stage every neighbour chunk is local
  if (c.forward) {
    if (talk && g > 0)
      out.push_back({ActionKind::RecvAct, c.microbatch, c.chunk, (g - 1) % stages});
    out.push_back({ActionKind::Forward, c.microbatch, c.chunk, -1});
    if (talk && g < last)
      out.push_back({ActionKind::SendAct, c.microbatch, c.chunk, (g + 1) % stages});
  } else {
    if (talk && g < last)
      out.push_back({ActionKind::RecvGrad, c.microbatch, c.chunk, (g + 1) % stages});
    out.push_back({ActionKind::Backward, c.microbatch, c.chunk, -1});
    if (talk && g > 0)
      out.push_back({ActionKind::SendGrad, c.microbatch, c.chunk, (g - 1) % stages});
  }
}

}  // namespace

std::vector<std::vector<Action>> make_schedule(const ScheduleSpec& spec) {
  validate_schedule_spec(spec);
  std::vector<std::vector<Action>> schedule(spec.stages);
  for (int stage = 0; stage < spec.stages; ++stage) {
    std::vector<Compute> order;
    switch (spec.kind) {
      case ScheduleKind::GPipe: order = gpipe_order(spec.microbatches); break;
      case ScheduleKind::OneFOneB:
        order = one_f_one_b_order(spec.stages, stage, spec.microbatches);
        break;
      case ScheduleKind::Interleaved1F1B:
        order = interleaved_order(spec.stages, stage, spec.microbatches, spec.virtual_stages);
        break;
    }
    for (const Compute& c : order) append_with_messages(schedule[stage], c, stage, spec);
  }
  return schedule;
}

// ----------------------------------------------------------------------------------------
// Simulation

namespace {

// A message is identified by (is_grad, microbatch, global chunk of the receiver): exactly
// one stage may send it and exactly one may receive it.
using MessageKey = std::tuple<bool, int, int>;

struct Message {
  int sender;
  int64_t sent_at;
  bool received = false;
};

struct StageState {
  size_t next = 0;    // index of the next action to run
  int64_t clock = 0;  // time at which the stage is free
  int64_t busy = 0;   // compute time spent
  int in_flight = 0;  // (microbatch, chunk) pairs forwarded, not yet backwarded
  int peak = 0;
  // Indexed [microbatch * V + chunk].
  std::vector<char> forwarded, backwarded, got_act, got_grad;
};

class Simulator {
 public:
  Simulator(const std::vector<std::vector<Action>>& schedule, const ScheduleSpec& spec,
            const ActionCosts& costs)
      : schedule_(schedule), spec_(spec), costs_(costs), state_(spec.stages) {
    const size_t units = static_cast<size_t>(spec.microbatches) * spec.virtual_stages;
    for (StageState& st : state_) {
      st.forwarded.assign(units, 0);
      st.backwarded.assign(units, 0);
      st.got_act.assign(units, 0);
      st.got_grad.assign(units, 0);
    }
  }

  ScheduleStats run() {
    for (bool progress = true; progress;) {
      progress = false;
      for (int s = 0; s < spec_.stages; ++s)
        while (state_[s].next < schedule_[s].size() && step(s)) progress = true;
    }
    report_stuck();
    check_complete();
    return stats();
  }

 private:
  int last_chunk() const { return spec_.stages * spec_.virtual_stages - 1; }
  size_t unit(const Action& a) const {
    return static_cast<size_t>(a.microbatch) * spec_.virtual_stages + a.chunk;
  }
  std::string where(int s, const Action& a) const {
    return "stage " + std::to_string(s) + ", action #" + std::to_string(state_[s].next) + " " +
           to_string(a);
  }
  MessageKey key_of(int s, const Action& a) const {
    const int g = global_chunk(s, a.chunk, spec_.stages);
    switch (a.kind) {
      case ActionKind::SendAct: return {false, a.microbatch, g + 1};
      case ActionKind::RecvAct: return {false, a.microbatch, g};
      case ActionKind::SendGrad: return {true, a.microbatch, g - 1};
      default: return {true, a.microbatch, g};  // RecvGrad
    }
  }

  // Shape checks that do not depend on time: ranges, peers, messages that cannot exist.
  void check_shape(int s, const Action& a) const {
    BRAID_CHECK(a.microbatch >= 0 && a.microbatch < spec_.microbatches,
                where(s, a) << ": microbatch out of range [0, " << spec_.microbatches << ")");
    BRAID_CHECK(a.chunk >= 0 && a.chunk < spec_.virtual_stages,
                where(s, a) << ": chunk out of range [0, " << spec_.virtual_stages << ")");
    const int g = global_chunk(s, a.chunk, spec_.stages);
    const int P = spec_.stages;
    switch (a.kind) {
      case ActionKind::Forward:
      case ActionKind::Backward:
        BRAID_CHECK(a.peer == -1, where(s, a) << ": compute actions have peer -1");
        return;
      case ActionKind::RecvAct:
        BRAID_CHECK(P > 1 && g > 0, where(s, a) << ": no activation arrives at global chunk " << g
                                                << (P == 1 ? " (one stage: all local)" : ""));
        BRAID_CHECK(a.peer == (g - 1) % P, where(s, a) << ": peer should be " << (g - 1) % P);
        return;
      case ActionKind::SendAct:
        BRAID_CHECK(P > 1 && g < last_chunk(),
                    where(s, a) << ": global chunk " << g << " sends no activation"
                                << (P == 1 ? " (one stage: all local)" : ""));
        BRAID_CHECK(a.peer == (g + 1) % P, where(s, a) << ": peer should be " << (g + 1) % P);
        return;
      case ActionKind::RecvGrad:
        BRAID_CHECK(P > 1 && g < last_chunk(), where(s, a)
                                                   << ": no gradient arrives at global chunk " << g
                                                   << (P == 1 ? " (one stage: all local)" : ""));
        BRAID_CHECK(a.peer == (g + 1) % P, where(s, a) << ": peer should be " << (g + 1) % P);
        return;
      case ActionKind::SendGrad:
        BRAID_CHECK(P > 1 && g > 0, where(s, a) << ": global chunk " << g << " sends no gradient"
                                                << (P == 1 ? " (one stage: all local)" : ""));
        BRAID_CHECK(a.peer == (g - 1) % P, where(s, a) << ": peer should be " << (g - 1) % P);
        return;
    }
    BRAID_CHECK(false, where(s, a) << ": unknown action kind");
  }

  // Runs the next action of stage s; false when it blocks on a receive.
  bool step(int s) {
    StageState& st = state_[s];
    const Action& a = schedule_[s][st.next];
    check_shape(s, a);
    const size_t u = unit(a);
    const int g = global_chunk(s, a.chunk, spec_.stages);
    const bool local_neighbours = spec_.stages == 1;
    switch (a.kind) {
      case ActionKind::Forward: {
        BRAID_CHECK(!st.forwarded[u], where(s, a) << ": duplicate Forward");
        if (g > 0) {
          const bool ready = local_neighbours ? st.forwarded[u - 1] : st.got_act[u];
          BRAID_CHECK(ready, where(s, a) << ": Forward before its input activation "
                                         << (local_neighbours ? "(previous chunk not forwarded)"
                                                              : "(no RecvAct before it)"));
        }
        st.forwarded[u] = 1;
        st.clock += costs_.forward;
        st.busy += costs_.forward;
        st.peak = std::max(st.peak, ++st.in_flight);
        break;
      }
      case ActionKind::Backward: {
        BRAID_CHECK(st.forwarded[u], where(s, a) << ": Backward before its Forward");
        BRAID_CHECK(!st.backwarded[u], where(s, a) << ": duplicate Backward");
        if (g < last_chunk()) {
          const bool ready = local_neighbours ? st.backwarded[u + 1] : st.got_grad[u];
          BRAID_CHECK(ready, where(s, a) << ": Backward before its output gradient "
                                         << (local_neighbours ? "(next chunk not backwarded)"
                                                              : "(no RecvGrad before it)"));
        }
        st.backwarded[u] = 1;
        st.clock += costs_.backward;
        st.busy += costs_.backward;
        --st.in_flight;
        break;
      }
      case ActionKind::SendAct:
      case ActionKind::SendGrad: {
        const bool grad = a.kind == ActionKind::SendGrad;
        BRAID_CHECK(grad ? st.backwarded[u] : st.forwarded[u],
                    where(s, a) << ": sent before the " << (grad ? "Backward" : "Forward")
                                << " that produces it");
        const auto [it, inserted] = messages_.emplace(key_of(s, a), Message{s, st.clock});
        BRAID_CHECK(inserted, where(s, a) << ": duplicate send (already sent by stage "
                                          << it->second.sender << ")");
        break;
      }
      case ActionKind::RecvAct:
      case ActionKind::RecvGrad: {
        auto it = messages_.find(key_of(s, a));
        if (it == messages_.end()) return false;  // blocks until the peer sends
        BRAID_CHECK(!it->second.received, where(s, a) << ": duplicate receive");
        it->second.received = true;
        st.clock = std::max(st.clock, it->second.sent_at);
        (a.kind == ActionKind::RecvAct ? st.got_act : st.got_grad)[u] = 1;
        break;
      }
    }
    ++st.next;
    return true;
  }

  // No stage can move: each unfinished stage waits in a receive. A receive whose message
  // appears nowhere in the peer's remaining actions can never complete; otherwise the
  // stages wait on each other in a cycle.
  void report_stuck() const {
    std::ostringstream blocked;
    bool any = false;
    for (int s = 0; s < spec_.stages; ++s) {
      const StageState& st = state_[s];
      if (st.next >= schedule_[s].size()) continue;
      const Action& a = schedule_[s][st.next];
      const ActionKind send_kind =
          a.kind == ActionKind::RecvAct ? ActionKind::SendAct : ActionKind::SendGrad;
      const int g = global_chunk(s, a.chunk, spec_.stages);
      const int sender_g = a.kind == ActionKind::RecvAct ? g - 1 : g + 1;
      const int sender = a.peer;  // checked by check_shape() when the receive blocked
      bool pending = false;
      const auto& peer_list = schedule_[sender];
      for (size_t i = state_[sender].next; i < peer_list.size(); ++i) {
        const Action& b = peer_list[i];
        if (b.kind == send_kind && b.microbatch == a.microbatch &&
            global_chunk(sender, b.chunk, spec_.stages) == sender_g)
          pending = true;
      }
      BRAID_CHECK(pending, where(s, a)
                               << ": receive with no matching send (" << to_string(send_kind)
                               << " of microbatch " << a.microbatch << " from global chunk "
                               << sender_g << " on stage " << sender << " never runs)");
      blocked << (any ? "; " : "") << where(s, a);
      any = true;
    }
    BRAID_CHECK(!any,
                "schedule deadlock, every unfinished stage blocks in a receive: " << blocked.str());
  }

  void check_complete() const {
    for (const auto& [key, msg] : messages_) {
      const auto& [grad, mb, receiver_g] = key;
      BRAID_CHECK(msg.received, "stage " << msg.sender << ": " << (grad ? "SendGrad" : "SendAct")
                                         << "(mb=" << mb << ") to global chunk " << receiver_g
                                         << " on stage " << receiver_g % spec_.stages
                                         << " is never received");
    }
    for (int s = 0; s < spec_.stages; ++s)
      for (int mb = 0; mb < spec_.microbatches; ++mb)
        for (int c = 0; c < spec_.virtual_stages; ++c) {
          const size_t u = static_cast<size_t>(mb) * spec_.virtual_stages + c;
          BRAID_CHECK(state_[s].forwarded[u],
                      "stage " << s << ": Forward(mb=" << mb << ", chunk=" << c << ") never runs");
          BRAID_CHECK(state_[s].backwarded[u],
                      "stage " << s << ": Backward(mb=" << mb << ", chunk=" << c << ") never runs");
        }
  }

  ScheduleStats stats() const {
    ScheduleStats out{};
    int64_t busy = 0;
    out.makespan = 0;
    out.peak_in_flight = 0;
    for (const StageState& st : state_) {
      out.makespan = std::max(out.makespan, st.clock);
      busy += st.busy;
      out.peak_in_flight_per_stage.push_back(st.peak);
      out.peak_in_flight = std::max(out.peak_in_flight, st.peak);
    }
    const double total = static_cast<double>(spec_.stages) * static_cast<double>(out.makespan);
    out.bubble_fraction = total > 0 ? static_cast<double>(total - busy) / total : 0.0;
    return out;
  }

  const std::vector<std::vector<Action>>& schedule_;
  const ScheduleSpec& spec_;
  ActionCosts costs_;
  std::vector<StageState> state_;
  std::map<MessageKey, Message> messages_;
};

}  // namespace

ScheduleStats simulate_schedule(const std::vector<std::vector<Action>>& schedule,
                                const ScheduleSpec& spec, const ActionCosts& costs) {
  validate_schedule_spec(spec);
  BRAID_CHECK(
      static_cast<int>(schedule.size()) == spec.stages,
      "schedule has " << schedule.size() << " stage lists, spec has " << spec.stages << " stages");
  BRAID_CHECK(costs.forward > 0 && costs.backward > 0, "action costs must be positive");
  return Simulator(schedule, spec, costs).run();
}

}  // namespace braid

namespace braid {

namespace {
bool is_message(const Action& a) { return a.kind != ActionKind::Forward && a.kind != ActionKind::Backward; }
bool is_send(const Action& a) { return a.kind == ActionKind::SendAct || a.kind == ActionKind::SendGrad; }
P2PChannel channel_of(const Action& a, int stage) {
  const PipeLane lane = (a.kind == ActionKind::SendAct || a.kind == ActionKind::RecvAct) ? PipeLane::Activation
                                                                                          : PipeLane::Gradient;
  return is_send(a) ? P2PChannel{stage, a.peer, lane} : P2PChannel{a.peer, stage, lane};
}
}  // namespace

P2PChannel p2p_channel(const Action& action, int stage) {
  BRAID_CHECK(is_message(action), "p2p_channel: " << to_string(action) << " is not a message");
  return channel_of(action, stage);
}

std::vector<P2PChannel> p2p_channels(const std::vector<std::vector<Action>>& schedule) {
  std::set<P2PChannel> all;
  for (size_t s = 0; s < schedule.size(); ++s)
    for (const Action& a : schedule[s])
      if (is_message(a)) all.insert(channel_of(a, int(s)));
  return {all.begin(), all.end()};
}

std::vector<std::vector<int>> send_completion_points(const std::vector<std::vector<Action>>& schedule,
                                                    const ScheduleSpec& spec) {
  const int P = int(schedule.size());
  // Vector clocks over the non-blocking-send, blocking-receive run: clock[s][i][q] is the
  // last action of stage q known (through program order and messages) to have run when
  // stage s has run its action i.
  std::vector<std::vector<std::vector<int>>> clock(static_cast<size_t>(P));
  std::map<int, std::vector<int>> sent;  // tag -> sender's clock at the send
  std::map<int, int> received_at;        // tag -> index of the receive in the receiver's list
  std::vector<size_t> next(size_t(P), 0);
  std::vector<std::vector<int>> now(size_t(P), std::vector<int>(size_t(P), -1));
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < P; ++s) {
      const auto& list = schedule[size_t(s)];
      while (next[size_t(s)] < list.size()) {
        const size_t i = next[size_t(s)];
        const Action& a = list[i];
        std::vector<int>& vc = now[size_t(s)];
        if (is_message(a) && !is_send(a)) {
          auto it = sent.find(message_tag(a, s, spec));
          if (it == sent.end()) break;  // blocks until the peer has sent
          for (int q = 0; q < P; ++q) vc[size_t(q)] = std::max(vc[size_t(q)], it->second[size_t(q)]);
          received_at[it->first] = int(i);
        }
        vc[size_t(s)] = int(i);
        if (is_message(a) && is_send(a)) sent[message_tag(a, s, spec)] = vc;
        clock[size_t(s)].push_back(vc);
        ++next[size_t(s)];
        moved = true;
      }
    }
  }
  for (int s = 0; s < P; ++s)
    BRAID_CHECK(next[size_t(s)] == schedule[size_t(s)].size(),
                "send_completion_points: stage " << s << " blocks at action " << next[size_t(s)]);
  std::vector<std::vector<int>> done(static_cast<size_t>(P));
  for (int s = 0; s < P; ++s) {
    const auto& list = schedule[size_t(s)];
    done[size_t(s)].assign(list.size(), -1);
    for (size_t i = 0; i < list.size(); ++i) {
      const Action& a = list[i];
      if (!is_message(a) || !is_send(a)) continue;
      const int r = received_at.at(message_tag(a, s, spec));
      // Clocks only grow along a list: the first later action that knows of the receive.
      const auto& c = clock[size_t(s)];
      auto it = std::partition_point(c.begin() + long(i) + 1, c.end(),
                                     [&](const std::vector<int>& vc) { return vc[size_t(a.peer)] < r; });
      if (it != c.end()) done[size_t(s)][i] = int(it - c.begin());
    }
  }
  return done;
}

bool check_channel_order(const std::vector<std::vector<Action>>& schedule, const ScheduleSpec& spec,
                         std::string* why) {
  // Per channel, the tags in the sender's issue order and in the receiver's post order.
  std::map<P2PChannel, std::vector<int>> sent, received;
  for (size_t s = 0; s < schedule.size(); ++s)
    for (const Action& a : schedule[s])
      if (is_message(a))
        (is_send(a) ? sent : received)[channel_of(a, int(s))].push_back(message_tag(a, int(s), spec));
  std::ostringstream problems;
  for (const P2PChannel& ch : p2p_channels(schedule)) {
    const std::vector<int>& a = sent[ch];
    const std::vector<int>& b = received[ch];
    if (a == b) continue;
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    problems << " channel " << ch.from << "->" << ch.to
             << (ch.lane == PipeLane::Activation ? " (activations)" : " (gradients)") << ": message " << i
             << " is tag " << (i < a.size() ? std::to_string(a[i]) : "none") << " at the sender, tag "
             << (i < b.size() ? std::to_string(b[i]) : "none") << " at the receiver;";
  }
  if (why) *why = problems.str();
  return problems.str().empty();
}

}  // namespace braid
