// CudaContext: device selection, streams, events, cuBLASLt and cuDNN handles.
#include "ops/cuda/runtime.h"

#include "ops/cuda/cuda_check.h"
#include "ops/device_memory.h"

namespace braid::cuda {

CudaContext::CudaContext(int device_index) : device_(device_index) {
  int count = 0;
  BRAID_CHECK_CUDA(cudaGetDeviceCount(&count));
  BRAID_CHECK(device_index >= 0 && device_index < count,
              "CUDA device " << device_index << " requested, " << count << " visible");
  BRAID_CHECK_CUDA(cudaSetDevice(device_));
  BRAID_CHECK_CUDA(cudaGetDeviceProperties(&props_, device_));
  // Blocking streams (no cudaStreamNonBlocking): see the header on ordering with Tensor's
  // default-stream memset and copies.
  BRAID_CHECK_CUDA(cudaStreamCreate(&compute_));
  BRAID_CHECK_CUDA(cudaStreamCreate(&comm_));
  BRAID_CHECK_CUDA(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
  BRAID_CHECK_CUDA(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
  BRAID_CHECK_CUBLAS(cublasLtCreate(&lt_));
  workspace_ = device_alloc(kGemmWorkspaceBytes);
}

CudaContext::~CudaContext() {
  // Destructors must not throw: release what exists and ignore the codes (at process exit
  // the driver may already be shutting down).
  if (cudnn_) cudnnDestroy(cudnn_);
  if (workspace_) device_free(workspace_);
  if (lt_) cublasLtDestroy(lt_);
  if (comm_done_) cudaEventDestroy(comm_done_);
  if (compute_done_) cudaEventDestroy(compute_done_);
  if (comm_) cudaStreamDestroy(comm_);
  if (compute_) cudaStreamDestroy(compute_);
}

cudnnHandle_t CudaContext::cudnn() {
  if (!cudnn_) {
    BRAID_CHECK_CUDA(cudaSetDevice(device_));
    BRAID_CHECK_CUDNN(cudnnCreate(&cudnn_));
    BRAID_CHECK_CUDNN(cudnnSetStream(cudnn_, compute_));
  }
  return cudnn_;
}

void CudaContext::stream_wait(cudaStream_t waiter, cudaStream_t producer) {
  // One event per producing stream. Re-recording it is safe: cudaStreamWaitEvent captures
  // the event's state at the time of the call, not at the time the wait executes.
  cudaEvent_t e = producer == comm_ ? comm_done_ : compute_done_;
  BRAID_CHECK(producer == comm_ || producer == compute_,
              "stream_wait: the producer must be one of the context's streams");
  BRAID_CHECK_CUDA(cudaEventRecord(e, producer));
  BRAID_CHECK_CUDA(cudaStreamWaitEvent(waiter, e, 0));
}

void CudaContext::synchronize() {
  // The one deliberate host wait of a step: the caller is about to read results on the host.
  BRAID_CHECK_CUDA(cudaStreamSynchronize(compute_));
  BRAID_CHECK_CUDA(cudaStreamSynchronize(comm_));
}

}  // namespace braid::cuda
