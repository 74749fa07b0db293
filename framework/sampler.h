// Text generation from a trained model on one rank: loads any checkpoint (whatever layout
// it was saved under) into a TP=1, PP=1 model and samples autoregressively with
// temperature and top-k. No KV cache: each token re-runs the causal forward over the
// last seq_len tokens, which is plenty for the small models trained on CPU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/model_config.h"

namespace braid {

struct SampleOptions {
  int tokens = 100;
  float temperature = 0.8f;
  int top_k = 40;
  uint64_t seed = 42;
};

// Generates `opts.tokens` ids after `prompt` (which must be non-empty). Collective over
// MPI_COMM_SELF only: call it from one rank.
std::vector<int32_t> sample_from_checkpoint(const std::string& checkpoint_dir,
                                            const std::vector<int32_t>& prompt,
                                            const SampleOptions& opts, ModelConfig* model_out = nullptr);

}  // namespace braid
