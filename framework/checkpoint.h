// Reshardable HDF5 checkpoints.
//
// Layout: OUT/checkpoints/step_NNNNNNNN/
//   model.h5       /params/<name>, /adam_m/<name>, /adam_v/<name>: every tensor with its
//                  FULL logical shape (float32), written collectively with parallel HDF5
//                  (MPI-IO): each rank writes the hyperslab it owns (replicas skip: only
//                  data-parallel rank 0 writes, and TP-replicated tensors only from TP
//                  rank 0). Root attributes: format_version, step, data_position (global
//                  sample index of the next batch), seed, optimizer_steps, config (JSON).
//   manifest.json  the same metadata plus a crc32 of every dataset, computed after the
//                  file is closed; a checkpoint whose data does not match is refused.
// The directory is written as step_N.tmp and renamed once every rank has finished and the
// data is flushed; OUT/checkpoints/latest (a one-line file naming the directory) is
// replaced the same way. A crash mid-save leaves the previous checkpoint loadable.
// Loading reads, for every parameter this rank holds under its own layout, the slice it
// needs: so (TP, PP, DP, ZeRO) may all differ between save and load.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/optimizer.h"
#include "framework/params.h"
#include "framework/train_config.h"
#include "parallel/rank_grid.h"

namespace braid {

struct CheckpointState {
  int64_t step = 0;           // optimizer steps completed
  int64_t data_position = 0;  // global sample index of the next training sample
  uint64_t seed = 0;
  int64_t optimizer_steps = 0;
  nlohmann::json config;
};

// Every parameter of the full model (name, logical shape), in a fixed order.
std::vector<std::pair<std::string, Shape>> full_param_list(const ModelConfig& m);

std::string checkpoint_dir_name(int64_t step);
// Collective over the world. Returns the final directory.
std::string save_checkpoint(const std::string& out_dir, const CheckpointState& state,
                            ParamStore& store, Optimizer& opt, ProcessGroups& groups,
                            const ModelConfig& model, int64_t keep_last);
// The directory named by OUT/checkpoints/latest, or "" when there is none.
std::string find_latest_checkpoint(const std::string& out_dir);
// Collective over the world: verifies (rank 0) and reads this rank's slices.
// Throws InputError (on every rank) for a missing, corrupt or mismatching checkpoint.
CheckpointState load_checkpoint(const std::string& dir, ParamStore& store, Optimizer* opt,
                                ProcessGroups& groups, const ModelConfig& model);
// Reads only the metadata (manifest) of a checkpoint; InputError if unreadable.
nlohmann::json read_checkpoint_manifest(const std::string& dir);

}  // namespace braid
