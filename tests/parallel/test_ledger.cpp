// The collective ledger: the ring (newest calls kept, in order; states; the blocked call),
// the decorator over real MPI groups (every member records the same sequence, results are
// unchanged, members are world ranks), and the analysis behind braid-ledger on ledgers
// made to diverge, stall and lose a rank.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <mpi.h>

#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "parallel/ledger.h"
#include "parallel/ledger_analysis.h"
#include "parallel/ledger_communicator.h"
#include "parallel/rank_grid.h"

namespace braid {
namespace {

using test::world_rank;
using test::world_size;

TEST(Ledger, RingKeepsTheNewestCallsInOrder) {
  const size_t capacity = 8;
  Ledger l(0, 1, capacity);
  int g = l.add_group("world", {0});
  const int calls = 20;
  for (int i = 0; i < calls; ++i) l.finish(l.begin(g, i, "all_reduce_sum", i, "f32", -1, -1, true), true);
  nlohmann::json j = l.to_json("test");
  ASSERT_EQ(j["entries"].size(), capacity);
  for (size_t k = 0; k < capacity; ++k) {
    const auto& e = j["entries"][k];
    EXPECT_EQ(e["seq"].get<int64_t>(), int64_t(calls - capacity + k));
    EXPECT_EQ(e["count"].get<int64_t>(), int64_t(calls - capacity + k));
    EXPECT_EQ(e["state"], "finished");
    EXPECT_LE(e["start_us"].get<int64_t>(), e["finish_us"].get<int64_t>());
  }
  EXPECT_FALSE(l.blocked().any);
}

// A checkpoint save is one long call with its own limit: inside it, a stalled collective
// is still caught by the collective limit, and the save itself only by the longer one.
TEST(Ledger, OverdueUsesTheCheckpointLimitForCheckpointCalls) {
  Ledger l(0, 1, 8);
  int g = l.add_group("world", {0});
  const uint64_t save = l.begin(g, 0, "checkpoint_save", 36, "tensors", -1, -1, true);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_FALSE(l.overdue(0.03, 10).any) << "a save within its own limit is not overdue";
  ASSERT_TRUE(l.overdue(10, 0.03).any);
  EXPECT_EQ(l.overdue(10, 0.03).entry.ordinal, save);
  EXPECT_FALSE(l.overdue(0.03, 0).any) << "0 = no checkpoint limit";
  const uint64_t inner = l.begin(g, 1, "broadcast", 1, "i64", 0, -1, true);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  ASSERT_TRUE(l.overdue(0.03, 10).any);
  EXPECT_EQ(l.overdue(0.03, 10).entry.ordinal, inner);
  // in_checkpoint() (the watchdog's liveness probe) sees the save, not the inner call,
  // and for as long as the save has lasted (>= 60 + 40 ms of sleep).
  ASSERT_TRUE(l.in_checkpoint().any);
  EXPECT_EQ(l.in_checkpoint().entry.ordinal, save);
  EXPECT_GE(l.in_checkpoint().seconds, 0.1);
  l.finish(inner, true);
  l.finish(save, true);
  EXPECT_FALSE(l.overdue(0.001, 0.001).any);
  EXPECT_FALSE(l.in_checkpoint().any) << "no save or load in progress";
}

TEST(Ledger, BlockedIsTheWaitingCallOnly) {
  Ledger l(0, 1, 4);
  int g = l.add_group("dp", {0});
  uint64_t async = l.begin(g, 0, "all_reduce_sum", 10, "f32", -1, -1, false);
  EXPECT_FALSE(l.blocked().any) << "an issued non-blocking call is not a wait";
  l.wait_begin(async);
  ASSERT_TRUE(l.blocked().any);
  EXPECT_EQ(l.blocked().entry.ordinal, async);
  l.finish(async, true);
  EXPECT_FALSE(l.blocked().any);
  uint64_t recv = l.begin(g, -1, "recv", 5, "f32", 0, 3, true);
  ASSERT_TRUE(l.blocked().any);
  EXPECT_STREQ(l.blocked().entry.op, "recv");
  l.finish(recv, false);
  EXPECT_EQ(l.to_json("")["entries"].back()["state"], "failed");
  // A call overwritten in the ring before it finishes: finishing it leaves the newer
  // entry in that slot alone.
  uint64_t old = l.begin(g, 1, "all_gather", 1, "f32", -1, -1, false);
  for (int i = 0; i < 4; ++i) l.begin(g, 2 + i, "barrier", 0, "none", -1, -1, false);
  l.finish(old, true);
  for (const auto& e : l.to_json("")["entries"]) EXPECT_EQ(e["state"], "issued");
}

// Real groups over the world: each call goes through the decorator, results are those of
// MPI, and every member of a group records the same collective at the same sequence number.
TEST(LedgerCommunicator, RecordsTheSameSequenceOnEveryMember) {
  const int W = world_size(), me = world_rank();
  const int tp = W % 2 == 0 ? 2 : 1, pp = W % (2 * tp) == 0 ? 2 : 1;
  ProcessGroups g = make_process_groups(MPI_COMM_WORLD, tp, pp);
  ASSERT_TRUE(g.ledger);
  // world: all_reduce(sum of rank+1), broadcast from the last rank, host helpers.
  float x = float(me + 1);
  g.world->all_reduce(&x, 1, DType::F32, ReduceOp::Sum);
  EXPECT_EQ(x, float(W * (W + 1) / 2));  // exact in f32 for small worlds
  int32_t b = me == W - 1 ? 1234 : 0;
  g.world->broadcast(&b, 1, DType::I32, W - 1);
  EXPECT_EQ(b, 1234);
  double d = 0.5;
  all_reduce_double(*g.world, &d, 1);
  EXPECT_EQ(d, 0.5 * W);
  int64_t m = me;
  all_reduce_int64(*g.world, &m, 1, ReduceOp::Max);
  EXPECT_EQ(m, W - 1);
  std::string s = me == 0 ? "hello" : "";
  broadcast_string(*g.world, s, 0);
  EXPECT_EQ(s, "hello");
  // tp: all_gather of the rank; dp: non-blocking reduce-scatter completed by wait().
  std::vector<float> all(size_t(g.tp->size()));
  float mine = float(me);
  g.tp->all_gather(&mine, all.data(), 1, DType::F32);
  for (int i = 0; i < g.tp->size(); ++i)
    EXPECT_EQ(all[size_t(i)], float(RankGrid::rank_of(i, g.grid.dp_rank, g.grid.pp_rank, tp, g.grid.dp)));
  std::vector<float> send(size_t(g.dp->size()), 1.f);
  float got = 0;
  auto req = g.dp->reduce_scatter_async(send.data(), &got, 1, DType::F32);
  req->wait();
  EXPECT_EQ(got, float(g.dp->size()));
  // pp: a message from stage 0 to stage 1 (point to point, no sequence number).
  if (pp > 1) {
    float v = float(me);
    if (g.grid.pp_rank == 0) g.pp->send_async(&v, 1, DType::F32, 1, 7)->wait();
    else if (g.grid.pp_rank == 1) g.pp->recv(&v, 1, DType::F32, 0, 7);
    if (g.grid.pp_rank == 1) EXPECT_EQ(v, float(RankGrid::rank_of(g.grid.tp_rank, g.grid.dp_rank, 0, tp, g.grid.dp)));
  }
  g.world->barrier();

  nlohmann::json j = g.ledger->to_json("test");
  EXPECT_EQ(j["rank"], me);
  // This rank's groups, with members as world ranks.
  std::map<std::string, std::vector<int>> members;
  for (const auto& gr : j["groups"]) members[gr["name"]] = gr["members"].get<std::vector<int>>();
  std::vector<int> tp_members;
  for (int i = 0; i < tp; ++i) tp_members.push_back(RankGrid::rank_of(i, g.grid.dp_rank, g.grid.pp_rank, tp, g.grid.dp));
  EXPECT_EQ(members["tp"], tp_members);
  EXPECT_EQ(members["world"].size(), size_t(W));
  // The world group's calls, in order, with their sequence numbers.
  const std::vector<std::pair<std::string, int64_t>> want = {
      {"all_reduce_sum", 1}, {"broadcast", 1}, {"all_reduce_sum", 1}, {"all_reduce_max", 1},
      {"broadcast_string", -1}, {"barrier", 0}};
  std::vector<nlohmann::json> world_calls;
  int world_index = -1;
  for (size_t i = 0; i < j["groups"].size(); ++i)
    if (j["groups"][i]["name"] == "world") world_index = int(i);
  for (const auto& e : j["entries"])
    if (e["group"] == world_index) world_calls.push_back(e);
  ASSERT_EQ(world_calls.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(world_calls[i]["seq"].get<int64_t>(), int64_t(i));
    EXPECT_EQ(world_calls[i]["op"], want[i].first);
    EXPECT_EQ(world_calls[i]["count"].get<int64_t>(), want[i].second);
    EXPECT_EQ(world_calls[i]["state"], "finished");
  }
  EXPECT_EQ(world_calls[1]["peer"], W - 1) << "broadcast root as a world rank";
  for (const auto& e : j["entries"]) {
    if (e["op"] == "reduce_scatter") EXPECT_EQ(e["state"], "finished") << "async call finished by wait()";
    if (e["op"] == "send" || e["op"] == "recv") {
      EXPECT_EQ(e["seq"].get<int64_t>(), -1);
      EXPECT_EQ(e["tag"], 7);
    }
  }

  // Every rank dumps; the analysis of all dumps finds them consistent.
  std::string dir = test::temp_dir("ledger_consistent");
  g.ledger->dump(dir, "test");
  MPI_Barrier(MPI_COMM_WORLD);
  LedgerReport rep = analyze_ledgers(read_ledger_dumps(dir), 0.0);
  EXPECT_EQ(rep.world_size, W);
  EXPECT_TRUE(rep.lost.empty());
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Consistent) << rep.verdict.summary;
  MPI_Barrier(MPI_COMM_WORLD);
}

// Synthetic ledgers of a world of 4 (made with real Ledger objects), analysed locally.
struct FakeWorld {
  std::vector<std::unique_ptr<Ledger>> ranks;
  std::vector<int> world_group, pair_group;
  explicit FakeWorld(int n) {
    for (int r = 0; r < n; ++r) {
      ranks.push_back(std::make_unique<Ledger>(r, n));
      world_group.push_back(ranks.back()->add_group("world", {0, 1, 2, 3}));
      // "pair" groups {0,1} and {2,3}
      pair_group.push_back(ranks.back()->add_group("pair", r < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3}));
    }
  }
  void done(int r, int group, int64_t seq, const char* op = "all_reduce_sum", int64_t count = 4) {
    Ledger& l = *ranks[size_t(r)];
    l.finish(l.begin(group, seq, op, count, "f32", -1, -1, true), true);
  }
  void stuck(int r, int group, int64_t seq, const char* op = "all_reduce_sum", int64_t count = 4) {
    ranks[size_t(r)]->begin(group, seq, op, count, "f32", -1, -1, true);
  }
  std::map<int, nlohmann::json> dumps(std::vector<int> which = {0, 1, 2, 3}) {
    std::map<int, nlohmann::json> d;
    for (int r : which) d[r] = ranks[size_t(r)]->to_json("test");
    return d;
  }
};

