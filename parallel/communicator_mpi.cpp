// MPI communicator: the data plane of CPU-only builds and the control plane always.
// Host memory only; device tensors go through the NCCL communicator or are staged.
#include <cstring>
#include <limits>
#include <vector>

#include "ops/device_memory.h"
#include "ops/profiler.h"

#include "parallel/communicator.h"
#include "parallel/ledger_communicator.h"
#include "parallel/mpi_check.h"

namespace braid {

MPI_Datatype mpi_dtype(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::I32: return MPI_INT32_T;
    case DType::U16: return MPI_UINT16_T;
    case DType::BF16: return MPI_UINT16_T;  // moved, never reduced, by MPI
  }
  return MPI_BYTE;
}

namespace {
// bf16 reductions (MPI has no bf16 type): sum/max in fp32, rounded once per step.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    if (bf16_to_f32(a[i]) > bf16_to_f32(b[i])) b[i] = a[i];
}
MPI_Op mpi_op(ReduceOp op, DType dtype = DType::F32) {
  if (dtype == DType::BF16) {
    static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
    if (sum == MPI_OP_NULL) {
      MPI_Op_create(&bf16_sum, 1, &sum);
      MPI_Op_create(&bf16_max, 1, &max);
    }
    return op == ReduceOp::Sum ? sum : max;
  }
  return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
}

// Device buffers go through host memory: the copies run on the legacy default stream,
// which waits for the (blocking) compute stream, so the data is final when it is read.
struct Staged {
  void* dev = nullptr;
  std::vector<char> host;
  size_t bytes = 0;
  Staged(const void* p, size_t n, bool copy_in) : bytes(n) {
    if (!is_device_pointer(p)) return;
    dev = const_cast<void*>(p);
    host.resize(n);
    if (copy_in) device_copy(host.data(), false, p, true, n);
  }
  void* ptr(void* original) { return dev ? static_cast<void*>(host.data()) : original; }
  void copy_out() {
    if (dev) device_copy(dev, true, host.data(), false, bytes);
  }
};

int checked_count(int64_t count) {
  BRAID_CHECK(count >= 0 && count <= std::numeric_limits<int>::max(),
              "MPI message of " << count << " elements exceeds the int count limit");
  return int(count);
}

class MpiRequest : public CommRequest {
 public:
  explicit MpiRequest(MPI_Request r) : req_(r) {}
  ~MpiRequest() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    prof::Scope p("wait for an MPI request");
    BRAID_CHECK_MPI(MPI_Wait(&req_, MPI_STATUS_IGNORE));
  }
  MPI_Request* get() { return &req_; }

 private:
  MPI_Request req_;
};
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)), prof_label_("MPI " + name_) {
  BRAID_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  BRAID_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  // Errors come back as return codes (checked) rather than aborting inside MPI.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) {
  if (size_ == 1) return;
  prof::Scope p(prof_label_);
  Staged st(buf, count * dtype_bytes(dtype), true);
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, st.ptr(buf), checked_count(count), mpi_dtype(dtype),
                                mpi_op(op, dtype), comm_));
  st.copy_out();
}

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(void* buf, int64_t count,
                                                               DType dtype, ReduceOp op) {
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  if (size_ == 1) return r;
  if (is_device_pointer(buf)) {  // staged: completes here
    all_reduce(buf, count, dtype, op);
    return r;
  }
  BRAID_CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count), mpi_dtype(dtype),
                                 mpi_op(op, dtype), comm_, r->get()));
  return r;
}

// The in-place forms (communicator.h): all_gather's send is the rank's own block of recv;
// reduce_scatter's recv is the rank's own block of send. MPI forbids aliased buffers, so
// they go through MPI_IN_PLACE.
namespace {
bool is_own_block(const void* block, const void* whole, int rank, size_t block_bytes) {
  return block == static_cast<const char*>(whole) + size_t(rank) * block_bytes;
}
}  // namespace

