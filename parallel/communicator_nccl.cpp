#include "parallel/communicator_nccl.h"

#include <unistd.h>

#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ops/device_memory.h"
#include "ops/profiler.h"
#include "parallel/mpi_check.h"

#ifdef BRAID_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#define BRAID_CHECK_NCCL(call)                                                           \
  do {                                                                                   \
    ncclResult_t braid_nccl_rc_ = (call);                                                \
    if (braid_nccl_rc_ != ncclSuccess)                                                   \
      ::braid::throw_error("NCCL", long(braid_nccl_rc_), #call, __FILE__, __LINE__,      \
                           ncclGetErrorString(braid_nccl_rc_));                          \
  } while (0)
#define BRAID_CHECK_CUDART(call)                                                         \
  do {                                                                                   \
    cudaError_t braid_cu_rc_ = (call);                                                   \
    if (braid_cu_rc_ != cudaSuccess)                                                     \
      ::braid::throw_error("CUDA", long(braid_cu_rc_), #call, __FILE__, __LINE__,        \
                           cudaGetErrorString(braid_cu_rc_));                            \
  } while (0)
#endif

namespace braid {

bool group_has_distinct_gpus(Communicator& group, int device_index) {
  // (host name hash, device index) of every member, gathered over the control plane.
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  uint64_t h = 1469598103934665603ull;
  for (const char* p = host; *p; ++p) h = (h ^ uint64_t(uint8_t(*p))) * 1099511628211ull;
  int64_t mine[2] = {int64_t(h), device_index};
  std::vector<int64_t> all(size_t(2 * group.size()));
  BRAID_CHECK_MPI(MPI_Allgather(mine, 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, group.control()));
  std::set<std::pair<int64_t, int64_t>> seen;
  for (int i = 0; i < group.size(); ++i) seen.insert({all[2 * i], all[2 * i + 1]});
  return int(seen.size()) == group.size();
}

#ifdef BRAID_HAVE_CUDA
namespace {

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    case DType::U16: return ncclUint8;  // moved as bytes (count doubled by the caller)
  }
  return ncclFloat32;
}