TEST(LedgerAnalysis, NamesTheRankThatCalledSomethingElse) {
  FakeWorld w(4);
  for (int r = 0; r < 4; ++r)
    for (int s = 0; s < 6; ++s) w.done(r, w.world_group[size_t(r)], s);
  for (int r = 0; r < 4; ++r) w.stuck(r, w.world_group[size_t(r)], 6, r == 2 ? "barrier" : "all_reduce_max", r == 2 ? 0 : 1);
  LedgerReport rep = analyze_ledgers(w.dumps(), 0.0);
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Divergence) << rep.verdict.summary;
  EXPECT_EQ(rep.verdict.ranks, std::vector<int>{2});
  EXPECT_EQ(rep.verdict.seq, 6);
  EXPECT_EQ(rep.verdict.group, "world[0,1,2,3]");
  // Element counts differ in a two-rank group: no majority, both ranks are named.
  FakeWorld v(4);
  for (int r = 0; r < 2; ++r) v.done(r, v.pair_group[size_t(r)], 0, "all_gather", r == 0 ? 8 : 16);
  rep = analyze_ledgers(v.dumps(), 0.0);
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Divergence);
  EXPECT_EQ(rep.verdict.ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(rep.verdict.group, "pair[0,1]");
}

TEST(LedgerAnalysis, NamesTheLostRank) {
  FakeWorld w(4);
  for (int r = 0; r < 4; ++r) w.done(r, w.world_group[size_t(r)], 0);
  for (int r : {0, 2, 3}) w.stuck(r, w.world_group[size_t(r)], 1);
  LedgerReport rep = analyze_ledgers(w.dumps({0, 2, 3}), 0.0);
  EXPECT_EQ(rep.lost, std::vector<int>{1});
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Lost) << rep.verdict.summary;
  EXPECT_EQ(rep.verdict.ranks, std::vector<int>{1});
  EXPECT_EQ(rep.verdict.seq, 1);
}

