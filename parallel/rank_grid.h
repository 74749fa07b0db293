// The rank grid DP x PP x TP and its process groups.
//
// Rank order (Megatron's default): TP varies fastest, then DP, then PP:
//     rank = (pp * DP + dp) * TP + tp
// so a TP group is TP consecutive ranks (inside one node, on NVLink), DP groups stride by
// TP, and PP groups stride by DP*TP (pipeline traffic, the smallest, crosses nodes).
// Groups are built once at start-up from --tp and --pp; DP is what remains of the world.
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/ledger.h"

namespace braid {

struct RankGrid {
  int world_size = 1, world_rank = 0;
  int tp = 1, pp = 1, dp = 1;               // group sizes
  int tp_rank = 0, pp_rank = 0, dp_rank = 0;  // this rank's coordinates

  static RankGrid make(int world_size, int world_rank, int tp, int pp);  // InputError if it does not divide
  static int rank_of(int tp_rank, int dp_rank, int pp_rank, int tp, int dp) {
    return (pp_rank * dp + dp_rank) * tp + tp_rank;
  }
  bool first_stage() const { return pp_rank == 0; }
  bool last_stage() const { return pp_rank == pp - 1; }
  std::string describe() const;  // "[rank 5/16 tp1 dp0 pp1 host=...]"
};

// The communicators of one rank. Every member is valid (size-1 groups included), so code
// never special-cases a trivial dimension.
struct ProcessGroups {
  RankGrid grid;
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> tp;     // same (dp, pp): tensor-parallel shards of a layer
  std::unique_ptr<Communicator> pp;     // same (tp, dp): consecutive pipeline stages
  std::unique_ptr<Communicator> dp;     // same (tp, pp): data-parallel replicas
  std::unique_ptr<Communicator> mp;     // same dp: all model-parallel shards (tp x pp) of one replica
  std::unique_ptr<Communicator> embed;  // same (tp, dp), first and last stage: tied embedding
  bool in_embed_group = false;
  // This rank's collective ledger: every group above records its calls in it.
  std::shared_ptr<Ledger> ledger;
};

// Builds the groups over `world` (collective over it), each wrapped in a LedgerCommunicator
// recording into one new Ledger. Call once at start-up.
ProcessGroups make_process_groups(MPI_Comm world, int tp, int pp);

}  // namespace braid
