#include "parallel/ledger_communicator.h"

#include "parallel/mpi_check.h"

namespace braid {

namespace {
const char* reduce_name(const char* sum, const char* max, ReduceOp op) { return op == ReduceOp::Sum ? sum : max; }

// Completion of a non-blocking call: Waiting while wait() blocks, Finished after it.
class LedgerRequest : public CommRequest {
 public:
  LedgerRequest(std::unique_ptr<CommRequest> inner, Ledger* ledger, uint64_t ord)
      : inner_(std::move(inner)), ledger_(ledger), ord_(ord) {}
  ~LedgerRequest() override {
    if (done_) return;
    ledger_->wait_begin(ord_);
    inner_.reset();  // the inner request's destructor completes it
    ledger_->finish(ord_, true);
  }
  void wait() override {
    if (done_) return;
    ledger_->wait_begin(ord_);
    LedgerCommunicator::Call call(ledger_, ord_);  // finished (or failed) on scope exit
    inner_->wait();
    done_ = true;
  }

 private:
  std::unique_ptr<CommRequest> inner_;
  Ledger* ledger_;
  uint64_t ord_;
  bool done_ = false;
};
}  // namespace

LedgerCommunicator::LedgerCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<Ledger> ledger,
                                       MPI_Comm world)
    : inner_(std::move(inner)), ledger_(std::move(ledger)) {
  // Members as world ranks: local group operations, no communication.
  MPI_Group mine, all;
  BRAID_CHECK_MPI(MPI_Comm_group(inner_->control(), &mine));
  BRAID_CHECK_MPI(MPI_Comm_group(world, &all));
  std::vector<int> local(size_t(inner_->size()));
  for (int i = 0; i < inner_->size(); ++i) local[size_t(i)] = i;
  members_.resize(local.size());
  BRAID_CHECK_MPI(MPI_Group_translate_ranks(mine, int(local.size()), local.data(), all, members_.data()));
  MPI_Group_free(&mine);
  MPI_Group_free(&all);
  group_id_ = ledger_->add_group(inner_->name(), members_);
}

int LedgerCommunicator::world_of(int group_rank) const {
  return group_rank >= 0 && group_rank < int(members_.size()) ? members_[size_t(group_rank)] : group_rank;
}

LedgerCommunicator::Call LedgerCommunicator::begin_collective(const char* op, int64_t count, const char* dtype,
                                                              int root) {
  return Call(ledger_.get(), ledger_->begin(group_id_, next_seq_++, op, count, dtype,
                                            root >= 0 ? world_of(root) : -1, -1, true));
}

template <class F>
auto LedgerCommunicator::record(const char* op, int64_t count, DType dtype, int root, F&& f) {
  Call call = begin_collective(op, count, dtype_name(dtype), root);
  return f();
}

template <class F>
std::unique_ptr<CommRequest> LedgerCommunicator::record_async(const char* op, int64_t count, DType dtype, F&& f) {
  const uint64_t ord = ledger_->begin(group_id_, next_seq_++, op, count, dtype_name(dtype), -1, -1, false);
  try {
    return std::make_unique<LedgerRequest>(f(), ledger_.get(), ord);
  } catch (...) {
    ledger_->finish(ord, false);
    throw;
  }
}

template <class F>
auto LedgerCommunicator::record_p2p(const char* op, int64_t count, DType dtype, int peer, int tag, bool blocking,
                                    F&& f) {
  Call call(ledger_.get(), ledger_->begin(group_id_, -1, op, count, dtype_name(dtype), world_of(peer), tag, blocking));
  return f();
}

void LedgerCommunicator::all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) {
  record(reduce_name("all_reduce_sum", "all_reduce_max", op), count, dtype, -1,
         [&] { inner_->all_reduce(buf, count, dtype, op); });
}

std::unique_ptr<CommRequest> LedgerCommunicator::all_reduce_async(void* buf, int64_t count, DType dtype,
                                                                  ReduceOp op) {
  return record_async(reduce_name("all_reduce_sum", "all_reduce_max", op), count, dtype,
                      [&] { return inner_->all_reduce_async(buf, count, dtype, op); });
}

void LedgerCommunicator::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
  record("all_gather", count, dtype, -1, [&] { inner_->all_gather(send, recv, count, dtype); });
}

