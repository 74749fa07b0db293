// The GPU side of the optimizer: fp32 AdamW moments in device memory, one launch of
// cuda::adamw_update over every parameter segment, and the owned-gradient sum of squares
// for the global norm. Under ZeRO-1 everything lives in shard coordinates: this replica's
// 1/DP of every bucket (reduced gradients from the reducer, a shard copy of the master
// weights, moments of shard size); after the update the shards are all-gathered back into
// the full parameters. Built only with the CUDA backend.
#ifdef BRAID_HAVE_CUDA
#include <algorithm>
#include <cstring>

#include "framework/optimizer_device.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/device_memory.h"

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

void d2d(float* dst, const float* src, int64_t n) { device_copy(dst, true, src, true, size_t(n) * 4); }

struct CudaOptimizerState : Optimizer::DeviceState {
  ParamStore& store;
  GradReducer& reducer;
  bool zero;
  int64_t total;  // elements in the coordinates the kernels index (flat or shard)
  Tensor m, v, segs, norm_segs, sumsq, scratch, shard_values;
  int nsegs = 0, nnorm = 0;
  CudaOptimizerState(ParamStore& s, GradReducer& r, const std::vector<cuda::ParamSegment>& all,
                     const std::vector<cuda::ParamSegment>& owned)
      : store(s), reducer(r), zero(r.zero()) {
    total = zero ? std::max<int64_t>(r.shard_total(), 1) : s.flat_size();
    m = Tensor({total}, DType::F32, Device::CUDA);
    v = Tensor({total}, DType::F32, Device::CUDA);
    if (zero) shard_values = Tensor({total}, DType::F32, Device::CUDA);
    segs = upload_segments(all);
    norm_segs = upload_segments(owned);
    nsegs = int(all.size());
    nnorm = int(owned.size());
    sumsq = Tensor({2}, DType::F32, Device::CUDA);  // one double
    size_t sb = cuda::sum_squares_scratch_bytes(total);
    scratch = Tensor::empty({int64_t((sb + 3) / 4 + 1)}, DType::F32, Device::CUDA);
  }
  float* grads() { return zero ? reducer.shard_grads() : store.flat_grads().f32(); }
  double sum_squares_owned() override {
    if (nnorm == 0) return 0.0;
    auto* out = static_cast<double*>(sumsq.raw());
    cuda::sum_squares(out, scratch.raw(), grads(), norm_segs.data<cuda::ParamSegment>(), nnorm, total, nullptr);
    double h = 0;
    BRAID_CHECK_CUDA(cudaMemcpy(&h, out, sizeof(double), cudaMemcpyDeviceToHost));
    return h;
  }
  void scale_grads(float sc) override { cuda::scale_inplace(grads(), sc, total, nullptr); }
  void step(float lr, const AdamWConfig& c, int64_t t) override {
    cuda::AdamWConfig cfg{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t};
    float* values = store.flat_values().f32();
    if (!zero) {
      cuda::adamw_update(values, nullptr, grads(), m.f32(), v.f32(), segs.data<cuda::ParamSegment>(), nsegs,
                         total, cfg, nullptr, nullptr);
      return;
    }
    const auto& buckets = reducer.buckets();
    for (size_t b = 0; b < buckets.size(); ++b)
      d2d(shard_values.f32() + reducer.shard_offset(int(b)), values + reducer.shard_begin(int(b)),
          reducer.shard_size(int(b)));
    cuda::adamw_update(shard_values.f32(), nullptr, grads(), m.f32(), v.f32(), segs.data<cuda::ParamSegment>(),
                       nsegs, total, cfg, nullptr, nullptr);
    for (size_t b = 0; b < buckets.size(); ++b)  // every replica gets every updated shard
      reducer.dp().all_gather(shard_values.f32() + reducer.shard_offset(int(b)), values + buckets[b].offset,
                              reducer.shard_size(int(b)), DType::F32);
  }
  void get_moments(std::vector<float>& mh, std::vector<float>& vh) override {
    const int64_t n = store.flat_size();
    mh.assign(size_t(n), 0.f);
    vh.assign(size_t(n), 0.f);
    if (!zero) {
      BRAID_CHECK_CUDA(cudaMemcpy(mh.data(), m.raw(), size_t(n) * 4, cudaMemcpyDeviceToHost));
      BRAID_CHECK_CUDA(cudaMemcpy(vh.data(), v.raw(), size_t(n) * 4, cudaMemcpyDeviceToHost));
      return;
    }
    std::vector<float> ms(static_cast<size_t>(total)), vs(static_cast<size_t>(total));
    BRAID_CHECK_CUDA(cudaMemcpy(ms.data(), m.raw(), ms.size() * 4, cudaMemcpyDeviceToHost));
    BRAID_CHECK_CUDA(cudaMemcpy(vs.data(), v.raw(), vs.size() * 4, cudaMemcpyDeviceToHost));
    const auto& buckets = reducer.buckets();
    for (size_t b = 0; b < buckets.size(); ++b) {
      int64_t s = reducer.shard_size(int(b)), off = reducer.shard_offset(int(b));
      reducer.dp().all_gather(ms.data() + off, mh.data() + buckets[b].offset, s, DType::F32);
      reducer.dp().all_gather(vs.data() + off, vh.data() + buckets[b].offset, s, DType::F32);
    }
  }
  void set_moments(const std::vector<float>& mh, const std::vector<float>& vh) override {
    if (!zero) {
      BRAID_CHECK_CUDA(cudaMemcpy(m.raw(), mh.data(), mh.size() * 4, cudaMemcpyHostToDevice));
      BRAID_CHECK_CUDA(cudaMemcpy(v.raw(), vh.data(), vh.size() * 4, cudaMemcpyHostToDevice));
      return;
    }
    std::vector<float> ms(static_cast<size_t>(total)), vs(static_cast<size_t>(total));
    for (size_t b = 0; b < reducer.buckets().size(); ++b) {
      int64_t s = reducer.shard_size(int(b)), off = reducer.shard_offset(int(b)), begin = reducer.shard_begin(int(b));
      std::copy(mh.begin() + begin, mh.begin() + begin + s, ms.begin() + off);
      std::copy(vh.begin() + begin, vh.begin() + begin + s, vs.begin() + off);
    }
    BRAID_CHECK_CUDA(cudaMemcpy(m.raw(), ms.data(), ms.size() * 4, cudaMemcpyHostToDevice));
    BRAID_CHECK_CUDA(cudaMemcpy(v.raw(), vs.data(), vs.size() * 4, cudaMemcpyHostToDevice));
  }
};
}  // namespace

