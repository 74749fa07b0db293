// Reshardable HDF5 checkpoints.
//
// Layout: OUT/checkpoints/step_NNNNNNNN/
//   model.h5       /params/<name>, /adam_m/<name>, /adam_v/<name>: every tensor with its
//                  FULL logical shape (float32), written collectively with parallel HDF5
//                  (MPI-IO): each rank writes the hyperslab it owns (replicas skip: only
//                  data-parallel rank 0 writes, and TP-replicated tensors only from TP
//                  rank 0). Each dataset carries a "crc32" attribute: the crc32 of the
//                  full tensor's bytes, combined from the writers' slices without
//                  gathering them (checkpoint_format.h). Root attributes: format_version,
//                  step, data_position (global sample index of the next batch), seed,
//                  optimizer_steps, config (JSON). HDF5 1.8+ object format, whose metadata
//                  blocks carry checksums.
//   manifest.json  the same metadata, the layout it was saved under and the crc32 of
//                  every dataset.
// The directory is written as step_N.tmp and renamed once every rank has finished and the
// data is flushed; OUT/checkpoints/latest (a one-line file naming the directory) is
// replaced the same way. A crash mid-save leaves the previous checkpoint loadable; the
// next save removes what the crash left. A failed save (disk full, quota, I/O error) is
// agreed on by all ranks, removes its partial directory and stops the run with a message.
// Loading reads, for every parameter this rank holds under its own layout, the slice it
// needs: so (TP, PP, DP, ZeRO) may all differ between save and load. Each replica checks
// the checksums of what it read; nothing from a file is trusted before it is validated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/checkpoint_format.h"
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

// Collective over the world. Returns the final directory. InputError (on every rank) when
// the save fails; the previous checkpoint is left as it was.
std::string save_checkpoint(const std::string& out_dir, const CheckpointState& state,
                            ParamStore& store, Optimizer& opt, ProcessGroups& groups,
                            const ModelConfig& model, int64_t keep_last);
// The newest complete checkpoint of OUT/checkpoints, or "" when there is none: the one
// `latest` names, or a newer complete one (a crash between its rename and the pointer
// update). Partial saves (step_N.tmp) are never returned. InputError for a corrupt pointer
// or one that leads outside the checkpoint directory.
std::string find_latest_checkpoint(const std::string& out_dir);
// Collective over the world: validates (rank 0) and reads this rank's slices, verifying
// every replica's reads against the stored checksums.
// Throws InputError (on every rank) for a missing, corrupt or mismatching checkpoint.
CheckpointState load_checkpoint(const std::string& dir, ParamStore& store, Optimizer* opt,
                                ProcessGroups& groups, const ModelConfig& model);
// Reads and validates the metadata (manifest) of a checkpoint, including that model.h5 is
// large enough for the model it describes; InputError if not.
nlohmann::json read_checkpoint_manifest(const std::string& dir);

}  // namespace braid
