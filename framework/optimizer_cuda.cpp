// The GPU side of the optimizer: fp32 AdamW moments in device memory, one launch of
// cuda::adamw_update over every parameter segment, and the owned-gradient sum of squares
// for the global norm. Built only with the CUDA backend.
#ifdef BRAID_HAVE_CUDA
#include <cstring>

#include "framework/optimizer_device.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"

namespace braid {

namespace {
Tensor upload_segments(const std::vector<cuda::ParamSegment>& segs) {
  int64_t bytes = int64_t(std::max<size_t>(segs.size(), 1) * sizeof(cuda::ParamSegment));
  Tensor host = Tensor::empty({(bytes + 3) / 4}, DType::I32);
  std::memcpy(host.raw(), segs.data(), segs.size() * sizeof(cuda::ParamSegment));
  Tensor dev = Tensor::empty(host.shape(), DType::I32, Device::CUDA);
  dev.copy_from(host);
  return dev;
}

struct CudaOptimizerState : Optimizer::DeviceState {
  ParamStore& store;
  Tensor m, v, segs, norm_segs, sumsq, scratch;
  int nsegs = 0, nnorm = 0;
  CudaOptimizerState(ParamStore& s, const std::vector<cuda::ParamSegment>& all,
                     const std::vector<cuda::ParamSegment>& owned)
      : store(s) {
    m = Tensor({s.flat_size()}, DType::F32, Device::CUDA);
    v = Tensor({s.flat_size()}, DType::F32, Device::CUDA);
    segs = upload_segments(all);
    norm_segs = upload_segments(owned);
    nsegs = int(all.size());
    nnorm = int(owned.size());
    sumsq = Tensor({2}, DType::F32, Device::CUDA);  // one double
    size_t sb = cuda::sum_squares_scratch_bytes(s.flat_size());
    scratch = Tensor::empty({int64_t((sb + 3) / 4 + 1)}, DType::F32, Device::CUDA);
  }
  double sum_squares_owned() override {
    if (nnorm == 0) return 0.0;
    auto* out = static_cast<double*>(sumsq.raw());
    cuda::sum_squares(out, scratch.raw(), store.flat_grads().f32(), norm_segs.data<cuda::ParamSegment>(), nnorm,
                      store.flat_size(), nullptr);
    double h = 0;
    BRAID_CHECK_CUDA(cudaMemcpy(&h, out, sizeof(double), cudaMemcpyDeviceToHost));
    return h;
  }
  void scale_grads(float sc) override {
    cuda::scale_inplace(store.flat_grads().f32(), sc, store.flat_size(), nullptr);
  }
  void step(float lr, const AdamWConfig& c, int64_t t) override {
    cuda::AdamWConfig cfg{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t};
    cuda::adamw_update(store.flat_values().f32(), nullptr, store.flat_grads().f32(), m.f32(), v.f32(),
                       segs.data<cuda::ParamSegment>(), nsegs, store.flat_size(), cfg, nullptr, nullptr);
  }
  void get_moments(std::vector<float>& mh, std::vector<float>& vh) override {
    mh.resize(size_t(store.flat_size()));
    vh.resize(size_t(store.flat_size()));
    BRAID_CHECK_CUDA(cudaMemcpy(mh.data(), m.raw(), mh.size() * 4, cudaMemcpyDeviceToHost));
    BRAID_CHECK_CUDA(cudaMemcpy(vh.data(), v.raw(), vh.size() * 4, cudaMemcpyDeviceToHost));
  }
  void set_moments(const std::vector<float>& mh, const std::vector<float>& vh) override {
    BRAID_CHECK_CUDA(cudaMemcpy(m.raw(), mh.data(), mh.size() * 4, cudaMemcpyHostToDevice));
    BRAID_CHECK_CUDA(cudaMemcpy(v.raw(), vh.data(), vh.size() * 4, cudaMemcpyHostToDevice));
  }
};
}  // namespace

std::unique_ptr<Optimizer::DeviceState> Optimizer::DeviceState::make(Optimizer& o) {
  std::vector<cuda::ParamSegment> all, owned;
  for (const auto& s : o.segments_) {
    cuda::ParamSegment seg{s.lo, s.hi - s.lo, s.weight_decay ? 1 : 0, 0};
    all.push_back(seg);
    if (s.norm_owned) owned.push_back(seg);
  }
  return std::make_unique<CudaOptimizerState>(o.store_, all, owned);
}

}  // namespace braid
#endif  // BRAID_HAVE_CUDA
