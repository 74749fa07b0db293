// Pipeline schedules are data, so they are tested without a model: for every kind and a
// grid of (stages, microbatches, virtual stages) each compute runs exactly once, sends and
// receives pair up one to one with unique tags, the simulation (blocking receives,
// non-blocking sends) finishes, and the bubble fraction and peak in-flight counts equal
// their closed forms. The simulator itself is tested on broken schedules: it must name the
// stage and the action at fault. Serial test (one rank): nothing here touches MPI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "ops/check.h"
#include "parallel/schedule.h"

namespace braid {
namespace {

using Schedule = std::vector<std::vector<Action>>;

std::string describe(const ScheduleSpec& s) {
  return to_string(s.kind) + " P=" + std::to_string(s.stages) +
         " m=" + std::to_string(s.microbatches) + " V=" + std::to_string(s.virtual_stages);
}

// Every configuration the brief asks for: stages {1,2,3,4,8} x microbatches 1..16, with
// V in {2,3} for interleaved where valid (m a multiple of P).
std::vector<ScheduleSpec> all_specs() {
  std::vector<ScheduleSpec> specs;
  for (int P : {1, 2, 3, 4, 8})
    for (int m = 1; m <= 16; ++m) {
      specs.push_back({ScheduleKind::GPipe, P, m, 1});
      specs.push_back({ScheduleKind::OneFOneB, P, m, 1});
      if (m % P == 0)
        for (int V : {2, 3}) specs.push_back({ScheduleKind::Interleaved1F1B, P, m, V});
    }
  return specs;
}

bool is_compute(ActionKind k) { return k == ActionKind::Forward || k == ActionKind::Backward; }
bool is_send(ActionKind k) { return k == ActionKind::SendAct || k == ActionKind::SendGrad; }

// The what() of the braid::Error thrown by simulate_schedule; fails the test if none, or if
// it is an InputError (a broken schedule is a bug, not bad user input).
std::string simulation_error(const Schedule& schedule, const ScheduleSpec& spec) {
  try {
    simulate_schedule(schedule, spec);
  } catch (const InputError& e) {
    ADD_FAILURE() << "expected braid::Error, got InputError: " << e.what();
    return e.what();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "simulate_schedule accepted a broken schedule";
  return "";
}

std::string input_error(const ScheduleSpec& spec) {
  try {
    validate_schedule_spec(spec);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "validate_schedule_spec accepted " << describe(spec);
  return "";
}

size_t index_of(const std::vector<Action>& list, const Action& a) {
  return static_cast<size_t>(std::find(list.begin(), list.end(), a) - list.begin());
}

TEST(Schedule, ParseScheduleKind) {
  EXPECT_EQ(parse_schedule_kind("gpipe"), ScheduleKind::GPipe);
  EXPECT_EQ(parse_schedule_kind("1f1b"), ScheduleKind::OneFOneB);
  EXPECT_EQ(parse_schedule_kind("interleaved"), ScheduleKind::Interleaved1F1B);
  for (ScheduleKind k :
       {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved1F1B})
    EXPECT_EQ(parse_schedule_kind(to_string(k)), k);
  for (const char* bad : {"", "GPipe", "1F1B", "pipedream", "interleaved "}) {
    try {
      parse_schedule_kind(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--schedule"), std::string::npos) << e.what();
    }
  }
}

TEST(Schedule, ValidateRejectsInvalidCombinationsNamingTheFlag) {
  using K = ScheduleKind;
  struct Case {
    ScheduleSpec spec;
    std::string flag;
  };
  const std::vector<Case> cases = {
      {{K::OneFOneB, 0, 4, 1}, "--pp"},
      {{K::GPipe, -2, 4, 1}, "--pp"},
      {{K::OneFOneB, 2, 0, 1}, "--grad-accum"},
      {{K::Interleaved1F1B, 2, -1, 2}, "--grad-accum"},
      {{K::OneFOneB, 2, 4, 0}, "--virtual-stages"},
      {{K::GPipe, 2, 4, 2}, "--virtual-stages"},
      {{K::OneFOneB, 4, 8, 3}, "--virtual-stages"},
      {{K::Interleaved1F1B, 2, 4, 1}, "--virtual-stages"},
      {{K::Interleaved1F1B, 4, 6, 2}, "--grad-accum"},  // 6 % 4 != 0
      {{K::Interleaved1F1B, 3, 4, 2}, "--pp"},          // the same message names --pp too
      {{static_cast<K>(7), 2, 4, 1}, "--schedule"},
  };
  for (const Case& c : cases) {
    const std::string msg = input_error(c.spec);
    EXPECT_NE(msg.find(c.flag), std::string::npos) << describe(c.spec) << ": " << msg;
  }
  // And make_schedule validates too.
  EXPECT_THROW(make_schedule({K::Interleaved1F1B, 4, 6, 2}), InputError);
  // Valid corner cases are accepted.
  for (const ScheduleSpec& s : all_specs())
    EXPECT_NO_THROW(validate_schedule_spec(s)) << describe(s);
}

TEST(Schedule, ToStringAndGlobalChunk) {
  EXPECT_EQ(to_string(Action{ActionKind::Forward, 3, 0, -1}), "Forward(mb=3, chunk=0)");
  EXPECT_EQ(to_string(Action{ActionKind::RecvGrad, 1, 2, 0}), "RecvGrad(mb=1, chunk=2, peer=0)");
  // Megatron interleaving with P = 4: stage 1 holds virtual stages 1, 5, 9.
  for (int c = 0; c < 3; ++c) EXPECT_EQ(global_chunk(1, c, 4), 1 + 4 * c);
}

// Tags are a bijection from messages onto [0, 2 * G * m), so they are unique, activation
// and gradient tags are disjoint, and the largest tested config (P=8, V=3, m=16) stays
// below MPI's guaranteed 32767.
TEST(Schedule, MessageTagsAreUniqueAndInRange) {
  for (int G : {1, 2, 6, 24})
    for (int m : {1, 5, 16}) {
      std::set<int> seen;
      for (bool grad : {false, true})
        for (int g = 0; g < G; ++g)
          for (int mb = 0; mb < m; ++mb) {
            const int send =
                message_tag(grad ? ActionKind::SendGrad : ActionKind::SendAct, mb, g, m, G);
            const int recv =
                message_tag(grad ? ActionKind::RecvGrad : ActionKind::RecvAct, mb, g, m, G);
            EXPECT_EQ(send, recv);
            EXPECT_GE(send, 0);
            EXPECT_LT(send, 2 * G * m);
            EXPECT_LT(send, 32767);
            EXPECT_TRUE(seen.insert(send).second) << "G=" << G << " m=" << m << " tag " << send;
          }
    }
  EXPECT_THROW(message_tag(ActionKind::Forward, 0, 0, 1, 1), Error);
  EXPECT_THROW(message_tag(ActionKind::SendAct, 2, 0, 2, 1), Error);
}

TEST(Schedule, IsPure) {
  for (const ScheduleSpec& s : all_specs())
    EXPECT_EQ(make_schedule(s), make_schedule(s)) << describe(s);
}

TEST(Schedule, EveryComputeRunsExactlyOnceForwardBeforeBackward) {
  for (const ScheduleSpec& s : all_specs()) {
    const Schedule schedule = make_schedule(s);
    ASSERT_EQ(static_cast<int>(schedule.size()), s.stages) << describe(s);
    for (int stage = 0; stage < s.stages; ++stage) {
      std::map<std::tuple<ActionKind, int, int>, int> count;
      for (const Action& a : schedule[stage])
        if (is_compute(a.kind)) ++count[{a.kind, a.microbatch, a.chunk}];
      EXPECT_EQ(count.size(), 2u * s.microbatches * s.virtual_stages) << describe(s);
      for (int mb = 0; mb < s.microbatches; ++mb)
        for (int c = 0; c < s.virtual_stages; ++c) {
          EXPECT_EQ((count[{ActionKind::Forward, mb, c}]), 1) << describe(s) << " stage " << stage;
          EXPECT_EQ((count[{ActionKind::Backward, mb, c}]), 1) << describe(s) << " stage " << stage;
          EXPECT_LT(index_of(schedule[stage], {ActionKind::Forward, mb, c, -1}),
                    index_of(schedule[stage], {ActionKind::Backward, mb, c, -1}))
              << describe(s) << " stage " << stage << " mb " << mb << " chunk " << c;
        }
    }
  }
}

// The contract of schedule.h: each input is received right before the compute that needs
// it, each output sent right after the compute that makes it, to the stage of the
// neighbouring global chunk; no messages at all with one stage.
TEST(Schedule, MessagesSurroundComputeAsTheEngineExpects) {
  for (const ScheduleSpec& s : all_specs()) {
    const Schedule schedule = make_schedule(s);
    const int P = s.stages, last = s.stages * s.virtual_stages - 1;
    for (int stage = 0; stage < P; ++stage) {
      const std::vector<Action>& list = schedule[stage];
      size_t messages = 0;
      for (size_t i = 0; i < list.size(); ++i) {
        const Action& a = list[i];
        if (!is_compute(a.kind)) {
          ++messages;
          continue;
        }
        EXPECT_EQ(a.peer, -1);
        const int g = global_chunk(stage, a.chunk, P);
        const bool fwd = a.kind == ActionKind::Forward;
        const bool has_input = P > 1 && (fwd ? g > 0 : g < last);
        const bool has_output = P > 1 && (fwd ? g < last : g > 0);
        const Action input{fwd ? ActionKind::RecvAct : ActionKind::RecvGrad, a.microbatch, a.chunk,
                           fwd ? (g - 1 + P) % P : (g + 1) % P};
        const Action output{fwd ? ActionKind::SendAct : ActionKind::SendGrad, a.microbatch, a.chunk,
                            fwd ? (g + 1) % P : (g - 1 + P) % P};
        if (has_input) {
          ASSERT_GT(i, 0u) << describe(s) << " stage " << stage << " " << to_string(a);
          EXPECT_EQ(list[i - 1], input) << describe(s) << " stage " << stage << " " << to_string(a);
        }
        if (has_output) {
          ASSERT_LT(i + 1, list.size()) << describe(s) << " stage " << stage << " " << to_string(a);
          EXPECT_EQ(list[i + 1], output)
              << describe(s) << " stage " << stage << " " << to_string(a);
        }
      }
      if (P == 1) {
        EXPECT_EQ(messages, 0u) << describe(s);
      }
    }
  }
}

// Every send has exactly one receive on its peer, of the same message (kind, microbatch,
// and the receiver's chunk is the next or previous one in layer order), with the same tag;
// tags are unique over the whole schedule.
TEST(Schedule, SendsAndReceivesPairUpWithUniqueTags) {
  for (const ScheduleSpec& s : all_specs()) {
    const Schedule schedule = make_schedule(s);
    const int P = s.stages, G = s.stages * s.virtual_stages;
    // (sender, receiver, tag) -> count, from both sides.
    std::map<std::tuple<int, int, int>, int> sends, recvs;
    std::set<int> tags;
    for (int stage = 0; stage < P; ++stage)
      for (const Action& a : schedule[stage]) {
        if (is_compute(a.kind)) continue;
        ASSERT_GE(a.peer, 0) << describe(s);
        ASSERT_LT(a.peer, P) << describe(s);
        const int g = global_chunk(stage, a.chunk, P);
        const int tag = message_tag(a, stage, s);
        if (is_send(a.kind)) {
          const int receiver_g = a.kind == ActionKind::SendAct ? g + 1 : g - 1;
          ASSERT_TRUE(receiver_g >= 0 && receiver_g < G) << describe(s) << " " << to_string(a);
          EXPECT_EQ(receiver_g % P, a.peer) << describe(s) << " " << to_string(a);
          const ActionKind recv_kind =
              a.kind == ActionKind::SendAct ? ActionKind::RecvAct : ActionKind::RecvGrad;
          EXPECT_EQ(tag, message_tag(recv_kind, a.microbatch, receiver_g, s.microbatches, G));
          EXPECT_TRUE(tags.insert(tag).second) << describe(s) << " duplicate tag " << tag;
          ++sends[{stage, a.peer, tag}];
        } else {
          ++recvs[{a.peer, stage, tag}];
        }
      }
    EXPECT_EQ(sends, recvs) << describe(s);
    for (const auto& [key, n] : sends) EXPECT_EQ(n, 1) << describe(s);
    // Messages = 2 per (microbatch, chunk boundary) when P > 1.
    EXPECT_EQ(sends.size(), P > 1 ? static_cast<size_t>(2 * s.microbatches * (G - 1)) : 0u)
        << describe(s);
  }
}

// The k-th forward of every interleaved stage follows Megatron's ordering: microbatches in
// groups of P, a group visits chunks 0, 1, ..., V-1 (backward: V-1, ..., 0).
TEST(Schedule, InterleavedFollowsMegatronChunkOrder) {
  for (const ScheduleSpec& s : all_specs()) {
    if (s.kind != ScheduleKind::Interleaved1F1B) continue;
    const Schedule schedule = make_schedule(s);
    const int P = s.stages, V = s.virtual_stages;
    for (int stage = 0; stage < P; ++stage) {
      int k_fwd = 0, k_bwd = 0;
      for (const Action& a : schedule[stage]) {
        if (!is_compute(a.kind)) continue;
        int& k = a.kind == ActionKind::Forward ? k_fwd : k_bwd;
        const int in_group = k % (P * V);
        const int chunk = a.kind == ActionKind::Forward ? in_group / P : V - 1 - in_group / P;
        EXPECT_EQ(a.chunk, chunk) << describe(s) << " stage " << stage << " unit " << k;
        EXPECT_EQ(a.microbatch, (k / (P * V)) * P + k % P) << describe(s) << " stage " << stage;
        ++k;
      }
    }
  }
}

// Closed forms, with forward : backward costs f : b per (microbatch, chunk) and free
// communication. Every stage computes m * V * (f + b); the pipeline fill and drain add
// (P - 1) * (f + b) to the makespan for GPipe and 1F1B (V = 1) and for interleaved (whose
// unit is one chunk, 1/V of a stage). Hence
//   makespan = (f + b) * (m * V + P - 1)       (compared exactly: integer arithmetic)
//   bubble   = (P - 1) / (m * V + P - 1)       (idle / (P * makespan))
// i.e. Megatron's bubble/ideal = (P - 1) / m, and (P - 1) / (V * m) interleaved. The bubble
// fraction is compared to 1e-12: both sides are ratios of exact integers below 2^20, so
// they differ by a few ulp of rounding at most.
TEST(Schedule, SimulationFinishesWithTheClosedFormBubble) {
  for (const ActionCosts costs : {ActionCosts{1, 2}, ActionCosts{1, 1}, ActionCosts{2, 3}})
    for (const ScheduleSpec& s : all_specs()) {
      const int P = s.stages, m = s.microbatches, V = s.virtual_stages;
      ScheduleStats stats{};
      ASSERT_NO_THROW(stats = simulate_schedule(make_schedule(s), s, costs)) << describe(s);
      const int64_t units = static_cast<int64_t>(m) * V + P - 1;
      EXPECT_EQ(stats.makespan, (costs.forward + costs.backward) * units) << describe(s);
      const double expected = static_cast<double>(P - 1) / static_cast<double>(units);
      EXPECT_NEAR(stats.bubble_fraction, expected, 1e-12)
          << describe(s) << " costs " << costs.forward << ":" << costs.backward;
    }
}

// Peak (microbatch, chunk) pairs alive per stage: GPipe keeps all m, 1F1B min(P - s, m),
// interleaved its warm-up plus one, capped at all m * V units.
TEST(Schedule, PeakInFlight) {
  for (const ScheduleSpec& s : all_specs()) {
    const int P = s.stages, m = s.microbatches, V = s.virtual_stages;
    const ScheduleStats stats = simulate_schedule(make_schedule(s), s);
    ASSERT_EQ(static_cast<int>(stats.peak_in_flight_per_stage.size()), P);
    int peak = 0;
    for (int stage = 0; stage < P; ++stage) {
      int expected = 0;
      switch (s.kind) {
        case ScheduleKind::GPipe: expected = m; break;
        case ScheduleKind::OneFOneB: expected = std::min(P - stage, m); break;
        case ScheduleKind::Interleaved1F1B:
          expected = std::min((P - stage - 1) * 2 + (V - 1) * P + 1, m * V);
          break;
      }
      EXPECT_EQ(stats.peak_in_flight_per_stage[stage], expected)
          << describe(s) << " stage " << stage;
      peak = std::max(peak, expected);
    }
    EXPECT_EQ(stats.peak_in_flight, peak) << describe(s);
  }
}

TEST(Schedule, InterleavedReducesTheBubble) {
  for (int P : {2, 3, 4, 8})
    for (int m = P; m <= 16; m += P)
      for (int V : {2, 3}) {
        const ScheduleSpec flat{ScheduleKind::OneFOneB, P, m, 1};
        const ScheduleSpec inter{ScheduleKind::Interleaved1F1B, P, m, V};
        const double b_flat = simulate_schedule(make_schedule(flat), flat).bubble_fraction;
        const double b_inter = simulate_schedule(make_schedule(inter), inter).bubble_fraction;
        EXPECT_LT(b_inter, b_flat) << describe(inter);
      }
  // One stage has no bubble, with or without chunks.
  const ScheduleSpec one{ScheduleKind::Interleaved1F1B, 1, 4, 3};
  EXPECT_EQ(simulate_schedule(make_schedule(one), one).bubble_fraction, 0.0);
}

// ---------------------------------------------------------------------------------------
// The simulator must catch broken schedules and name the stage and the action.

void expect_mentions(const std::string& msg, const std::vector<std::string>& parts) {
  for (const std::string& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

TEST(ScheduleSimulator, DetectsDeadlock) {
  // 1F1B, P = 2, m = 2: stage 0 waits for the gradient of mb 0 before sending its
  // activation; stage 1 waits for that activation.
  const ScheduleSpec s{ScheduleKind::OneFOneB, 2, 2, 1};
  Schedule schedule = make_schedule(s);
  const Action recv_grad{ActionKind::RecvGrad, 0, 0, 1};
  auto& list = schedule[0];
  list.erase(list.begin() + static_cast<long>(index_of(list, recv_grad)));
  list.insert(list.begin(), recv_grad);
  expect_mentions(simulation_error(schedule, s), {"deadlock", "stage 0", to_string(recv_grad),
                                                  "stage 1", "RecvAct(mb=0, chunk=0, peer=0)"});
}

TEST(ScheduleSimulator, DetectsReceiveWithoutSend) {
  const ScheduleSpec s{ScheduleKind::GPipe, 3, 2, 1};
  Schedule schedule = make_schedule(s);
  const Action send{ActionKind::SendAct, 1, 0, 2};
  auto& list = schedule[1];
  list.erase(list.begin() + static_cast<long>(index_of(list, send)));
  expect_mentions(simulation_error(schedule, s),
                  {"no matching send", "stage 2", "RecvAct(mb=1, chunk=0, peer=1)"});
}

TEST(ScheduleSimulator, DetectsSendNeverReceived) {
  // Stage 0 stops before receiving the gradient that stage 1 sends.
  const ScheduleSpec s{ScheduleKind::GPipe, 2, 1, 1};
  Schedule schedule = make_schedule(s);
  auto& list = schedule[0];
  list.erase(list.begin() + static_cast<long>(index_of(list, {ActionKind::RecvGrad, 0, 0, 1})),
             list.end());
  expect_mentions(simulation_error(schedule, s), {"never received", "stage 1", "SendGrad(mb=0)"});
}

TEST(ScheduleSimulator, DetectsDuplicates) {
  const ScheduleSpec s{ScheduleKind::OneFOneB, 2, 3, 1};
  {
    Schedule schedule = make_schedule(s);
    const Action fwd{ActionKind::Forward, 1, 0, -1};
    auto& list = schedule[1];
    list.insert(list.begin() + static_cast<long>(index_of(list, fwd)), fwd);
    expect_mentions(simulation_error(schedule, s),
                    {"duplicate Forward", "stage 1", to_string(fwd)});
  }
  {
    Schedule schedule = make_schedule(s);
    const Action send{ActionKind::SendAct, 2, 0, 1};
    auto& list = schedule[0];
    list.insert(list.begin() + static_cast<long>(index_of(list, send)), send);
    expect_mentions(simulation_error(schedule, s), {"duplicate send", "stage 0", to_string(send)});
  }
}

TEST(ScheduleSimulator, DetectsBackwardBeforeForward) {
  const ScheduleSpec s{ScheduleKind::GPipe, 1, 2, 1};
  Schedule schedule = make_schedule(s);       // F0 F1 B0 B1
  std::swap(schedule[0][1], schedule[0][3]);  // F0 B1 B0 F1
  expect_mentions(simulation_error(schedule, s),
                  {"Backward before its Forward", "stage 0", "Backward(mb=1, chunk=0)"});
}

TEST(ScheduleSimulator, DetectsComputeWithoutInputAndWrongPeer) {
  const ScheduleSpec s{ScheduleKind::Interleaved1F1B, 2, 2, 2};
  {
    // Chunk 1 on one stage runs before chunk 0 handed it its input: with P = 1 the
    // dependency is local.
    const ScheduleSpec one{ScheduleKind::Interleaved1F1B, 1, 1, 2};
    Schedule schedule = make_schedule(one);  // F(0,0) F(0,1) B(0,1) B(0,0)
    std::swap(schedule[0][0], schedule[0][1]);
    expect_mentions(simulation_error(schedule, one),
                    {"input activation", "stage 0", "Forward(mb=0, chunk=1)"});
  }
  {
    Schedule schedule = make_schedule(s);
    auto& list = schedule[1];
    const size_t i =
        index_of(list, {ActionKind::SendAct, 0, 0, 0});  // global chunk 1 -> 2 on stage 0
    list[i].peer = 1;
    expect_mentions(simulation_error(schedule, s),
                    {"peer should be 0", "stage 1", "SendAct(mb=0, chunk=0, peer=1)"});
  }
}

TEST(ScheduleStats, BubbleNumbersForTheReport) {
  // Printed for the record; the assertions above hold them to the closed forms.
  for (const ScheduleSpec& s :
       {ScheduleSpec{ScheduleKind::GPipe, 4, 8, 1}, ScheduleSpec{ScheduleKind::OneFOneB, 4, 8, 1},
        ScheduleSpec{ScheduleKind::Interleaved1F1B, 4, 8, 2},
        ScheduleSpec{ScheduleKind::Interleaved1F1B, 4, 8, 3},
        ScheduleSpec{ScheduleKind::OneFOneB, 8, 16, 1},
        ScheduleSpec{ScheduleKind::Interleaved1F1B, 8, 16, 2}}) {
    const ScheduleStats st = simulate_schedule(make_schedule(s), s);
    std::printf("%-28s bubble %.4f makespan %lld peak in flight %d\n", describe(s).c_str(),
                st.bubble_fraction, static_cast<long long>(st.makespan), st.peak_in_flight);
  }
}

}  // namespace
}  // namespace braid

namespace braid {
namespace {
// What NCCL needs on top of the simulation: on every channel (sender, receiver, lane) the
// receiver posts its receives in the sender's order. Every schedule made here has it, and
// uses exactly the channels its chunk layout implies: with V == 1 activations go s -> s+1
// and gradients s+1 -> s (2 (P - 1) channels); with V > 1 the last stage also feeds the
// first stage's next chunk, so both lanes wrap around (2 P channels).
TEST(Schedule, ChannelOrderHoldsForEverySchedule) {
  int checked = 0;
  for (ScheduleKind kind : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved1F1B})
    for (int p : {1, 2, 3, 4, 8})
      for (int m = 1; m <= 16; ++m)
        for (int v : {1, 2, 3, 4}) {
          ScheduleSpec spec{kind, p, m, v};
          if ((kind == ScheduleKind::Interleaved1F1B) != (v > 1)) continue;
          if (kind == ScheduleKind::Interleaved1F1B && m % p != 0) continue;
          const auto sched = make_schedule(spec);
          std::string why;
          EXPECT_TRUE(check_channel_order(sched, spec, &why)) << describe(spec) << ":" << why;
          const auto channels = p2p_channels(sched);
          const size_t expected = p == 1 ? 0 : (v == 1 ? 2 * size_t(p - 1) : 2 * size_t(p));
          EXPECT_EQ(channels.size(), expected) << describe(spec);
          for (const P2PChannel& ch : channels) {
            const int forward_peer = (ch.from + 1) % p;  // activations flow to the next stage
            if (ch.lane == PipeLane::Activation) EXPECT_EQ(ch.to, forward_peer) << describe(spec);
            else EXPECT_EQ(ch.from, (ch.to + 1) % p) << describe(spec);
          }
          ++checked;
        }
  EXPECT_GT(checked, 150);
}

// The check can fail: a receiver that takes two activations in the opposite order from
// the sender would, on an ordered link, put microbatch 1's activation into microbatch 0.
TEST(Schedule, ChannelOrderDetectsSwappedReceives) {
  ScheduleSpec spec{ScheduleKind::GPipe, 2, 2, 1};
  auto s = make_schedule(spec);
  std::string why;
  ASSERT_TRUE(check_channel_order(s, spec, &why)) << why;
  // Stage 1's list starts RecvAct(0) Forward(0) RecvAct(1) Forward(1): swap the receives'
  // microbatches, which keeps the simulation valid but breaks the order on 0 -> 1.
  auto& l = s[1];
  ASSERT_EQ(l[0].kind, ActionKind::RecvAct);
  ASSERT_EQ(l[2].kind, ActionKind::RecvAct);
  std::swap(l[0].microbatch, l[2].microbatch);
  std::swap(l[1].microbatch, l[3].microbatch);
  EXPECT_FALSE(check_channel_order(s, spec, &why));
  EXPECT_NE(why.find("channel 0->1 (activations)"), std::string::npos) << why;
}
}  // namespace
}  // namespace braid

namespace braid {
namespace {
// GPipe on 2 stages, 2 microbatches, by hand: stage 0 runs F0 SendAct0 F1 SendAct1
// RecvGrad0 B0 RecvGrad1 B1; stage 1 runs RecvAct0 F0 RecvAct1 F1 B0 SendGrad0 B1
// SendGrad1. Both activations were received before stage 1 sent gradient 0, so stage 0
// knows both sends complete once RecvGrad0 (index 4) has run; nothing comes back to
// stage 1 after its gradients, so those complete at the end of the step (-1).
TEST(Schedule, SendCompletionPointsByHand) {
  ScheduleSpec spec{ScheduleKind::GPipe, 2, 2, 1};
  const auto done = send_completion_points(make_schedule(spec), spec);
  EXPECT_EQ(done[0], (std::vector<int>{-1, 4, -1, 4, -1, -1, -1, -1}));
  EXPECT_EQ(done[1], (std::vector<int>(8, -1)));
}

// What the completion points are for: with sent tensors freed at them, the sends a 1F1B
// stage holds at once no longer grow with the number of microbatches (they would be m
// with every send kept to the end of the step). Every completion point lies after its send
// and names an action that exists.
TEST(Schedule, SendCompletionPointsBoundLiveSendsIn1F1B) {
  for (int p : {2, 4, 8}) {
    std::vector<int> peak_per_m;
    for (int m : {2 * p, 8 * p}) {
      ScheduleSpec spec{ScheduleKind::OneFOneB, p, m, 1};
      const auto sched = make_schedule(spec);
      const auto done = send_completion_points(sched, spec);
      int peak = 0;
      for (int s = 0; s < p; ++s) {
        const auto& list = sched[size_t(s)];
        ASSERT_EQ(done[size_t(s)].size(), list.size());
        std::vector<int> released(list.size() + 1, 0);
        int live = 0;
        for (size_t i = 0; i < list.size(); ++i) {
          const bool send = list[i].kind == ActionKind::SendAct || list[i].kind == ActionKind::SendGrad;
          const int d = done[size_t(s)][i];
          if (!send) EXPECT_EQ(d, -1);
          if (send) {
            ++live;
            if (d >= 0) {
              EXPECT_GT(d, int(i)) << "p" << p << " m" << m << " stage " << s;
              ++released[size_t(d)];
            }
          }
          peak = std::max(peak, live);
          live -= released[i];
        }
      }
      peak_per_m.push_back(peak);
    }
    EXPECT_EQ(peak_per_m[0], peak_per_m[1]) << "live sends grow with microbatches at p" << p;
    EXPECT_LE(peak_per_m[1], 2 * p) << "p" << p;
  }
}
}  // namespace
}  // namespace braid
