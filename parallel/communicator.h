// Communicators: one interface, two implementations (MPI over host memory here; NCCL over
// device memory with the CUDA backend). A communicator is a group of ranks (the TP, PP, DP
// or embedding group of the rank grid), created once at start-up. Collectives must be
// issued in the same order on every rank of a group; the model code issues them in
// program order from a single thread, which makes that evident.
//
// Counts are ELEMENT counts, never bytes; the dtype gives the element size.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "ops/tensor.h"
#include "parallel/p2p_channel.h"

namespace braid {

enum class ReduceOp { Sum, Max };

// A pending non-blocking operation; wait() completes it. Destroying an unfinished request
// waits for it (a buffer must never be freed under an in-flight collective).
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

// A request that is complete when made (an operation that ran blocking).
class CompletedRequest : public CommRequest {
 public:
  void wait() override {}
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;

  // In place: buf[count] on every rank becomes the reduction over the group.
  virtual void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) = 0;
  virtual std::unique_ptr<CommRequest> all_reduce_async(void* buf, int64_t count, DType dtype,
                                                        ReduceOp op) = 0;
  // recv[size * count] = concatenation over ranks (by group rank) of send[count].
  // In place when send == recv + rank * count (the rank's own block of recv).
  virtual void all_gather(const void* send, void* recv, int64_t count, DType dtype) = 0;
  // Non-blocking all_gather, same forms. By default the blocking one, returning a completed
  // request; NCCL queues it on the group's stream (ZeRO-1 gathers a bucket's updated
  // parameters while AdamW updates the next bucket).
  virtual std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv, int64_t count, DType dtype) {
    all_gather(send, recv, count, dtype);
    return std::make_unique<CompletedRequest>();
  }
  // recv[count] = the rank's block of the element-wise sum of send[size * count].
  // In place when recv == send + rank * count; the rest of send is then undefined.
  virtual void reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) = 0;
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv,
                                                            int64_t count, DType dtype) = 0;
  virtual void broadcast(void* buf, int64_t count, DType dtype, int root) = 0;
  // Point to point; tags let the pipeline engine match messages unambiguously.
  virtual std::unique_ptr<CommRequest> send_async(const void* buf, int64_t count, DType dtype,
                                                  int peer, int tag) = 0;
  virtual void recv(void* buf, int64_t count, DType dtype, int peer, int tag) = 0;
  virtual void barrier() = 0;
  // Pipeline point-to-point over channels (parallel/p2p_channel.h). open_p2p_channels is
  // collective over the group: every rank passes the same list, in the same order. Each
  // message then names its channel; its tag matches it on MPI (which needs no channels),
  // while an implementation with ordered links (NCCL) ignores the tag and matches messages
  // by their order on the channel, which the schedule proves identical at both ends
  // (check_channel_order). channel_send never blocks the caller's later compute; the
  // request's wait() orders that compute after the send (the buffer may then be reused).
  // channel_recv makes the caller's later compute see the data.
  virtual void open_p2p_channels(const std::vector<P2PChannel>& channels) { (void)channels; }
  virtual bool has_ordered_channels() const { return false; }
  virtual std::unique_ptr<CommRequest> channel_send(const P2PChannel& ch, const void* buf, int64_t count,
                                                    DType dtype, int tag) {
    return send_async(buf, count, dtype, ch.to, tag);
  }
  virtual void channel_recv(const P2PChannel& ch, void* buf, int64_t count, DType dtype, int tag) {
    recv(buf, count, dtype, ch.from, tag);
  }
  // The MPI communicator of the same group: the control plane (host scalars, strings,
  // MPI-IO) of every implementation.
  virtual MPI_Comm control() const = 0;

  // Tensor conveniences.
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) {
    all_reduce(t.raw(), t.numel(), t.dtype(), op);
  }
};

// MPI implementation over a communicator it owns (MPI_Comm_free on destruction).
class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name);  // takes ownership of comm
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_; }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_reduce_async(void* buf, int64_t count, DType dtype,
                                                ReduceOp op) override;
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                                    DType dtype) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root) override;
  std::unique_ptr<CommRequest> send_async(const void* buf, int64_t count, DType dtype, int peer,
                                          int tag) override;
  void recv(void* buf, int64_t count, DType dtype, int peer, int tag) override;
  void barrier() override;
  MPI_Comm control() const override { return comm_; }

 private:
  MPI_Comm comm_;
  std::string name_, prof_label_;
  int rank_ = 0, size_ = 1;
};

MPI_Datatype mpi_dtype(DType t);

// Sum of doubles over a group (norms, loss totals): host scalars, always through MPI.
// Every Communicator in this build wraps an MPI communicator for its control plane.
void all_reduce_double(Communicator& group, double* x, int n);
void all_reduce_int64(Communicator& group, int64_t* x, int n, ReduceOp op = ReduceOp::Sum);
MPI_Comm control_comm(Communicator& group);
void broadcast_string(Communicator& group, std::string& s, int root);

}  // namespace braid
