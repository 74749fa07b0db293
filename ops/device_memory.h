// Device memory entry points used by the tensor. On CPU-only builds these report a clear
// error; the CUDA backend (ops/cuda/) provides the real ones.
#pragma once
#include <cstddef>

namespace braid {
void* device_alloc(size_t bytes);
void device_free(void* p);
void device_memset_zero(void* p, size_t bytes);
void device_copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);
bool cuda_available();
}  // namespace braid

namespace braid {
// True when p points to device memory (communicators stage such buffers through the host).
bool is_device_pointer(const void* p);
}  // namespace braid

namespace braid {
// GPUs visible to this process (0 without a driver or on CPU-only builds).
int gpu_count();
}  // namespace braid
