// The CUDA implementation of ops/device_memory.h: a caching allocator, so that a training
// step in steady state never calls cudaMalloc (which synchronises the device) or cudaFree.
//
// Requests are rounded up to a size class: multiples of 512 bytes up to 4 KiB, above that
// eight classes per power of two (at most 12.5% waste). A freed block goes onto the free
// list of its (device, class) and is handed out again for the next request of that class.
// Memory is never returned to the driver while the process runs, with one exception: when
// cudaMalloc fails, the cached free blocks are released and the allocation is retried once
// (better than failing with gigabytes idle in other classes).
//
// Stream semantics: a block freed here can be handed out at once. Reuse is safe for work on
// one stream (the compute stream: the next user's kernels run after the previous user's)
// and for the default-stream memset/copies below (blocking streams order with them). A
// caller that used a buffer on another stream (communication) must make the compute stream
// wait for that work before releasing the buffer.
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/runtime.h"
#include "ops/device_memory.h"

namespace braid {
namespace {

size_t size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 511) / 512 * 512;
  // Granule = 1/8 of the power of two below `bytes`.
  int log2 = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));
  size_t granule = size_t(1) << (log2 - 3);
  return (bytes + granule - 1) / granule * granule;
}

struct CachingAllocator {
  std::mutex mu;
  // key: (device << 56) ^ class bytes (classes are far below 2^56 bytes).
  std::unordered_map<uint64_t, std::vector<void*>> free_lists;
  struct Block {
    size_t bytes;
    int device;
  };
  std::unordered_map<void*, Block> live;
  cuda::DeviceMemoryStats stats;

  static uint64_t key(int device, size_t bytes) { return (uint64_t(device) << 56) ^ bytes; }

  // Gives every cached free block back to the driver (only when cudaMalloc failed).
  void release_cached_locked() {
    int current = 0;
    BRAID_CHECK_CUDA(cudaGetDevice(&current));
    for (auto& [k, list] : free_lists) {
      const int dev = int(k >> 56);
      const size_t bytes = size_t(k & ((uint64_t(1) << 56) - 1));
      BRAID_CHECK_CUDA(cudaSetDevice(dev));
      for (void* p : list) {
        BRAID_CHECK_CUDA(cudaFree(p));
        stats.reserved_bytes -= bytes;
      }
      list.clear();
    }
    BRAID_CHECK_CUDA(cudaSetDevice(current));
  }

  void* alloc(size_t bytes) {
    const size_t cls = size_class(bytes);
    int device = 0;
    BRAID_CHECK_CUDA(cudaGetDevice(&device));
    std::lock_guard<std::mutex> lock(mu);
    auto& list = free_lists[key(device, cls)];
    void* p = nullptr;
    if (!list.empty()) {
      p = list.back();
      list.pop_back();
      ++stats.cache_hits;
    } else {
      cudaError_t e = cudaMalloc(&p, cls);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // clear the error before retrying
        release_cached_locked();
        e = cudaMalloc(&p, cls);
      }
      if (e != cudaSuccess)
        throw_error("CUDA", long(e), "cudaMalloc", __FILE__, __LINE__,
                    std::string(cudaGetErrorString(e)) + " allocating " +
                        std::to_string(cls) + " bytes (" + std::to_string(stats.reserved_bytes) +
                        " bytes already reserved by Braid)");
      stats.reserved_bytes += cls;
      ++stats.driver_allocs;
    }
    live[p] = Block{cls, device};
    stats.in_use_bytes += cls;
    return p;
  }

  void free(void* p) {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(p);
    BRAID_CHECK(it != live.end(), "device_free of a pointer the allocator did not hand out");
    free_lists[key(it->second.device, it->second.bytes)].push_back(p);
    stats.in_use_bytes -= it->second.bytes;
    live.erase(it);
  }
};

// Never destroyed: blocks stay reserved until the process exits (the driver reclaims them
// then); freeing at static-destruction time would race the CUDA runtime's own teardown.
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

void* device_alloc(size_t bytes) { return allocator().alloc(bytes); }

void device_free(void* p) { allocator().free(p); }

void device_memset_zero(void* p, size_t bytes) {
  if (bytes == 0) return;
  // Legacy default stream: ordered before later work on the context's blocking streams.
  BRAID_CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, 0));
}

void device_copy(void* dst, bool dst_on_device, const void* src, bool src_on_device,
                 size_t bytes) {
  if (bytes == 0) return;
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice
                                                             : cudaMemcpyHostToDevice)
                                            : (src_on_device ? cudaMemcpyDeviceToHost
                                                             : cudaMemcpyHostToHost);
  // cudaMemcpy on the legacy default stream waits for work already enqueued on blocking
  // streams, and returns to the host when a device-to-host copy has landed: a host read
  // after copy_from sees the data.
  BRAID_CHECK_CUDA(cudaMemcpy(dst, src, bytes, kind));
}

bool cuda_available() {
  // No driver or no device: an error code, never an exception.
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count > 0;
}

namespace cuda {
DeviceMemoryStats device_memory_stats() {
  auto& a = allocator();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.stats;
}
}  // namespace cuda

}  // namespace braid