std::unique_ptr<Optimizer::DeviceState> Optimizer::DeviceState::make(Optimizer& o) {
  std::vector<cuda::ParamSegment> all, owned;
  auto add = [&](int64_t lo, int64_t len, const Segment& s) {
    cuda::ParamSegment seg{lo, len, s.weight_decay ? 1 : 0, 0};
    all.push_back(seg);
    if (s.norm_owned) owned.push_back(seg);
  };
  if (!o.reducer_.zero()) {
    for (const auto& s : o.segments_) add(s.lo, s.hi - s.lo, s);
  } else {
    // Shard coordinates: bucket b's owned flat range [begin, begin + size) maps to
    // [shard_offset(b), + size) in the shard buffers.
    for (size_t b = 0; b < o.reducer_.buckets().size(); ++b) {
      const int64_t begin = o.reducer_.shard_begin(int(b)), size = o.reducer_.shard_size(int(b));
      const int64_t off = o.reducer_.shard_offset(int(b));
      for (const Segment& s : o.segments_) {  // sorted, disjoint; gaps are bucket padding
        const int64_t a = std::max(begin, s.lo), e = std::min(begin + size, s.hi);
        if (a < e) add(off + (a - begin), e - a, s);
      }
    }
  }
  return std::make_unique<CudaOptimizerState>(o.store_, o.reducer_, all, owned);
}

}  // namespace braid
#endif  // BRAID_HAVE_CUDA
