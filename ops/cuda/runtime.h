// The per-process CUDA context: the device this rank drives (chosen by the caller, usually
// the node-local rank), the compute stream, the cuBLASLt handle
// with its 32 MiB workspace and, on first use, a cuDNN handle. The entry point owns one and
// passes it (or the pieces a layer needs) down; nothing here is a global.
//
// Ordering with the rest of Braid: the compute stream is a *blocking* stream, so it
// orders itself after work on the legacy default stream, which is where
// device_memset_zero / device_copy (ops/device_memory.h, used by Tensor) run. A Tensor
// zeroed or uploaded before a kernel launch is therefore ready when the kernel runs, with
// no extra synchronisation in the caller. Communication runs on each NCCL group's own
// stream (parallel/communicator_nccl.cpp), ordered with the compute stream by events.
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
  GemmHandle gemm() const { return {lt_, workspace_, kGemmWorkspaceBytes}; }
  // Created on first use: loading cuDNN's engines takes a while and most runs use Braid's
  // own attention.
  cudnnHandle_t cudnn();

  // Host waits for the compute stream (before reading results on the host).
  void synchronize();

 private:
  int device_ = 0;
  cudaDeviceProp props_{};
  cudaStream_t compute_ = nullptr;
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
