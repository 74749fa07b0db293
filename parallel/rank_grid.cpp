#include "parallel/rank_grid.h"

#include <unistd.h>

#include <sstream>

#include "parallel/ledger_communicator.h"
#include "parallel/mpi_check.h"

namespace braid {

RankGrid RankGrid::make(int world_size, int world_rank, int tp, int pp) {
  BRAID_REQUIRE(tp >= 1 && pp >= 1, "--tp and --pp must be >= 1 (got --tp " << tp << " --pp " << pp << ")");
  BRAID_REQUIRE(world_size % (tp * pp) == 0,
                "the world of " << world_size << " ranks is not divisible by --tp " << tp
                                << " x --pp " << pp << " = " << tp * pp
                                << "; launch a multiple of " << tp * pp << " ranks");
  RankGrid g;
  g.world_size = world_size;
  g.world_rank = world_rank;
  g.tp = tp;
  g.pp = pp;
  g.dp = world_size / (tp * pp);
  g.tp_rank = world_rank % tp;
  g.dp_rank = (world_rank / tp) % g.dp;
  g.pp_rank = world_rank / (tp * g.dp);
  BRAID_CHECK(rank_of(g.tp_rank, g.dp_rank, g.pp_rank, tp, g.dp) == world_rank, "rank grid inverse");
  return g;
}

std::string RankGrid::describe() const {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::ostringstream os;
  os << "[rank " << world_rank << "/" << world_size << " tp" << tp_rank << " dp" << dp_rank
     << " pp" << pp_rank << " host=" << host << "]";
  return os.str();
}

namespace {
std::unique_ptr<Communicator> split(MPI_Comm world, int color, int key, const std::string& name) {
  MPI_Comm c;
  BRAID_CHECK_MPI(MPI_Comm_split(world, color, key, &c));
  if (c == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(c, name);
}
}  // namespace

ProcessGroups make_process_groups(MPI_Comm world, int tp, int pp) {
  int size = 0, rank = 0;
  BRAID_CHECK_MPI(MPI_Comm_size(world, &size));
  BRAID_CHECK_MPI(MPI_Comm_rank(world, &rank));
  ProcessGroups g;
  g.grid = RankGrid::make(size, rank, tp, pp);
  const RankGrid& r = g.grid;
  MPI_Comm dup;
  BRAID_CHECK_MPI(MPI_Comm_dup(world, &dup));
  g.world = std::make_unique<MpiCommunicator>(dup, "world");
  // Each split is collective over the world, issued in the same order on every rank.
  g.tp = split(world, r.pp_rank * r.dp + r.dp_rank, r.tp_rank, "tp");
  g.pp = split(world, r.dp_rank * r.tp + r.tp_rank, r.pp_rank, "pp");
  g.dp = split(world, r.pp_rank * r.tp + r.tp_rank, r.dp_rank, "dp");
  g.mp = split(world, r.dp_rank, r.pp_rank * r.tp + r.tp_rank, "mp");
  g.in_embed_group = r.first_stage() || r.last_stage();
  g.embed = split(world, g.in_embed_group ? r.dp_rank * r.tp + r.tp_rank : MPI_UNDEFINED,
                  r.pp_rank, "embed");
  g.ledger = std::make_shared<Ledger>(rank, size);
  for (auto* c : {&g.world, &g.tp, &g.pp, &g.dp, &g.mp, &g.embed}) *c = wrap_with_ledger(std::move(*c), g.ledger, world);
  return g;
}

}  // namespace braid
