// Training samples from a TokenDataset: fixed windows of T+1 tokens in a seeded order.
//
// Why stateless: the loader's only position is the global sample index g that the trainer
// passes in (and records in checkpoints). Sample g is a pure function of (dataset, T, seed,
// g), so a run resumes exactly from a checkpoint at any data-parallel size, and DP ranks
// get disjoint samples just by asking for disjoint g (e.g. the trainer's step s, DP rank
// r, microbatch row b: g = (s * DP + r) * B + b). No RNG state has to be saved.
//
// Sample s (of num_samples() = (num_tokens - 1) / T) is the window starting at token s*T:
// windows overlap by one token, so every token except the last is some sample's input.
// g maps to epoch e = g / num_samples and position p = g % num_samples; the sample is
// permutation_e[p], where permutation_e is a Fisher-Yates shuffle of [0, num_samples)
// driven by splitmix64 seeded from (seed, e). Every sample appears once per epoch.
// The current epoch's permutation is cached: 8 bytes per sample (80 MB for 10M samples,
// i.e. 10B tokens at T = 1024), rebuilt when the epoch changes.
#pragma once
#include <cstdint>
#include <vector>

#include "framework/dataset.h"

namespace braid {

class DataLoader {
 public:
  // The dataset must outlive the loader. InputError if seq_len < 1 or the split holds too
  // few tokens for one sample.
  DataLoader(const TokenDataset& dataset, int seq_len, uint64_t seed);

  int seq_len() const { return seq_len_; }
  int64_t num_samples() const { return num_samples_; }

  // Which window (sample index in [0, num_samples)) the global index g reads.
  int64_t sample_of(int64_t global_index);

  // inputs[T] = window[0:T], targets[T] = window[1:T+1] of sample_of(global_index).
  // Not thread-safe: it caches the current epoch's permutation.
  void get(int64_t global_index, int32_t* inputs, int32_t* targets);

  // InputError "dataset DIR has vocabulary N (tokenizer X) but the model's vocabulary is
  // M" when the dataset's ids would not fit the model's embedding.
  void check_vocab(int64_t model_vocab) const;

 private:
  const TokenDataset& dataset_;
  int seq_len_;
  uint64_t seed_;
  int64_t num_samples_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> permutation_;  // [num_samples] of cached_epoch_
  std::vector<int32_t> window_;       // [T + 1] scratch
};

// The permutation of [0, n) used for epoch `epoch` (exposed for tests and tools).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace braid
