// The tensor: a typed, shaped window onto a buffer on one device. A tensor either owns
// its buffer (shared ownership, so views keep it alive) or is a view into another
// tensor's buffer at an element offset. Storage is always contiguous row-major; views are
// contiguous sub-ranges (a slice along dim 0, or a flat range), which is all the model
// and the communicators need.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/check.h"

namespace braid {

enum class DType { F32, BF16, I32, U16 };
enum class Device { CPU, CUDA };

size_t dtype_bytes(DType t);
const char* dtype_name(DType t);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

// Device buffer: allocation and release for each device. The CUDA backend registers its
// allocator here when built; on a CPU-only build asking for CUDA memory is an error.
struct Buffer {
  void* data = nullptr;
  size_t size_bytes = 0;
  Device device = Device::CPU;
  Buffer(size_t bytes, Device dev, bool zero = true);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

class Tensor {
 public:
  struct Uninitialized {};
  Tensor(Shape shape, DType dtype, Device device, Uninitialized);
  Tensor() = default;
  // Owning, zero-initialised tensor.
  Tensor(Shape shape, DType dtype = DType::F32, Device device = Device::CPU);
  // Owning tensor whose contents are unspecified: for outputs a kernel fully overwrites.
  static Tensor empty(Shape shape, DType dtype = DType::F32, Device device = Device::CPU);

  static Tensor zeros(Shape shape, DType dtype = DType::F32, Device device = Device::CPU) {
    return Tensor(std::move(shape), dtype, device);
  }

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t size_bytes() const { return numel() * dtype_bytes(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return static_cast<bool>(buffer_); }
  bool is_view() const { return view_; }

  void* raw() const {
    return static_cast<char*>(buffer_->data) + offset_ * dtype_bytes(dtype_);
  }
  template <class T>
  T* data() const { return static_cast<T*>(raw()); }
  float* f32() const {
    BRAID_CHECK(dtype_ == DType::F32, "tensor is " << dtype_name(dtype_) << ", expected f32");
    return data<float>();
  }

  // A view of elements [offset, offset + numel(shape)) with a new shape.
  Tensor view(int64_t offset, Shape shape) const;
  // A view of rows [begin, end) along dim 0.
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor reshape(Shape shape) const { return view(0, std::move(shape)); }

  void zero_();
  void copy_from(const Tensor& src);  // same numel and dtype; host-host on CPU builds
  Tensor clone() const;

 private:
  std::shared_ptr<Buffer> buffer_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  bool view_ = false;
};

// Host memory held by live CPU tensors: bytes requested by the buffers alive now and the
// most alive at once since the last reset (freed blocks kept in the host cache for reuse
// are not counted). The memory plan (framework/plan.h) is checked against these.
struct HostMemoryStats {
  int64_t live_bytes = 0, peak_bytes = 0;
};
HostMemoryStats host_memory_stats();
void reset_host_memory_peak();  // peak := live

// bf16 <-> f32 (round to nearest even), used by the CPU path and tests.
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);

}  // namespace braid