TEST(LedgerAnalysis, FollowsTheChainOfWaitsToTheRankThatNeverArrived) {
  // Ranks 0, 2 and 3 wait in world #1; rank 1 never got there and is not in a call.
  FakeWorld w(4);
  for (int r = 0; r < 4; ++r) w.done(r, w.world_group[size_t(r)], 0);
  for (int r : {0, 2, 3}) w.stuck(r, w.world_group[size_t(r)], 1);
  LedgerReport rep = analyze_ledgers(w.dumps(), 0.0);
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Stall) << rep.verdict.summary;
  EXPECT_EQ(rep.verdict.ranks, std::vector<int>{1});
  EXPECT_EQ(rep.verdict.group, "world[0,1,2,3]");
  EXPECT_EQ(rep.verdict.seq, 1);
  // If rank 1 instead waits in pair[0,1] #0, which rank 0 skipped for world #1, the two
  // wait for each other: a deadlock cycle naming both.
  w.stuck(1, w.pair_group[1], 0);
  rep = analyze_ledgers(w.dumps(), 0.0);
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Stall) << rep.verdict.summary;
  EXPECT_EQ(rep.verdict.ranks, (std::vector<int>{0, 1}));
  EXPECT_NE(rep.verdict.summary.find("deadlock"), std::string::npos) << rep.verdict.summary;
}

