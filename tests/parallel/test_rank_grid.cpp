// The rank grid: rank = (pp * DP + dp) * TP + tp, checked as a pure function for many
// shapes, and the communicators built by make_process_groups on the real world (every rank
// checks its own groups' members against the formula; the world size is read, not assumed).
#include <gtest/gtest.h>
#include <mpi.h>

#include <set>

#include "ops/check.h"
#include "parallel/rank_grid.h"

namespace braid {
namespace {

TEST(RankGrid, FormulaIsABijectionWithTpFastest) {
  for (int world : {1, 2, 4, 6, 8, 12, 16, 24})
    for (int tp = 1; tp <= world; ++tp)
      for (int pp = 1; pp * tp <= world; ++pp) {
        if (world % (tp * pp)) continue;
        std::set<int> seen;
        for (int r = 0; r < world; ++r) {
          RankGrid g = RankGrid::make(world, r, tp, pp);
          EXPECT_EQ(g.dp, world / (tp * pp));
          EXPECT_EQ(RankGrid::rank_of(g.tp_rank, g.dp_rank, g.pp_rank, tp, g.dp), r);
          EXPECT_EQ(g.tp_rank, r % tp) << "TP must vary fastest";
          EXPECT_EQ(g.pp_rank, r / (tp * g.dp)) << "PP must vary slowest";
          seen.insert(r);
        }
        EXPECT_EQ(int(seen.size()), world);
      }
}

TEST(RankGrid, RejectsAWorldThatDoesNotDivide) {
  EXPECT_THROW(RankGrid::make(6, 0, 4, 1), InputError);
  EXPECT_THROW(RankGrid::make(8, 0, 2, 3), InputError);
  try {
    RankGrid::make(6, 0, 4, 1);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by --tp 4"), std::string::npos) << e.what();
  }
}

TEST(RankGrid, GroupsHoldTheRanksTheFormulaSays) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int tp = 1; tp <= world; tp *= 2)
    for (int pp = 1; pp * tp <= world; pp *= 2) {
      if (world % (tp * pp)) continue;
      ProcessGroups g = make_process_groups(MPI_COMM_WORLD, tp, pp);
      const RankGrid& r = g.grid;
      ASSERT_EQ(g.tp->size(), tp);
      ASSERT_EQ(g.pp->size(), pp);
      ASSERT_EQ(g.dp->size(), r.dp);
      ASSERT_EQ(g.mp->size(), tp * pp);
      EXPECT_EQ(g.tp->rank(), r.tp_rank);
      EXPECT_EQ(g.pp->rank(), r.pp_rank);
      EXPECT_EQ(g.dp->rank(), r.dp_rank);
      // Gather the world ranks of each group's members and compare with the formula.
      auto members = [&](Communicator& c) {
        std::vector<int32_t> out(static_cast<size_t>(c.size()));
        int32_t me = rank;
        c.all_gather(&me, out.data(), 1, DType::I32);
        return out;
      };
      auto tpm = members(*g.tp), ppm = members(*g.pp), dpm = members(*g.dp);
      for (int i = 0; i < tp; ++i) EXPECT_EQ(tpm[i], RankGrid::rank_of(i, r.dp_rank, r.pp_rank, tp, r.dp));
      for (int i = 0; i < pp; ++i) EXPECT_EQ(ppm[i], RankGrid::rank_of(r.tp_rank, r.dp_rank, i, tp, r.dp));
      for (int i = 0; i < r.dp; ++i) EXPECT_EQ(dpm[i], RankGrid::rank_of(r.tp_rank, i, r.pp_rank, tp, r.dp));
      EXPECT_EQ(g.in_embed_group, r.first_stage() || r.last_stage());
      if (g.in_embed_group) EXPECT_EQ(g.embed->size(), pp == 1 ? 1 : 2);
    }
}

}  // namespace
}  // namespace braid
