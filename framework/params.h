// The parameter registry. Every parameter has a logical (full, unsharded) shape and a
// description of the slice this rank holds, so that initialisation, checkpoints and
// resharding work on full-tensor coordinates whatever the layout.
//
// Values and gradients live in two flat buffers split into buckets (contiguous element
// ranges, each padded to a multiple of the data-parallel size). Buckets are filled in
// reverse registration order, i.e. roughly the order in which backward finalises
// gradients, so the data-parallel reducer can launch a bucket as soon as it is complete;
// under ZeRO-1 data-parallel rank d owns the d-th 1/DP of every bucket.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/tensor.h"

namespace braid {

enum class InitKind { Normal, Zeros, Ones };

struct ParamSpec {
  std::string name;           // e.g. "h.3.attn.qkv.w": layer indices are global
  Shape full_shape;           // logical shape
  int shard_dim = -1;         // dim split across TP ranks, -1 = replicated over TP
  int64_t shard_offset = 0;   // first full-tensor index along shard_dim held here
  int64_t shard_count = 0;    // how many of them are real (may be < storage rows)
  int64_t storage_rows = 0;   // local extent along shard_dim (>= shard_count)
  InitKind init = InitKind::Normal;
  float init_std = 0.02f;
  int64_t zero_rows_from = -1;  // rows (dim 0) >= this start at zero (padded vocabulary)
  bool weight_decay = false;
  bool sp_partial_grad = false;  // with sequence parallelism, grads are partial over TP
  bool tied_copy = false;        // second holder of a tied parameter (not saved, not in the norm)
  bool own_bucket = false;       // placed alone in a bucket (tied parameters)

  Shape local_shape() const;
  bool tp_replicated() const { return shard_dim < 0; }
};

struct Param {
  ParamSpec spec;
  Tensor value, grad;  // views into the store's flat buffers, shape local_shape()
  int64_t flat_offset = 0;
  bool ready = false;  // gradient final for this step (set by backward)
  bool grad_stale = false;  // holds an earlier step's gradient: its first write overwrites (mark_grads_stale)
};

struct Bucket {
  int64_t offset = 0, size = 0;  // element range in the flat buffers, size % dp == 0
  std::vector<int> params;       // indices into ParamStore::params
  int pending = 0;               // params not yet final this step
};

class ParamStore {
 public:
  int add(ParamSpec spec);  // returns the index; call finalize() after the last add
  void finalize(int64_t bucket_elems, int dp_size, Device device = Device::CPU);
  // The first half of finalize without allocating: places every parameter in the buckets
  // and the flat buffers (flat_offset) and returns the flat size in elements. The memory
  // plan (framework/plan.h) sizes a rank with it.
  int64_t assign_buckets(int64_t bucket_elems, int dp_size);
  Device device() const { return values_.device(); }
  // Host copies of the flat values (a view of them on CPU) and the way back.
  Tensor host_values();
  void set_values(const Tensor& host_flat);
  void init_values(uint64_t seed);  // by full-tensor position, layout independent

  Param& operator[](int i) { return params_[i]; }
  const Param& operator[](int i) const { return params_[i]; }
  Param* find(const std::string& name);
  int size() const { return int(params_.size()); }
  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  std::vector<Bucket>& buckets() { return buckets_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int bucket_of(int param) const { return bucket_of_[param]; }
  Tensor& flat_values() { return values_; }
  Tensor& flat_grads() { return grads_; }
  int64_t flat_size() const { return values_.numel(); }
  void zero_grads();
  // Lazy zeroing (the trainer's steps): instead of a pass that zeroes every gradient, each
  // is marked stale; the first backward op that writes a stale gradient overwrites it
  // (the GPU's weight-gradient GEMMs with beta 0) or zeroes it first (take_stale), and a
  // gradient that no op wrote is zeroed before it is read (zero_if_stale).
  void mark_grads_stale();
  bool take_stale(int i) {  // true once per step: the caller must overwrite or zero grad i
    const bool s = params_[i].grad_stale;
    params_[i].grad_stale = false;
    return s;
  }
  void zero_if_stale(int i);

 private:
  std::vector<Param> params_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;
  Tensor values_, grads_;
};

// Hash of a parameter name, the init stream id (layout independent).
uint64_t param_stream_id(const std::string& name);

}  // namespace braid
