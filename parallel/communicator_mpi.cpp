// MPI communicator: the data plane of CPU-only builds and the control plane always.
// Host memory only; device tensors go through the NCCL communicator or are staged.
#include <limits>

#include "parallel/communicator.h"
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
MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX; }

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
  void wait() override { BRAID_CHECK_MPI(MPI_Wait(&req_, MPI_STATUS_IGNORE)); }
  MPI_Request* get() { return &req_; }

 private:
  MPI_Request req_;
};
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)) {
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
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, buf, checked_count(count), mpi_dtype(dtype),
                                mpi_op(op), comm_));
}

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(void* buf, int64_t count,
                                                               DType dtype, ReduceOp op) {
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  if (size_ > 1)
    BRAID_CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf, checked_count(count), mpi_dtype(dtype),
                                   mpi_op(op), comm_, r->get()));
  return r;
}

void MpiCommunicator::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
  BRAID_CHECK_MPI(MPI_Allgather(send, checked_count(count), mpi_dtype(dtype), recv,
                                checked_count(count), mpi_dtype(dtype), comm_));
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) {
  BRAID_CHECK_MPI(MPI_Reduce_scatter_block(send, recv, checked_count(count), mpi_dtype(dtype),
                                           MPI_SUM, comm_));
}

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                   int64_t count, DType dtype) {
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  BRAID_CHECK_MPI(MPI_Ireduce_scatter_block(send, recv, checked_count(count), mpi_dtype(dtype),
                                            MPI_SUM, comm_, r->get()));
  return r;
}

void MpiCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root) {
  if (size_ == 1) return;
  BRAID_CHECK_MPI(MPI_Bcast(buf, checked_count(count), mpi_dtype(dtype), root, comm_));
}

std::unique_ptr<CommRequest> MpiCommunicator::send_async(const void* buf, int64_t count,
                                                         DType dtype, int peer, int tag) {
  auto r = std::make_unique<MpiRequest>(MPI_REQUEST_NULL);
  BRAID_CHECK_MPI(MPI_Isend(buf, checked_count(count), mpi_dtype(dtype), peer, tag, comm_,
                            r->get()));
  return r;
}

void MpiCommunicator::recv(void* buf, int64_t count, DType dtype, int peer, int tag) {
  BRAID_CHECK_MPI(MPI_Recv(buf, checked_count(count), mpi_dtype(dtype), peer, tag, comm_,
                           MPI_STATUS_IGNORE));
}

void MpiCommunicator::barrier() { BRAID_CHECK_MPI(MPI_Barrier(comm_)); }

MPI_Comm control_comm(Communicator& group) {
  auto* m = dynamic_cast<MpiCommunicator*>(&group);
  BRAID_CHECK(m != nullptr, "communicator " << group.name() << " has no MPI control plane");
  return m->comm();
}

void all_reduce_double(Communicator& group, double* x, int n) {
  if (group.size() == 1) return;
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, control_comm(group)));
}

void broadcast_string(Communicator& group, std::string& s, int root) {
  if (group.size() == 1) return;
  MPI_Comm c = control_comm(group);
  int64_t len = int64_t(s.size());
  BRAID_CHECK_MPI(MPI_Bcast(&len, 1, MPI_INT64_T, root, c));
  s.resize(size_t(len));
  if (len > 0) BRAID_CHECK_MPI(MPI_Bcast(s.data(), checked_count(len), MPI_CHAR, root, c));
}

void all_reduce_int64(Communicator& group, int64_t* x, int n, ReduceOp op) {
  if (group.size() == 1) return;
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_INT64_T, mpi_op(op), control_comm(group)));
}

}  // namespace braid
