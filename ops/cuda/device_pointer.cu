// Pointer classification for the communicators: device buffers are staged through host
// memory by the MPI communicator (several ranks on one GPU, or no NCCL).
#include <cuda_runtime.h>

#include "ops/device_memory.h"

namespace braid {
bool is_device_pointer(const void* p) {
  if (!p) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of a plain host pointer
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
}  // namespace braid

namespace braid {
int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}
}  // namespace braid
