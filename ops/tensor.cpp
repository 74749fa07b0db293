#include "ops/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "ops/device_memory.h"

namespace braid {

size_t dtype_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U16: return "u16";
  }
  return "?";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

namespace {
// Host buffers are recycled by exact size: training allocates the same shapes every step,
// and returning large blocks to the OS (munmap) makes every step pay page faults again.
class HostCache {
 public:
  void* get(size_t bytes) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    return p;
  }
  void put(void* p, size_t bytes) {
    std::lock_guard<std::mutex> g(mu_);
    free_.emplace(bytes, p);
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
};
HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: buffers may outlive statics
  return *c;
}
size_t host_rounded(size_t bytes) { return bytes == 0 ? 64 : (bytes + 63) / 64 * 64; }

std::atomic<int64_t> g_host_live_bytes{0}, g_host_peak_bytes{0};
void count_host_alloc(size_t bytes) {
  int64_t live = g_host_live_bytes.fetch_add(int64_t(bytes)) + int64_t(bytes);
  int64_t peak = g_host_peak_bytes.load();
  while (live > peak && !g_host_peak_bytes.compare_exchange_weak(peak, live)) {
  }
}
}  // namespace

HostMemoryStats host_memory_stats() { return {g_host_live_bytes.load(), g_host_peak_bytes.load()}; }
void reset_host_memory_peak() { g_host_peak_bytes.store(g_host_live_bytes.load()); }

Buffer::Buffer(size_t bytes, Device dev, bool zero) : size_bytes(bytes), device(dev) {
  if (dev == Device::CPU) {
    size_t rounded = host_rounded(bytes);  // 64-byte alignment for vector loads
    data = host_cache().get(rounded);
    if (!data) data = std::aligned_alloc(64, rounded);
    BRAID_CHECK(data != nullptr, "host allocation of " << bytes << " bytes failed");
    if (zero) std::memset(data, 0, rounded);
    count_host_alloc(bytes);
  } else {
    data = device_alloc(bytes);
    if (zero) device_memset_zero(data, bytes);
  }
}

Buffer::~Buffer() {
  if (device == Device::CPU) {
    host_cache().put(data, host_rounded(size_bytes));
    g_host_live_bytes.fetch_sub(int64_t(size_bytes));
  } else {
    device_free(data);
  }
}

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : buffer_(std::make_shared<Buffer>(shape_numel(shape) * dtype_bytes(dtype), device)),
      shape_(std::move(shape)),
      dtype_(dtype),
      device_(device) {}

Tensor::Tensor(Shape shape, DType dtype, Device device, Uninitialized)
    : buffer_(std::make_shared<Buffer>(shape_numel(shape) * dtype_bytes(dtype), device, false)),
      shape_(std::move(shape)),
      dtype_(dtype),
      device_(device) {}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  return Tensor(std::move(shape), dtype, device, Uninitialized{});
}

Tensor Tensor::view(int64_t offset, Shape shape) const {
  BRAID_CHECK(defined(), "view of an undefined tensor");
  BRAID_CHECK(offset >= 0 && offset + shape_numel(shape) <= numel(),
              "view [" << offset << ", +" << shape_numel(shape) << ") out of range for "
                       << shape_str(shape_));
  Tensor t = *this;
  t.offset_ = offset_ + offset;
  t.shape_ = std::move(shape);
  t.view_ = true;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  BRAID_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
              "slice0 [" << begin << "," << end << ") of " << shape_str(shape_));
  int64_t row = numel() / (shape_[0] == 0 ? 1 : shape_[0]);
  Shape s = shape_;
  s[0] = end - begin;
  return view(begin * row, s);
}

void Tensor::zero_() {
  if (device_ == Device::CPU) std::memset(raw(), 0, size_bytes());
  else device_memset_zero(raw(), size_bytes());
}

void Tensor::copy_from(const Tensor& src) {
  BRAID_CHECK(src.numel() == numel() && src.dtype() == dtype(),
              "copy_from: " << shape_str(src.shape()) << " " << dtype_name(src.dtype())
                            << " into " << shape_str(shape_) << " " << dtype_name(dtype_));
  if (device_ == Device::CPU && src.device() == Device::CPU) {
    std::memcpy(raw(), src.raw(), size_bytes());
  } else {
    device_copy(raw(), device_ == Device::CUDA, src.raw(), src.device() == Device::CUDA,
                size_bytes());
  }
}

Tensor Tensor::clone() const {
  Tensor t(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return uint16_t((u >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + rounding) >> 16);
}

float bf16_to_f32(uint16_t x) {
  uint32_t u = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace braid
