// Shared by the CUDA benchmark programs: random bf16 fills (never zeros: zeros run faster
// than real data) and the median of CUDA-event timings.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "ops/cuda/cuda_check.h"

namespace braid::bench {

// x[i] uniform in [-scale/2, scale/2), a hash of (i, seed).
static __global__ void fill_bf16_kernel(__nv_bfloat16* x, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    x[i] = __float2bfloat16((float(h & 0xFFFFFF) / float(0x1000000) - 0.5f) * scale);
  }
}

// 3 warm-up calls, then the median of 20 calls each timed with CUDA events on `stream`.
inline double median_ms(const std::function<void()>& fn, cudaStream_t stream) {
  cudaEvent_t a, b;
  BRAID_CHECK_CUDA(cudaEventCreate(&a));
  BRAID_CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    BRAID_CHECK_CUDA(cudaEventRecord(a, stream));
    fn();
    BRAID_CHECK_CUDA(cudaEventRecord(b, stream));
    BRAID_CHECK_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BRAID_CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  BRAID_CHECK_CUDA(cudaEventDestroy(a));
  BRAID_CHECK_CUDA(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace braid::bench
