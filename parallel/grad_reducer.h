// Data-parallel gradient reduction in buckets. The model's gradients live in one flat
// buffer cut into buckets (contiguous ranges, each a multiple of DP elements). As soon as
// backward has finalised every gradient of a bucket, launch(b) issues a non-blocking
// collective for it, so communication overlaps the rest of the backward pass;
// wait_all() completes them before the optimizer runs.
//
//   plain DP:  all-reduce(sum) of the bucket       -> every replica holds the full sum
//   ZeRO-1:    reduce-scatter(sum) of the bucket    -> replica d holds the sum of the d-th
//              1/DP of the bucket, in place: at that block of the flat gradients (the
//              rest of the bucket is then undefined). No second gradient buffer.
//
// Gradients are already scaled by 1/(tokens in the global batch), so a sum is the mean.
// Buckets are launched in the same order on every replica (backward runs the same code).
#pragma once
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace braid {

struct BucketRange {
  int64_t offset = 0, size = 0;  // elements; size % dp == 0
};

class GradReducer {
 public:
  GradReducer(Communicator& dp, float* flat_grads, std::vector<BucketRange> buckets, bool zero);

  void launch(int bucket);
  bool launched(int bucket) const { return launched_[bucket]; }
  void poll();       // lets MPI progress outstanding collectives between layers
  void wait_all();   // completes every launched bucket; all buckets must have been launched
  void reset();      // start of a step

  bool zero() const { return zero_; }
  // ZeRO-1: this replica's shard of bucket b is flat range [shard_begin(b), +shard_size(b)),
  // whose reduced gradients are at shard_grads(b) (in the flat buffer). Sharded optimizer
  // state concatenates the shards: bucket b's at shard_offset(b), shard_total() in all.
  int64_t shard_size(int b) const { return buckets_[b].size / dp_.size(); }
  int64_t shard_begin(int b) const { return buckets_[b].offset + dp_.rank() * shard_size(b); }
  int64_t shard_offset(int b) const { return shard_offsets_[b]; }
  int64_t shard_total() const { return shard_total_; }
  float* shard_grads(int b) { return flat_ + shard_begin(b); }
  const std::vector<BucketRange>& buckets() const { return buckets_; }
  Communicator& dp() { return dp_; }

 private:
  Communicator& dp_;
  float* flat_;
  std::vector<BucketRange> buckets_;
  bool zero_;
  std::vector<bool> launched_;
  std::vector<std::unique_ptr<CommRequest>> pending_;
  std::vector<int64_t> shard_offsets_;
  int64_t shard_total_ = 0;
};

}  // namespace braid