void MpiCommunicator::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
  prof::Scope p(prof_label_);
  const size_t bytes = count * dtype_bytes(dtype);
  if (is_own_block(send, recv, rank_, bytes)) {
    // Staged: only the own block goes in; the whole buffer comes back out.
    Staged rv(recv, bytes * size_, false);
    if (rv.dev) device_copy(rv.host.data() + size_t(rank_) * bytes, false, send, true, bytes);
    // The send count and type are ignored with MPI_IN_PLACE, but Open MPI's algorithm
    // choice reads them: pass the real ones.
    BRAID_CHECK_MPI(MPI_Allgather(MPI_IN_PLACE, checked_count(count), mpi_dtype(dtype), rv.ptr(recv),
                                  checked_count(count), mpi_dtype(dtype), comm_));
    rv.copy_out();
    return;
  }
  Staged s(send, bytes, true), rv(recv, bytes * size_, false);
  BRAID_CHECK_MPI(MPI_Allgather(s.ptr(const_cast<void*>(send)), checked_count(count), mpi_dtype(dtype),
                                rv.ptr(recv), checked_count(count), mpi_dtype(dtype), comm_));
  rv.copy_out();
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) {
  prof::Scope p(prof_label_);
  const size_t bytes = count * dtype_bytes(dtype);
  if (is_own_block(recv, send, rank_, bytes)) {
    // MPI_IN_PLACE leaves the rank's block at the START of the buffer: move it to its place.
    Staged s(send, bytes * size_, true);
    char* base = static_cast<char*>(s.ptr(const_cast<void*>(send)));
    BRAID_CHECK_MPI(MPI_Reduce_scatter_block(MPI_IN_PLACE, base, checked_count(count), mpi_dtype(dtype),
                                             mpi_op(ReduceOp::Sum, dtype), comm_));
    if (s.dev) {
      device_copy(recv, true, base, false, bytes);
    } else if (rank_ != 0) {
      std::memmove(base + size_t(rank_) * bytes, base, bytes);
    }
    return;
  }
  Staged s(send, bytes * size_, true), rv(recv, bytes, false);
  BRAID_CHECK_MPI(MPI_Reduce_scatter_block(s.ptr(const_cast<void*>(send)), rv.ptr(recv), checked_count(count),
                                           mpi_dtype(dtype), mpi_op(ReduceOp::Sum, dtype), comm_));
  rv.copy_out();
}

namespace {
// In-place reduce-scatter on host memory: completion moves the rank's block from the
// buffer's start (where MPI_IN_PLACE leaves it) to its own place.
class InPlaceReduceScatter : public CommRequest {
 public:
  InPlaceReduceScatter(char* base, size_t block_bytes, int rank) : base_(base), bytes_(block_bytes), rank_(rank) {}
  ~InPlaceReduceScatter() override {
    // Only a started request moves the block, and only once it has completed.
    if (req_ != MPI_REQUEST_NULL && MPI_Wait(&req_, MPI_STATUS_IGNORE) == MPI_SUCCESS) finish();
  }
  void wait() override {
    if (req_ == MPI_REQUEST_NULL) return;  // completed (and moved) already, or never started
    BRAID_CHECK_MPI(MPI_Wait(&req_, MPI_STATUS_IGNORE));
    finish();
  }
  MPI_Request* get() { return &req_; }

 private:
  void finish() {
    if (rank_ != 0) std::memmove(base_ + size_t(rank_) * bytes_, base_, bytes_);
  }
  char* base_;
  size_t bytes_;
  int rank_;
  MPI_Request req_ = MPI_REQUEST_NULL;
};
}  // namespace

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                   int64_t count, DType dtype) {
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  if (is_device_pointer(send) || is_device_pointer(recv)) {
    reduce_scatter(send, recv, count, dtype);
    return r;
  }
  const size_t bytes = count * dtype_bytes(dtype);
  if (is_own_block(recv, send, rank_, bytes)) {
    auto ip = std::make_unique<InPlaceReduceScatter>(static_cast<char*>(recv) - size_t(rank_) * bytes, bytes, rank_);
    BRAID_CHECK_MPI(MPI_Ireduce_scatter_block(MPI_IN_PLACE, const_cast<void*>(send), checked_count(count),
                                              mpi_dtype(dtype), mpi_op(ReduceOp::Sum, dtype), comm_, ip->get()));
    return ip;
  }
  BRAID_CHECK_MPI(MPI_Ireduce_scatter_block(send, recv, checked_count(count), mpi_dtype(dtype),
                                            mpi_op(ReduceOp::Sum, dtype), comm_, r->get()));
  return r;
}

void MpiCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root) {
  if (size_ == 1) return;
  Staged st(buf, count * dtype_bytes(dtype), rank_ == root);
  BRAID_CHECK_MPI(MPI_Bcast(st.ptr(buf), checked_count(count), mpi_dtype(dtype), root, comm_));
  st.copy_out();
}

namespace {
// A send whose device data was copied to a host buffer that must live until completion.
class StagedSend : public CommRequest {
 public:
  explicit StagedSend(std::vector<char> data) : data_(std::move(data)) {}
  ~StagedSend() override {
    if (req_ != MPI_REQUEST_NULL) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }
  void wait() override { BRAID_CHECK_MPI(MPI_Wait(&req_, MPI_STATUS_IGNORE)); }
  std::vector<char> data_;
  MPI_Request req_ = MPI_REQUEST_NULL;
};
}  // namespace

std::unique_ptr<CommRequest> MpiCommunicator::send_async(const void* buf, int64_t count,
                                                         DType dtype, int peer, int tag) {
  if (is_device_pointer(buf)) {
    std::vector<char> host(count * dtype_bytes(dtype));
    device_copy(host.data(), false, buf, true, host.size());
    auto r = std::make_unique<StagedSend>(std::move(host));
    BRAID_CHECK_MPI(MPI_Isend(r->data_.data(), checked_count(count), mpi_dtype(dtype), peer, tag, comm_,
                              &r->req_));
    return r;
  }
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  BRAID_CHECK_MPI(MPI_Isend(buf, checked_count(count), mpi_dtype(dtype), peer, tag, comm_,
                            r->get()));
  return r;
}

void MpiCommunicator::recv(void* buf, int64_t count, DType dtype, int peer, int tag) {
  Staged st(buf, count * dtype_bytes(dtype), false);
  BRAID_CHECK_MPI(MPI_Recv(st.ptr(buf), checked_count(count), mpi_dtype(dtype), peer, tag, comm_,
                           MPI_STATUS_IGNORE));
  st.copy_out();
}

void MpiCommunicator::barrier() { BRAID_CHECK_MPI(MPI_Barrier(comm_)); }

MPI_Comm control_comm(Communicator& group) { return group.control(); }

void all_reduce_double(Communicator& group, double* x, int n) {
  auto rec = record_host_call(group, "all_reduce_sum", n, "f64");
  if (group.size() == 1) return;
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, control_comm(group)));
}

void broadcast_string(Communicator& group, std::string& s, int root) {
  auto rec = record_host_call(group, "broadcast_string", -1, "char");  // length known to the root only
  if (group.size() == 1) return;
  MPI_Comm c = control_comm(group);
  int64_t len = int64_t(s.size());
  BRAID_CHECK_MPI(MPI_Bcast(&len, 1, MPI_INT64_T, root, c));
  s.resize(size_t(len));
  if (len > 0) BRAID_CHECK_MPI(MPI_Bcast(s.data(), checked_count(len), MPI_CHAR, root, c));
}

void all_reduce_int64(Communicator& group, int64_t* x, int n, ReduceOp op) {
  auto rec = record_host_call(group, op == ReduceOp::Sum ? "all_reduce_sum" : "all_reduce_max", n, "i64");
  if (group.size() == 1) return;
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_INT64_T, mpi_op(op, DType::I32), control_comm(group)));
}

}  // namespace braid
