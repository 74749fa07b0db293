// LedgerCommunicator: a decorator over any Communicator that records every call in the
// rank's Ledger (ledger.h) and forwards it unchanged. make_process_groups wraps every
// group in one; a backend swap (MPI -> NCCL) replaces the inner communicator and keeps the
// wrapper (swap_inner), so the ledger sees the calls whatever carries them.
//
// Forwarding a new virtual of Communicator is one line: `return record(...)` around the
// inner call (collective) or `record_p2p(...)` (point to point).
//
// The host control-plane helpers of communicator.h (all_reduce_double, all_reduce_int64,
// broadcast_string) record themselves through record_host_call().
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "parallel/communicator.h"
#include "parallel/ledger.h"

namespace braid {

class LedgerCommunicator : public Communicator {
 public:
  // `world`: the communicator the ledger's ranks refer to (the one make_process_groups
  // split); the members of this group are translated to it.
  LedgerCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<Ledger> ledger, MPI_Comm world);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  MPI_Comm control() const override { return inner_->control(); }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) override;
  std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                                    DType dtype) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root) override;
  std::unique_ptr<CommRequest> send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) override;
  void recv(void* buf, int64_t count, DType dtype, int peer, int tag) override;
  void barrier() override;
  void open_p2p_channels(const std::vector<P2PChannel>& channels) override;
  bool has_ordered_channels() const override { return inner_->has_ordered_channels(); }
  std::unique_ptr<CommRequest> channel_send(const P2PChannel& ch, const void* buf, int64_t count, DType dtype,
                                            int tag) override;
  void channel_recv(const P2PChannel& ch, void* buf, int64_t count, DType dtype, int tag) override;

  // Records a call until destroyed (finished, or failed when unwinding).
  class Call {
   public:
    Call(Ledger* l, uint64_t ord) : ledger_(l), ord_(ord) {}
    Call(Call&& o) noexcept : ledger_(std::exchange(o.ledger_, nullptr)), ord_(o.ord_) {}
    Call(const Call&) = delete;
    ~Call() {
      if (ledger_) ledger_->finish(ord_, std::uncaught_exceptions() == 0);
    }

   private:
    Ledger* ledger_;
    uint64_t ord_;
  };
  // Records the group's next collective (root: a group rank, or -1).
  Call begin_collective(const char* op, int64_t count, const char* dtype, int root = -1);

  Communicator& inner() { return *inner_; }
  // Replaces the inner communicator by f(old inner) (e.g. NCCL over the MPI group).
  void swap_inner(const std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)>& f);
  const std::shared_ptr<Ledger>& ledger() const { return ledger_; }

 private:
  template <class F>
  auto record(const char* op, int64_t count, DType dtype, int root, F&& f);
  template <class F>
  std::unique_ptr<CommRequest> record_async(const char* op, int64_t count, DType dtype, F&& f);
  template <class F>
  auto record_p2p(const char* op, int64_t count, DType dtype, int peer, int tag, bool blocking, F&& f);
  int world_of(int group_rank) const;

  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<Ledger> ledger_;
  int group_id_ = -1;
  std::vector<int> members_;  // world rank of each group rank
  int64_t next_seq_ = 0;
};

// Wraps `c` (nullptr stays nullptr).
std::unique_ptr<Communicator> wrap_with_ledger(std::unique_ptr<Communicator> c, std::shared_ptr<Ledger> ledger,
                                               MPI_Comm world);
// Applies f to the communicator under the ledger wrapper if `c` has one, else to `c`.
std::unique_ptr<Communicator> replace_inner_communicator(
    std::unique_ptr<Communicator> c,
    const std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)>& f);
// Records a host control-plane call on `group` if it is a LedgerCommunicator (else no-op).
std::optional<LedgerCommunicator::Call> record_host_call(Communicator& group, const char* op, int64_t count,
                                                         const char* dtype);

}  // namespace braid
