// CudaContext: device selection, the compute stream, cuBLASLt and cuDNN handles.
#include "ops/cuda/runtime.h"

#include <algorithm>

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
  // default-stream memset and copies. Priority one above the lowest: communication streams
  // sit above it (parallel/communicator_nccl.cpp), and work that only fills the gaps the
  // compute stream leaves (the low-priority overlapped AdamW) below it.
  int least = 0, greatest = 0;
  BRAID_CHECK_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  BRAID_CHECK_CUDA(cudaStreamCreateWithPriority(&compute_, cudaStreamDefault, std::max(greatest, least - 1)));
  BRAID_CHECK_CUBLAS(cublasLtCreate(&lt_));
  workspace_ = device_alloc(kGemmWorkspaceBytes);
}

CudaContext::~CudaContext() {
  // Destructors must not throw: release what exists and ignore the codes (at process exit
  // the driver may already be shutting down).
  if (cudnn_) cudnnDestroy(cudnn_);
  if (workspace_) device_free(workspace_);
  if (lt_) cublasLtDestroy(lt_);
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

void CudaContext::synchronize() {
  // The one deliberate host wait of a step: the caller is about to read results on the host.
  // Communication streams (parallel/communicator_nccl.cpp) are ordered into the compute
  // stream by events, so the compute stream's end is the step's end.
  BRAID_CHECK_CUDA(cudaStreamSynchronize(compute_));
}

}  // namespace braid::cuda
