// AdamW over the parameter store, plain or ZeRO-1 (optimizer state and update sharded over
// the data-parallel group: each replica updates its 1/DP of every bucket and the updated
// parameters are all-gathered). Also the global gradient norm and clipping, computed once
// per distinct element: TP-replicated parameters count on tp rank 0 only, the second copy
// of the tied embedding not at all.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "framework/params.h"
#include "parallel/grad_reducer.h"
#include "parallel/rank_grid.h"

namespace braid {

class ParamFence;  // framework/backend.h

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f, grad_clip = 1.0f;
};

class Optimizer {
 public:
  Optimizer(ParamStore& store, GradReducer& reducer, ProcessGroups& groups);
  ~Optimizer();

  // Global L2 norm of the (reduced) gradients; scales them by max_norm/(norm+1e-6) when
  // that is < 1 (torch.nn.utils.clip_grad_norm_). max_norm <= 0 disables clipping.
  double clip_grad_norm(float max_norm);
  void step(float lr, const AdamWConfig& cfg);
  // A bf16 copy of the flat parameters (the CUDA backend's GEMM weights, null elsewhere):
  // where step() can write it in the same pass (on the GPU without ZeRO-1, whose updated
  // parameters arrive by all-gather afterwards), it does and writes_bf16_copy() is true,
  // so the caller need not convert the parameters again.
  void set_bf16_copy(void* copy);
  bool writes_bf16_copy() const;
  // The overlapped update (GPU without ZeRO-1): step() enqueues AdamW group by group, in
  // `groups` order (parameter indices in the order the next forward reads them), on a
  // stream of its own with blocks for at most `sms` SMs, and returns; the returned fence
  // (owned by the optimizer) makes the backend's compute stream wait for a group's update
  // before it touches one of its parameters, so the update of later layers runs while the
  // forward computes the earlier ones. Null where not supported (CPU, ZeRO-1).
  // gemm_limit: the forward's GEMMs are chosen for the other SMs until the forward has
  // waited for this fraction of the groups (1, default: all of them; 0: never).
  ParamFence* set_overlap(const std::vector<std::vector<int>>& groups, int sms, double gemm_limit = 1.0);

  int64_t steps_taken() const { return t_; }
  // Bytes of the moments held in host memory (the CPU path; 0 when they live on the GPU).
  int64_t host_state_bytes() const { return int64_t(m_.size() + v_.size()) * int64_t(sizeof(float)); }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Checkpoint support: moments in flat (store) coordinates, complete on every replica.
  void gather_moments(std::vector<float>& m_flat, std::vector<float>& v_flat);
  void set_moments(const std::vector<float>& m_flat, const std::vector<float>& v_flat);

 public:
  struct DeviceState;  // GPU state (optimizer_cuda.cpp; a nested type sees the members)

 private:
  struct Segment {
    int64_t lo, hi;
    bool weight_decay, norm_owned;
  };
  // Calls f(flat_lo, n, grad*, m*, v*) for this replica's portion of each bucket.
  template <class F>
  void for_each_owned(F&& f);
  template <class F>
  void for_each_segment(int64_t lo, int64_t hi, F&& f) const;

  // Parameters on the GPU: fp32 moments and segment tables in device memory, AdamW and the
  // norm as single launches over all segments (optimizer_cuda.cpp).
  std::unique_ptr<DeviceState> dev_;

  ParamStore& store_;
  GradReducer& reducer_;
  ProcessGroups& groups_;
  std::vector<Segment> segments_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace braid
