// The GPU half of the optimizer behind a small interface, so that optimizer.cpp compiles
// without CUDA headers; implemented in optimizer_cuda.cpp when the CUDA backend is built.
#pragma once
#include <memory>
#include <vector>

#include "framework/backend.h"
#include "framework/optimizer.h"

namespace braid {

struct Optimizer::DeviceState {
  static std::unique_ptr<DeviceState> make(Optimizer& o);
  virtual ~DeviceState() = default;
  virtual double sum_squares_owned() = 0;  // this rank's norm-owned gradient elements
  // The clipping factor for the next step(): AdamW multiplies each gradient by it as it
  // reads it (no pass of its own over the gradients); step() uses it once, then 1 again.
  virtual void set_grad_scale(float s) = 0;
  virtual void step(float lr, const AdamWConfig& cfg, int64_t t) = 0;
  // The bf16 copy of the flat parameters that step() also writes (null: none).
  void* bf16_copy = nullptr;
  virtual void get_moments(std::vector<float>& m, std::vector<float>& v) = 0;
  virtual void set_moments(const std::vector<float>& m, const std::vector<float>& v) = 0;
  virtual ParamFence* set_overlap(const std::vector<std::vector<int>>& /*groups*/, int /*sms*/, double /*gemm_limit*/) {
    return nullptr;
  }
};

}  // namespace braid