class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> mpi, cudaStream_t compute)
      : mpi_(std::move(mpi)), compute_(compute), name_(mpi_->name() + "/nccl") {
    // The group's own stream, at the highest priority: a bucket's all-reduce queued behind
    // another group's collective, or starved by compute kernels, would not overlap. It is
    // non-blocking: a legacy default-stream copy (tensor copies) would otherwise wait for
    // a gradient bucket in flight on it. Every order it needs is explicit: it waits for
    // the compute stream by an event before each collective, and compute waits for it by
    // another (after(), or the request's wait()), so host reads after compute see its
    // results.
    int least = 0, greatest = 0;
    BRAID_CHECK_CUDART(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    BRAID_CHECK_CUDART(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
    ncclUniqueId id;
    if (mpi_->rank() == 0) BRAID_CHECK_NCCL(ncclGetUniqueId(&id));
    BRAID_CHECK_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_->control()));
    BRAID_CHECK_MPI(MPI_Barrier(mpi_->control()));
    BRAID_CHECK_NCCL(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
    BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
    BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
  }
  ~NcclCommunicator() override {
    // Unwinding from an error: peers may be gone or stuck, so abort (never blocks) instead
    // of the collective destroy; the entry point then calls MPI_Abort.
    const bool unwinding = std::uncaught_exceptions() > 0;
    for (auto& [key, c] : channels_) {
      if (unwinding) ncclCommAbort(c.comm);
      else ncclCommDestroy(c.comm);
      cudaStreamDestroy(c.stream);
      cudaEventDestroy(c.ready);
      cudaEventDestroy(c.done);
    }
    if (scratch_) cudaFree(scratch_);
    if (comm_) {
      if (unwinding) ncclCommAbort(comm_);
      else ncclCommDestroy(comm_);
    }
    if (compute_done_) cudaEventDestroy(compute_done_);
    if (comm_done_) cudaEventDestroy(comm_done_);
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  const std::string& name() const override { return name_; }
  MPI_Comm control() const override { return mpi_->control(); }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override {
    if (!is_device_pointer(buf)) return mpi_->all_reduce(buf, count, dtype, op);
    before();
    BRAID_CHECK_NCCL(ncclAllReduce(buf, buf, size_t(count), nccl_dtype(dtype),
                                   op == ReduceOp::Sum ? ncclSum : ncclMax, comm_, comm_stream_));
    after();
  }
  // Non-blocking: the compute stream goes on (the rest of the backward) while the group's
  // stream reduces; the request's wait() orders later compute after this collective.
  std::unique_ptr<CommRequest> all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) override {
    if (!is_device_pointer(buf)) return mpi_->all_reduce_async(buf, count, dtype, op);
    before();
    BRAID_CHECK_NCCL(ncclAllReduce(buf, buf, size_t(count), nccl_dtype(dtype),
                                   op == ReduceOp::Sum ? ncclSum : ncclMax, comm_, comm_stream_));
    return pending_request();
  }
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override {
    if (!is_device_pointer(send) || !is_device_pointer(recv)) return mpi_->all_gather(send, recv, count, dtype);
    before();
    BRAID_CHECK_NCCL(ncclAllGather(send, recv, size_t(count) * mult(dtype), nccl_dtype(dtype), comm_, comm_stream_));
    after();
  }
  std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override {
    if (!is_device_pointer(send) || !is_device_pointer(recv)) return mpi_->all_gather_async(send, recv, count, dtype);
    before();
    BRAID_CHECK_NCCL(ncclAllGather(send, recv, size_t(count) * mult(dtype), nccl_dtype(dtype), comm_, comm_stream_));
    return pending_request();
  }
  void reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) override {
    if (!is_device_pointer(send) || !is_device_pointer(recv)) return mpi_->reduce_scatter(send, recv, count, dtype);
    before();
    BRAID_CHECK_NCCL(ncclReduceScatter(send, recv, size_t(count), nccl_dtype(dtype), ncclSum, comm_, comm_stream_));
    after();
  }
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                                    DType dtype) override {
    if (!is_device_pointer(send) || !is_device_pointer(recv)) return mpi_->reduce_scatter_async(send, recv, count, dtype);
    before();
    BRAID_CHECK_NCCL(ncclReduceScatter(send, recv, size_t(count), nccl_dtype(dtype), ncclSum, comm_, comm_stream_));
    return pending_request();
  }
  void broadcast(void* buf, int64_t count, DType dtype, int root) override {
    if (!is_device_pointer(buf)) return mpi_->broadcast(buf, count, dtype, root);
    before();
    BRAID_CHECK_NCCL(ncclBroadcast(buf, buf, size_t(count) * mult(dtype), nccl_dtype(dtype), root, comm_, comm_stream_));
    after();
  }
  std::unique_ptr<CommRequest> send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) override {
    return mpi_->send_async(buf, count, dtype, peer, tag);
  }
  void recv(void* buf, int64_t count, DType dtype, int peer, int tag) override {
    mpi_->recv(buf, count, dtype, peer, tag);
  }
  void barrier() override { mpi_->barrier(); }
  // Each channel is a two-rank NCCL communicator with its own stream: messages of one
  // channel run in order, channels never wait for one another, and a send occupies only
  // its channel's stream (the compute stream goes on), which is the non-blocking-send,
  // blocking-receive model under which simulate_schedule proves the schedules
  // deadlock-free. The streams do not synchronise with the legacy default stream, so a
  // host copy elsewhere never waits for a send whose receiver is not there yet.
  void open_p2p_channels(const std::vector<P2PChannel>& channels) override {
    for (const P2PChannel& ch : channels) {
      if (channels_.count(ch)) continue;  // every rank skips it alike (same list)
      const bool member = ch.from == rank() || ch.to == rank();
      MPI_Comm pair = MPI_COMM_NULL;
      // Collective over the whole group, in list order: no two pairs wait on each other.
      BRAID_CHECK_MPI(MPI_Comm_split(control(), member ? 0 : MPI_UNDEFINED, ch.from == rank() ? 0 : 1, &pair));
      if (!member) continue;
      Channel c;
      ncclUniqueId id;
      int pair_rank = 0;
      MPI_Comm_rank(pair, &pair_rank);
      if (pair_rank == 0) BRAID_CHECK_NCCL(ncclGetUniqueId(&id));
      BRAID_CHECK_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, pair));
      MPI_Comm_free(&pair);
      BRAID_CHECK_NCCL(ncclCommInitRank(&c.comm, 2, id, pair_rank));
      c.peer = 1 - pair_rank;
      // At the highest priority, as the group's stream: a pipeline message starved by the
      // compute stream's kernels would stall the peer stage.
      int least = 0, greatest = 0;
      BRAID_CHECK_CUDART(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      BRAID_CHECK_CUDART(cudaStreamCreateWithPriority(&c.stream, cudaStreamNonBlocking, greatest));
      BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&c.ready, cudaEventDisableTiming));
      BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&c.done, cudaEventDisableTiming));
      // Connect now, both ways, while both ranks are here: NCCL sets up a peer connection
      // on its first message, with a host-side handshake that must not happen in the
      // middle of a schedule (where the peer's host may be busy elsewhere).
      if (!scratch_) BRAID_CHECK_CUDART(cudaMalloc(&scratch_, 2 * sizeof(float)));
      float* sc = static_cast<float*>(scratch_);
      BRAID_CHECK_NCCL(ncclGroupStart());
      BRAID_CHECK_NCCL(ncclSend(sc, 1, ncclFloat32, c.peer, c.comm, c.stream));
      BRAID_CHECK_NCCL(ncclRecv(sc + 1, 1, ncclFloat32, c.peer, c.comm, c.stream));
      BRAID_CHECK_NCCL(ncclGroupEnd());
      BRAID_CHECK_CUDART(cudaStreamSynchronize(c.stream));  // start-up only
      channels_.emplace(ch, c);
    }
  }
  bool has_ordered_channels() const override { return true; }
  std::unique_ptr<CommRequest> channel_send(const P2PChannel& ch, const void* buf, int64_t count, DType dtype,
                                            int tag) override {
    auto it = channels_.find(ch);
    if (it == channels_.end() || !is_device_pointer(buf)) return mpi_->send_async(buf, count, dtype, ch.to, tag);
    Channel& c = it->second;
    BRAID_CHECK_CUDART(cudaEventRecord(c.ready, compute_));  // the data is produced
    BRAID_CHECK_CUDART(cudaStreamWaitEvent(c.stream, c.ready, 0));
    BRAID_CHECK_NCCL(ncclSend(buf, size_t(count) * mult(dtype), nccl_dtype(dtype), c.peer, c.comm, c.stream));
    cudaEvent_t sent = nullptr;  // marks this send only: later sends on the channel may wait long
    BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&sent, cudaEventDisableTiming));
    BRAID_CHECK_CUDART(cudaEventRecord(sent, c.stream));
    return std::make_unique<StreamRequest>(sent, compute_);
  }
  void channel_recv(const P2PChannel& ch, void* buf, int64_t count, DType dtype, int tag) override {
    auto it = channels_.find(ch);
    if (it == channels_.end() || !is_device_pointer(buf)) return mpi_->recv(buf, count, dtype, ch.from, tag);
    Channel& c = it->second;
    // The buffer was just allocated in the compute stream's order: earlier users are done.
    BRAID_CHECK_CUDART(cudaEventRecord(c.ready, compute_));
    BRAID_CHECK_CUDART(cudaStreamWaitEvent(c.stream, c.ready, 0));
    BRAID_CHECK_NCCL(ncclRecv(buf, size_t(count) * mult(dtype), nccl_dtype(dtype), c.peer, c.comm, c.stream));
    BRAID_CHECK_CUDART(cudaEventRecord(c.done, c.stream));
    prof::Scope p("wait for pipeline receive");
    BRAID_CHECK_CUDART(cudaStreamWaitEvent(compute_, c.done, 0));
  }

 private:
  static size_t mult(DType t) { return t == DType::U16 ? 2 : 1; }
  // The collective reads what the compute stream (and, through the legacy default stream,
  // any copy) produced, and later compute reads what it wrote: two event edges.
  void before() {
    BRAID_CHECK_CUDART(cudaEventRecord(compute_done_, compute_));
    BRAID_CHECK_CUDART(cudaStreamWaitEvent(comm_stream_, compute_done_, 0));
  }
  void after() {
    BRAID_CHECK_CUDART(cudaEventRecord(comm_done_, comm_stream_));
    prof::Scope p(wait_label_);
    BRAID_CHECK_CUDART(cudaStreamWaitEvent(compute_, comm_done_, 0));
  }
  // after(), deferred to the request's wait(): an event marking this collective's end.
  std::unique_ptr<CommRequest> pending_request() {
    cudaEvent_t done = nullptr;
    BRAID_CHECK_CUDART(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    BRAID_CHECK_CUDART(cudaEventRecord(done, comm_stream_));
    return std::make_unique<StreamRequest>(done, compute_, &async_wait_label_);
  }

  std::unique_ptr<Communicator> mpi_;
  cudaStream_t compute_, comm_stream_;
  // Profiler labels (ops/profiler.h): where the compute stream waits for a blocking
  // collective, and for a non-blocking one at its request's wait().
  std::string name_, wait_label_ = "wait for " + name_ + " (blocking collective)",
                     async_wait_label_ = "wait for " + name_ + " (async collective)";
  ncclComm_t comm_ = nullptr;
  cudaEvent_t compute_done_ = nullptr, comm_done_ = nullptr;

  struct Channel {
    ncclComm_t comm = nullptr;
    int peer = 0;  // the other rank of the two-rank communicator
    cudaStream_t stream = nullptr;
    cudaEvent_t ready = nullptr, done = nullptr;
  };
  // Completes a send or a non-blocking collective in the compute stream's order: later
  // compute (which may reuse or read the buffer) waits for that kernel, and only for it.
  class StreamRequest : public CommRequest {
   public:
    StreamRequest(cudaEvent_t sent, cudaStream_t compute, const std::string* label = nullptr)
        : sent_(sent), compute_(compute), label_(label) {}
    ~StreamRequest() override {
      if (!waited_) cudaStreamWaitEvent(compute_, sent_, 0);  // never free a buffer under a send
      cudaEventDestroy(sent_);  // released once the recorded work completes
    }
    void wait() override {
      waited_ = true;
      std::optional<prof::Scope> p;
      if (label_ && prof::active()) p.emplace(*label_);
      BRAID_CHECK_CUDART(cudaStreamWaitEvent(compute_, sent_, 0));
    }

   private:
    cudaEvent_t sent_;
    cudaStream_t compute_;
    const std::string* label_;  // the communicator's wait label (collectives), null for sends
    bool waited_ = false;
  };
  std::map<P2PChannel, Channel> channels_;
  void* scratch_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> mpi, void* compute_stream) {
  return std::make_unique<NcclCommunicator>(std::move(mpi), static_cast<cudaStream_t>(compute_stream));
}
#else
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, void*) {
  throw InputError("--comm nccl: this build of Braid has no CUDA/NCCL backend");
}
#endif

}  // namespace braid
