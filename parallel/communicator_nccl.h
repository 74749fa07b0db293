// NCCL communicator: collectives on device buffers run over NCCL on the group's own
// communication stream, ordered after the compute stream's work by an event and before
// the compute stream's later work by another (no host synchronisation); the non-blocking
// ones (all_reduce_async, reduce_scatter_async: gradient buckets) defer that second edge
// to the request's wait(), so the backward computes while they run. Host buffers,
// tagged point-to-point messages and the control plane go through the MPI communicator of
// the same group, which it owns. NCCL is bootstrapped over MPI: rank 0 makes the unique
// id, broadcasts it, all ranks meet at a barrier, then ncclCommInitRank.
//
// Pipeline messages use channels (open_p2p_channels): one two-rank NCCL communicator and
// one stream per (sender, receiver, lane), so that sends never hold up the sender's
// compute and each channel's messages match in order. See the .cpp for why this keeps
// every schedule deadlock-free.
#pragma once
#include <memory>

#include "parallel/communicator.h"

namespace braid {

// Wraps `mpi` (same group). The compute stream is a cudaStream_t passed as void* so that
// this header needs no CUDA. Throws if this build has no CUDA/NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> mpi, void* compute_stream);

// True when every rank of `group` drives a different GPU (NCCL refuses two ranks of one
// communicator on the same device). device_index: this rank's GPU.
bool group_has_distinct_gpus(Communicator& group, int device_index);

}  // namespace braid
