// DataLoader: see data_loader.h for why it is a pure function of the global sample index.
// The generator is splitmix64 (Steele, Lea, Flood 2014): 64 bits of state, a fixed
// increment and a strong output mix; it is simple enough to reimplement anywhere, which
// keeps sample orders reproducible across versions and platforms (std:: distributions
// are not specified bit-exactly, so none is used).
#include "framework/data_loader.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "ops/check.h"

namespace braid {
namespace {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, without modulo bias: draws below 2^64 mod bound are
  // rejected, leaving a whole number of copies of [0, bound).
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // = 2^64 mod bound
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  BRAID_CHECK(n >= 0 && epoch >= 0, "n=" << n << " epoch=" << epoch);
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), int64_t{0});
  // The stream for (seed, epoch): mix the seed once, then offset by the epoch, then mix
  // again, so that nearby seeds and nearby epochs give unrelated streams.
  SplitMix64 seeder(seed);
  SplitMix64 rng(seeder.next() ^ (uint64_t(epoch) * 0xD1B54A32D192ED03ull));
  rng = SplitMix64(rng.next());
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(uint64_t(i) + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

DataLoader::DataLoader(const TokenDataset& dataset, int seq_len, uint64_t seed)
    : dataset_(dataset), seq_len_(seq_len), seed_(seed), num_samples_(0) {
  BRAID_REQUIRE(seq_len >= 1, "sequence length " << seq_len << " should be >= 1");
  num_samples_ = dataset.num_tokens() > 0 ? (dataset.num_tokens() - 1) / seq_len : 0;
  BRAID_REQUIRE(num_samples_ > 0,
                "split '" << dataset.split() << "' of dataset " << dataset.directory()
                << " has " << dataset.num_tokens() << " tokens; a sequence length of "
                << seq_len << " needs at least " << int64_t(seq_len) + 1 << " tokens");
  window_.resize(size_t(seq_len) + 1);
}

int64_t DataLoader::sample_of(int64_t global_index) {
  BRAID_CHECK(global_index >= 0, "global sample index " << global_index);
  const int64_t epoch = global_index / num_samples_;
  if (epoch != cached_epoch_) {
    permutation_ = epoch_permutation(num_samples_, seed_, epoch);
    cached_epoch_ = epoch;
  }
  return permutation_[global_index % num_samples_];
}

void DataLoader::get(int64_t global_index, int32_t* inputs, int32_t* targets) {
  const int64_t sample = sample_of(global_index);
  dataset_.read(sample * seq_len_, int64_t(seq_len_) + 1, window_.data());
  std::copy_n(window_.begin(), seq_len_, inputs);
  std::copy_n(window_.begin() + 1, seq_len_, targets);
}

void DataLoader::check_vocab(int64_t model_vocab) const {
  BRAID_REQUIRE(dataset_.vocab_size() <= model_vocab,
                "dataset " << dataset_.directory() << " has vocabulary "
                << dataset_.vocab_size() << " (tokenizer " << dataset_.tokenizer()
                << ") but the model's vocabulary is " << model_vocab);
}

}  // namespace braid
