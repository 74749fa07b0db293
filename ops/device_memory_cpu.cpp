// CPU-only build: there is no device memory. Asking for it is a usage error with a clear
// message rather than a crash.
#include "ops/check.h"
#include "ops/device_memory.h"

namespace braid {
void* device_alloc(size_t) {
  BRAID_CHECK(false, "this build of Braid has no CUDA backend (configure with nvcc present)");
  return nullptr;
}
void device_free(void*) {}
void device_memset_zero(void*, size_t) { device_alloc(0); }
void device_copy(void*, bool, const void*, bool, size_t) { device_alloc(0); }
bool cuda_available() { return false; }
}  // namespace braid

namespace braid {
bool is_device_pointer(const void*) { return false; }
}  // namespace braid

namespace braid {
int gpu_count() { return 0; }
}  // namespace braid
