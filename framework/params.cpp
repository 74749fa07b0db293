#include "framework/params.h"

#include <zlib.h>

#include "framework/philox.h"

namespace braid {

Shape ParamSpec::local_shape() const {
  Shape s = full_shape;
  if (shard_dim >= 0) s[shard_dim] = storage_rows;
  return s;
}

uint64_t param_stream_id(const std::string& name) {
  uLong c = crc32(0L, Z_NULL, 0);
  c = crc32(c, reinterpret_cast<const Bytef*>(name.data()), uInt(name.size()));
  uLong a = adler32(1L, reinterpret_cast<const Bytef*>(name.data()), uInt(name.size()));
  return (uint64_t(c) << 32) | uint64_t(a & 0xffffffffu);
}

int ParamStore::add(ParamSpec spec) {
  BRAID_CHECK(!values_.defined(), "ParamStore::add after finalize");
  if (spec.shard_dim < 0) {
    spec.shard_count = 0;
    spec.storage_rows = 0;
  }
  Param p;
  p.spec = std::move(spec);
  params_.push_back(std::move(p));
  return int(params_.size()) - 1;
}

void ParamStore::finalize(int64_t bucket_elems, int dp_size, Device device) {
  const int64_t offset = assign_buckets(bucket_elems, dp_size);
  values_ = Tensor({std::max<int64_t>(offset, 1)}, DType::F32, device);
  grads_ = Tensor({std::max<int64_t>(offset, 1)}, DType::F32, device);
  for (Param& p : params_) {
    Shape s = p.spec.local_shape();
    p.value = values_.view(p.flat_offset, s);
    p.grad = grads_.view(p.flat_offset, s);
  }
}

int64_t ParamStore::assign_buckets(int64_t bucket_elems, int dp_size) {
  BRAID_CHECK(!values_.defined(), "ParamStore::assign_buckets after finalize");
  // Buckets in reverse registration order; params flagged own_bucket sit alone.
  buckets_.clear();
  bucket_of_.assign(params_.size(), -1);
  int64_t offset = 0;
  Bucket cur;
  auto close = [&]() {
    if (cur.params.empty()) return;
    cur.size = (cur.size + dp_size - 1) / dp_size * dp_size;
    offset = cur.offset + cur.size;
    for (int i : cur.params) bucket_of_[i] = int(buckets_.size());
    buckets_.push_back(cur);
    cur = Bucket{};
    cur.offset = offset;
  };
  cur.offset = 0;
  for (int i = int(params_.size()) - 1; i >= 0; --i) {
    Param& p = params_[i];
    int64_t n = shape_numel(p.spec.local_shape());
    if (p.spec.own_bucket) close();
    p.flat_offset = cur.offset + cur.size;
    cur.size += n;
    cur.params.push_back(i);
    if (p.spec.own_bucket || cur.size >= bucket_elems) close();
  }
  close();
  return offset;
}

Tensor ParamStore::host_values() {
  if (values_.device() == Device::CPU) return values_;
  Tensor h = Tensor::empty(values_.shape());
  h.copy_from(values_);
  return h;
}

void ParamStore::set_values(const Tensor& host_flat) {
  if (host_flat.raw() != values_.raw()) values_.copy_from(host_flat);
}

void ParamStore::init_values(uint64_t seed) {
  Tensor host = host_values();
  for (Param& p : params_) {
    const ParamSpec& s = p.spec;
    Shape local = s.local_shape();
    float* v = host.f32() + p.flat_offset;
    int64_t n = shape_numel(local);
    const int nd = int(local.size());
    uint64_t stream = param_stream_id(s.name);
    std::vector<int64_t> idx(nd, 0);
    for (int64_t e = 0; e < n; ++e) {
      // local multi-index -> full multi-index -> full flat index
      int64_t rem = e;
      for (int d = nd - 1; d >= 0; --d) {
        idx[d] = rem % local[d];
        rem /= local[d];
      }
      bool padding = s.shard_dim >= 0 && idx[s.shard_dim] >= s.shard_count;
      int64_t full = 0;
      for (int d = 0; d < nd; ++d) {
        int64_t id = idx[d] + (d == s.shard_dim ? s.shard_offset : 0);
        full = full * s.full_shape[d] + id;
      }
      int64_t row0 = idx[0] + (s.shard_dim == 0 ? s.shard_offset : 0);
      if (padding || (s.zero_rows_from >= 0 && row0 >= s.zero_rows_from)) {
        v[e] = 0.f;
        continue;
      }
      switch (s.init) {
        case InitKind::Zeros: v[e] = 0.f; break;
        case InitKind::Ones: v[e] = 1.f; break;
        case InitKind::Normal: v[e] = s.init_std * philox_normal(seed, stream, uint64_t(full)); break;
      }
    }
  }
  set_values(host);
}

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

void ParamStore::zero_grads() {
  grads_.zero_();
  for (Param& p : params_) p.ready = false;
  for (Bucket& b : buckets_) b.pending = int(b.params.size());
}

}  // namespace braid