TEST(LedgerAnalysis, NamesTheRankThatFailed) {
  FakeWorld w(4);
  for (int r = 0; r < 4; ++r) w.done(r, w.world_group[size_t(r)], 0);
  for (int r : {0, 1, 3}) w.stuck(r, w.world_group[size_t(r)], 1);
  std::map<int, nlohmann::json> d = w.dumps();
  d[2]["reason"] = "fatal error: HDF5 write failed";
  LedgerReport rep = analyze_ledgers(d, 0.0);
  EXPECT_EQ(rep.verdict.kind, LedgerVerdict::Kind::Failed) << rep.verdict.summary;
  EXPECT_EQ(rep.verdict.ranks, std::vector<int>{2});
  EXPECT_NE(rep.verdict.summary.find("HDF5 write failed"), std::string::npos) << rep.verdict.summary;
}

TEST(LedgerAnalysis, BadDumpsAreInputErrorsNamingTheFile) {
  // Local to each rank (no collective): its own directory.
  std::string dir = (std::filesystem::temp_directory_path() / ("braid_test_ledger_bad_" + std::to_string(world_rank()))).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  EXPECT_THROW(read_ledger_dumps(dir), InputError);  // empty
  { std::ofstream(dir + "/rank-0.json") << "{ not json"; }
  try {
    read_ledger_dumps(dir);
    ADD_FAILURE() << "a torn dump was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank-0.json"), std::string::npos) << e.what();
  }
  Ledger l(3, 4);
  { std::ofstream(dir + "/rank-0.json") << l.to_json("x").dump(); }  // rank 3's dump named rank-0
  EXPECT_THROW(read_ledger_dumps(dir), InputError);
  EXPECT_THROW(read_ledger_dumps(dir + "/missing"), InputError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace braid
