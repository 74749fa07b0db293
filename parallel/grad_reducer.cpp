#include "parallel/grad_reducer.h"

#include <mpi.h>

#include "ops/check.h"

namespace braid {

GradReducer::GradReducer(Communicator& dp, float* flat_grads, std::vector<BucketRange> buckets,
                         bool zero)
    : dp_(dp), flat_(flat_grads), buckets_(std::move(buckets)), zero_(zero) {
  for (const auto& b : buckets_) {
    BRAID_CHECK(b.size % dp_.size() == 0, "bucket size " << b.size << " not a multiple of DP");
    shard_offsets_.push_back(shard_total_);
    shard_total_ += b.size / dp_.size();
  }
  reset();
}

void GradReducer::reset() {
  pending_.clear();
  launched_.assign(buckets_.size(), false);
}

void GradReducer::launch(int b) {
  BRAID_CHECK(!launched_[b], "bucket " << b << " launched twice in one step");
  launched_[b] = true;
  const BucketRange& r = buckets_[b];
  if (zero_) {
    pending_.push_back(dp_.reduce_scatter_async(flat_ + r.offset, shard_grads(b), shard_size(b), DType::F32));
  } else if (dp_.size() > 1) {
    pending_.push_back(dp_.all_reduce_async(flat_ + r.offset, r.size, DType::F32, ReduceOp::Sum));
  }
}

void GradReducer::poll() {
  // Open MPI progresses non-blocking collectives only inside MPI calls; a test per layer
  // keeps them moving while backward computes.
  int flag = 0;
  MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
}

void GradReducer::wait_all() {
  for (size_t b = 0; b < buckets_.size(); ++b)
    BRAID_CHECK(launched_[b], "bucket " << b << " never launched: a gradient was not finalised");
  for (auto& p : pending_) p->wait();
  pending_.clear();
}

}  // namespace braid
