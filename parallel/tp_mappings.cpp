#include "parallel/tp_mappings.h"

#include "ops/check.h"

namespace braid {

void tp_all_reduce(Communicator& tp, Tensor& x) {
  tp.all_reduce(x.raw(), x.numel(), x.dtype(), ReduceOp::Sum);
}

// The communicator concatenates by rank, which is the token order: rank r's block is rows
// [r*N/P, (r+1)*N/P) of the full tensor.
void tp_gather_seq(Communicator& tp, const Tensor& local, Tensor& full) {
  BRAID_CHECK(local.numel() * tp.size() == full.numel(), "sequence gather: " << local.numel() << " x "
                                                                               << tp.size() << " != " << full.numel());
  if (tp.size() == 1) {
    full.copy_from(local);
    return;
  }
  tp.all_gather(local.raw(), full.raw(), local.numel(), local.dtype());
}

void tp_reduce_scatter_seq(Communicator& tp, const Tensor& full, Tensor& local) {
  BRAID_CHECK(local.numel() * tp.size() == full.numel(), "sequence reduce-scatter: " << local.numel() << " x "
                                                                                       << tp.size() << " != "
                                                                                       << full.numel());
  if (tp.size() == 1) {
    local.copy_from(full);
    return;
  }
  tp.reduce_scatter(full.raw(), local.raw(), local.numel(), full.dtype());
}

}  // namespace braid
