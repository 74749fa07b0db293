// The GPU side of the optimizer: fp32 AdamW moments in device memory, one launch of
// cuda::adamw_update over every parameter segment, and the owned-gradient sum of squares
// for the global norm. Under ZeRO-1 the moments hold this replica's 1/DP of every bucket
// (bucket b's shard at shard_offset(b)); the reduced gradients and the master weights of
// that shard are used where they lie in the flat buffers (no copies), so the kernels run
// once per bucket with pointers shifted to the shard; after the update the shards are
// all-gathered in place into the full parameters. Built only with the CUDA backend.
#ifdef BRAID_HAVE_CUDA
#include <algorithm>
#include <cmath>
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

// A bucket's shard under ZeRO-1: its segments are entries [first, first + count) of the
// segment tables, in coordinates relative to the shard's first element.
struct ShardRange {
  int first = 0, count = 0, norm_first = 0, norm_count = 0;
  int64_t begin = 0, size = 0, state_offset = 0;
};

struct CudaOptimizerState : Optimizer::DeviceState, ParamFence {
  ParamStore& store;
  GradReducer& reducer;
  bool zero;
  int64_t total;  // moments' elements (flat size, or the ZeRO-1 shard total)
  Tensor m, v, segs, norm_segs, sumsq, scratch;
  Tensor scale_dev = Tensor({1}, DType::F32, Device::CUDA);
  float grad_scale = 1.f;
  int nsegs = 0, nnorm = 0;
  std::vector<ShardRange> shards;  // ZeRO-1 only
  CudaOptimizerState(ParamStore& s, GradReducer& r, const std::vector<cuda::ParamSegment>& all,
                     const std::vector<cuda::ParamSegment>& owned, std::vector<ShardRange> shard_ranges)
      : store(s), reducer(r), zero(r.zero()), shards(std::move(shard_ranges)) {
    total = zero ? std::max<int64_t>(r.shard_total(), 1) : s.flat_size();
    m = Tensor({total}, DType::F32, Device::CUDA);
    v = Tensor({total}, DType::F32, Device::CUDA);
    segs = upload_segments(all);
    norm_segs = upload_segments(owned);
    nsegs = int(all.size());
    nnorm = int(owned.size());
    // One fp64 sum per bucket shard under ZeRO-1 (added on the host in bucket order).
    sumsq = Tensor({2 * std::max<int64_t>(int64_t(shards.size()), 1)}, DType::F32, Device::CUDA);
    int64_t largest = zero ? 1 : s.flat_size();
    for (const ShardRange& sh : shards) largest = std::max(largest, sh.size);
    size_t sb = cuda::sum_squares_scratch_bytes(largest);
    scratch = Tensor::empty({int64_t((sb + 3) / 4 + 1)}, DType::F32, Device::CUDA);
  }
  const cuda::ParamSegment* seg_table(int first) { return segs.data<cuda::ParamSegment>() + first; }
  const cuda::ParamSegment* norm_table(int first) { return norm_segs.data<cuda::ParamSegment>() + first; }
  double sum_squares_owned() override {
    auto* out = static_cast<double*>(sumsq.raw());
    if (!zero) {
      if (nnorm == 0) return 0.0;
      cuda::sum_squares(out, scratch.raw(), store.flat_grads().f32(), norm_table(0), nnorm, total, nullptr);
      double h = 0;
      BRAID_CHECK_CUDA(cudaMemcpy(&h, out, sizeof(double), cudaMemcpyDeviceToHost));
      return h;
    }
    std::vector<double> h(shards.size(), 0.0);
    for (size_t b = 0; b < shards.size(); ++b) {
      const ShardRange& sh = shards[b];
      if (sh.norm_count == 0) {
        BRAID_CHECK_CUDA(cudaMemset(out + b, 0, sizeof(double)));
        continue;
      }
      cuda::sum_squares(out + b, scratch.raw(), reducer.shard_grads(int(b)), norm_table(sh.norm_first), sh.norm_count,
                        sh.size, nullptr);
    }
    if (!h.empty()) BRAID_CHECK_CUDA(cudaMemcpy(h.data(), out, h.size() * sizeof(double), cudaMemcpyDeviceToHost));
    double sum = 0;
    for (double x : h) sum += x;
    return sum;
  }
  void set_grad_scale(float sc) override { grad_scale = sc; }