std::unique_ptr<CommRequest> LedgerCommunicator::all_gather_async(const void* send, void* recv, int64_t count,
                                                                  DType dtype) {
  return record_async("all_gather", count, dtype, [&] { return inner_->all_gather_async(send, recv, count, dtype); });
}

void LedgerCommunicator::reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) {
  record("reduce_scatter", count, dtype, -1, [&] { inner_->reduce_scatter(send, recv, count, dtype); });
}

std::unique_ptr<CommRequest> LedgerCommunicator::reduce_scatter_async(const void* send, void* recv, int64_t count,
                                                                      DType dtype) {
  return record_async("reduce_scatter", count, dtype,
                      [&] { return inner_->reduce_scatter_async(send, recv, count, dtype); });
}

void LedgerCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root) {
  record("broadcast", count, dtype, root, [&] { inner_->broadcast(buf, count, dtype, root); });
}

std::unique_ptr<CommRequest> LedgerCommunicator::send_async(const void* buf, int64_t count, DType dtype, int peer,
                                                            int tag) {
  // The send is recorded when issued and finished by its request.
  const uint64_t ord = ledger_->begin(group_id_, -1, "send", count, dtype_name(dtype), world_of(peer), tag, false);
  try {
    return std::make_unique<LedgerRequest>(inner_->send_async(buf, count, dtype, peer, tag), ledger_.get(), ord);
  } catch (...) {
    ledger_->finish(ord, false);
    throw;
  }
}

void LedgerCommunicator::recv(void* buf, int64_t count, DType dtype, int peer, int tag) {
  record_p2p("recv", count, dtype, peer, tag, true, [&] { inner_->recv(buf, count, dtype, peer, tag); });
}

void LedgerCommunicator::barrier() {
  Call call = begin_collective("barrier", 0, "none");
  inner_->barrier();
}

void LedgerCommunicator::open_p2p_channels(const std::vector<P2PChannel>& channels) {
  // Collective over the group (it splits the group's communicator once per channel).
  Call call = begin_collective("open_p2p_channels", int64_t(channels.size()), "none");
  inner_->open_p2p_channels(channels);
}

std::unique_ptr<CommRequest> LedgerCommunicator::channel_send(const P2PChannel& ch, const void* buf, int64_t count,
                                                              DType dtype, int tag) {
  // As send_async: recorded when issued, finished by its request.
  const uint64_t ord = ledger_->begin(group_id_, -1, "send", count, dtype_name(dtype), world_of(ch.to), tag, false);
  try {
    return std::make_unique<LedgerRequest>(inner_->channel_send(ch, buf, count, dtype, tag), ledger_.get(), ord);
  } catch (...) {
    ledger_->finish(ord, false);
    throw;
  }
}

void LedgerCommunicator::channel_recv(const P2PChannel& ch, void* buf, int64_t count, DType dtype, int tag) {
  record_p2p("recv", count, dtype, ch.from, tag, true, [&] { inner_->channel_recv(ch, buf, count, dtype, tag); });
}

void LedgerCommunicator::swap_inner(
    const std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)>& f) {
  inner_ = f(std::move(inner_));
}

std::unique_ptr<Communicator> wrap_with_ledger(std::unique_ptr<Communicator> c, std::shared_ptr<Ledger> ledger,
                                               MPI_Comm world) {
  if (!c) return c;
  return std::make_unique<LedgerCommunicator>(std::move(c), std::move(ledger), world);
}

std::unique_ptr<Communicator> replace_inner_communicator(
    std::unique_ptr<Communicator> c,
    const std::function<std::unique_ptr<Communicator>(std::unique_ptr<Communicator>)>& f) {
  if (auto* l = dynamic_cast<LedgerCommunicator*>(c.get())) {
    l->swap_inner(f);
    return c;
  }
  return f(std::move(c));
}

std::optional<LedgerCommunicator::Call> record_host_call(Communicator& group, const char* op, int64_t count,
                                                         const char* dtype) {
  if (auto* l = dynamic_cast<LedgerCommunicator*>(&group)) return l->begin_collective(op, count, dtype);
  return std::nullopt;
}

}  // namespace braid
