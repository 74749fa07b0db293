// The per-process CUDA context: the device this rank drives (chosen by the caller, usually
// the node-local rank), a compute stream and a communication stream, the cuBLASLt handle
// with its 32 MiB workspace and, on first use, a cuDNN handle. The entry point owns one and
// passes it (or the pieces a layer needs) down; nothing here is a global.
//
// Ordering with the rest of Braid: both streams are created as *blocking* streams, so
// they order themselves after work on the legacy default stream, which is where
// device_memset_zero / device_copy (ops/device_memory.h, used by Tensor) run. A Tensor
// zeroed or uploaded before a kernel launch is therefore ready when the kernel runs, with
// no extra synchronisation in the caller.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>

#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {

class CudaContext {
 public:
  static constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;

  explicit CudaContext(int device_index);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device_index() const { return device_; }
  const cudaDeviceProp& properties() const { return props_; }
  cudaStream_t compute_stream() const { return compute_; }
  cudaStream_t comm_stream() const { return comm_; }
  GemmHandle gemm() const { return {lt_, workspace_, kGemmWorkspaceBytes}; }
  // Created on first use: loading cuDNN's engines takes a while and most runs use Braid's
  // own attention.
  cudnnHandle_t cudnn();

  // Makes `waiter` wait (on the device, not the host) for everything enqueued on `producer`
  // so far: an event recorded on `producer`, waited on by `waiter`.
  void stream_wait(cudaStream_t waiter, cudaStream_t producer);
  // The two orders the training step needs: communication of gradients after the backward
  // kernels that produced them, and the optimizer after the reduced gradients arrived.
  void comm_waits_for_compute() { stream_wait(comm_, compute_); }
  void compute_waits_for_comm() { stream_wait(compute_, comm_); }
  // Host waits for both streams (end of step, before reading losses on the host).
  void synchronize();

 private:
  int device_ = 0;
  cudaDeviceProp props_{};
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;
  cudaEvent_t comm_done_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
};

// Counters of the caching device allocator (device_memory.cu), for tests and logs.
struct DeviceMemoryStats {
  size_t reserved_bytes = 0;  // taken from the driver and never given back
  size_t in_use_bytes = 0;    // handed out and not yet freed (rounded sizes)
  int64_t driver_allocs = 0;  // cudaMalloc calls so far
  int64_t cache_hits = 0;     // device_alloc calls served from a free list
};
DeviceMemoryStats device_memory_stats();

}  // namespace braid::cuda