  // ---- the overlapped update (set_overlap) ----
  struct Group {
    int64_t lo = 0, hi = 0;  // flat range holding the group's segments
    Tensor table;            // its segments, relative to lo
    int count = 0;
    cudaEvent_t done = nullptr;
  };
  std::vector<Group> groups;
  std::vector<int> group_of;  // parameter -> group
  size_t waited = 0;          // groups [0, waited) need no wait by the compute stream
  size_t release = 0;         // limiting ends once the forward has waited for this many groups
  bool limit = false;         // ParamFence::limiting
  int overlap_sms = 0, gemm_reserve = 0;  // 0 SMs: every SM (the plain kernel)
  bool low_priority = false;
  cudaStream_t side = nullptr;
  cudaEvent_t grads_ready = nullptr;
  ~CudaOptimizerState() override {
    if (side) cudaStreamSynchronize(side);  // the moments and tables are freed next
    for (Group& g : groups)
      if (g.done) cudaEventDestroy(g.done);
    if (grads_ready) cudaEventDestroy(grads_ready);
    if (side) cudaStreamDestroy(side);
  }
  ParamFence* set_overlap(const std::vector<std::vector<int>>& order, int sms, double gemm_limit) override {
    BRAID_CHECK(groups.empty(), "set_overlap called twice");
    // sms < 0: every SM, the plain kernel's short blocks from a stream below the compute
    // stream's priority (the GEMMs keep every SM; the block scheduler starts the forward's
    // blocks first and AdamW's where an SM is free).
    low_priority = sms < 0;
    overlap_sms = std::max(sms, 0);
    gemm_reserve = overlap_sms;
    group_of.assign(size_t(store.size()), -1);
    std::vector<std::vector<int>> lists = order;
    std::vector<int> rest;  // parameters no group names: a last group
    for (size_t g = 0; g < lists.size(); ++g)
      for (int i : lists[g]) {
        BRAID_CHECK(i >= 0 && i < store.size() && group_of[size_t(i)] < 0, "set_overlap: parameter " << i);
        group_of[size_t(i)] = int(g);
      }
    for (int i = 0; i < store.size(); ++i)
      if (group_of[size_t(i)] < 0) rest.push_back(i), group_of[size_t(i)] = int(lists.size());
    if (!rest.empty()) lists.push_back(rest);
    for (const std::vector<int>& list : lists) {
      Group g;
      std::vector<cuda::ParamSegment> segs;
      g.lo = store.flat_size(), g.hi = 0;
      for (int i : list) {
        const Param& p = store[i];
        g.lo = std::min(g.lo, p.flat_offset);
        g.hi = std::max(g.hi, p.flat_offset + p.value.numel());
      }
      for (int i : list) {
        const Param& p = store[i];
        if (p.value.numel() > 0) segs.push_back({p.flat_offset - g.lo, p.value.numel(), p.spec.weight_decay ? 1 : 0, 0});
      }
      std::sort(segs.begin(), segs.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
      g.count = int(segs.size());
      g.table = upload_segments(segs);
      BRAID_CHECK_CUDA(cudaEventCreateWithFlags(&g.done, cudaEventDisableTiming));
      groups.push_back(std::move(g));
    }
    // A blocking stream: the legacy-stream copies of checkpoints and moments, and the next
    // step's gradient norm, wait for its updates without being told. With K SMs at the
    // compute stream's priority; else at the lowest.
    int least = 0, greatest = 0;
    BRAID_CHECK_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    BRAID_CHECK_CUDA(cudaStreamCreateWithPriority(&side, cudaStreamDefault, low_priority ? least : std::max(greatest, least - 1)));
    BRAID_CHECK_CUDA(cudaEventCreateWithFlags(&grads_ready, cudaEventDisableTiming));
    waited = groups.size();
    release = size_t(std::ceil(gemm_limit * double(groups.size())));
    if (gemm_reserve == 0) release = 0;
    return this;
  }
  // ParamFence. The side stream updates the groups in order, so group g's event covers
  // every group before it.
  void wait(int param, void* stream) override {
    const size_t g = size_t(group_of[size_t(param)]);
    // Keyed to the forward's position, not to what is still pending: a step with no update
    // in flight (the first, or the first after a resume) chooses the same GEMMs.
    if (g + 1 >= release) limit = false;
    if (g < waited) return;
    BRAID_CHECK_CUDA(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), groups[g].done, 0));
    waited = g + 1;
  }
  void wait_all(void* stream) override {
    limit = false;
    if (waited >= groups.size()) return;
    BRAID_CHECK_CUDA(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), groups.back().done, 0));
    waited = groups.size();
  }
  void begin_step() override { limit = release > 0; }
  bool limiting() const override { return limit; }
  int reserved_sms() const override { return gemm_reserve; }
  // The device copy of grad_scale for adamw_update (null when it is 1), uploaded in stream
  // order with the kernels (all on the legacy stream).
  const float* scale_pointer() {
    if (grad_scale == 1.f) return nullptr;
    BRAID_CHECK_CUDA(cudaMemcpy(scale_dev.raw(), &grad_scale, sizeof(float), cudaMemcpyHostToDevice));
    return scale_dev.f32();
  }
  void step(float lr, const AdamWConfig& c, int64_t t) override {
    cuda::AdamWConfig cfg{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t};
    float* values = store.flat_values().f32();
    const float* scale = scale_pointer();
    grad_scale = 1.f;
    if (!zero && !groups.empty()) {
      // After everything the legacy stream has seen (the backward, through the gradient
      // norm's copy to the host): group by group on the side stream.
      BRAID_CHECK_CUDA(cudaEventRecord(grads_ready, nullptr));
      BRAID_CHECK_CUDA(cudaStreamWaitEvent(side, grads_ready, 0));
      auto* copy = static_cast<cuda::bf16*>(bf16_copy);
      float* grads = store.flat_grads().f32();
      for (Group& g : groups) {
        // The first group (the embedding tables, a third of GPT-2 small) on every SM: the
        // forward waits for it before its first op, so nothing runs beside it.
        cuda::adamw_update(values + g.lo, copy ? copy + g.lo : nullptr, grads + g.lo, m.f32() + g.lo,
                           v.f32() + g.lo, g.table.data<cuda::ParamSegment>(), g.count, g.hi - g.lo, cfg, scale,
                           side, &g == &groups.front() ? 0 : overlap_sms);
        BRAID_CHECK_CUDA(cudaEventRecord(g.done, side));
      }
      waited = 0;
      return;
    }
    if (!zero) {
      cuda::adamw_update(values, static_cast<cuda::bf16*>(bf16_copy), store.flat_grads().f32(), m.f32(), v.f32(),
                         seg_table(0), nsegs, total, cfg, scale, nullptr);
      return;
    }
    // Every replica gets every updated shard, in place: bucket b's all-gather (NCCL, on the
    // DP group's stream) runs while AdamW (legacy stream) updates bucket b + 1's shard, a
    // disjoint range; the compute stream waits for all of them before the next forward.
    const auto& buckets = reducer.buckets();
    std::vector<std::unique_ptr<CommRequest>> gathers;
    gathers.reserve(buckets.size());
    for (size_t b = 0; b < shards.size(); ++b) {
      const ShardRange& sh = shards[b];
      cuda::adamw_update(values + sh.begin, nullptr, reducer.shard_grads(int(b)), m.f32() + sh.state_offset,
                         v.f32() + sh.state_offset, seg_table(sh.first), sh.count, sh.size, cfg, scale, nullptr);
      gathers.push_back(reducer.dp().all_gather_async(values + reducer.shard_begin(int(b)),
                                                      values + buckets[b].offset, reducer.shard_size(int(b)),
                                                      DType::F32));
    }
    for (auto& g : gathers) g->wait();
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
  std::vector<ShardRange> shards;
  auto add = [&](int64_t lo, int64_t len, const Segment& s) {
    cuda::ParamSegment seg{lo, len, s.weight_decay ? 1 : 0, 0};
    all.push_back(seg);
    if (s.norm_owned) owned.push_back(seg);
  };
  if (!o.reducer_.zero()) {
    for (const auto& s : o.segments_) add(s.lo, s.hi - s.lo, s);
  } else {
    // Bucket b's owned flat range [begin, begin + size): its segments relative to begin.
    for (size_t b = 0; b < o.reducer_.buckets().size(); ++b) {
      ShardRange sh;
      sh.begin = o.reducer_.shard_begin(int(b));
      sh.size = o.reducer_.shard_size(int(b));
      sh.state_offset = o.reducer_.shard_offset(int(b));
      sh.first = int(all.size());
      sh.norm_first = int(owned.size());
      for (const Segment& s : o.segments_) {  // sorted, disjoint; gaps are bucket padding
        const int64_t a = std::max(sh.begin, s.lo), e = std::min(sh.begin + sh.size, s.hi);
        if (a < e) add(a - sh.begin, e - a, s);
      }
      sh.count = int(all.size()) - sh.first;
      sh.norm_count = int(owned.size()) - sh.norm_first;
      shards.push_back(sh);
    }
  }
  return std::make_unique<CudaOptimizerState>(o.store_, o.reducer_, all, owned, std::move(shards));
}

}  // namespace braid
#endif  // BRAID_HAVE_CUDA
