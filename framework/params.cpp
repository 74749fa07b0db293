#include "framework/params.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

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

namespace {
// Initial values of elements [begin, end) of one parameter's local shard, element by
// element as a function of (seed, the parameter's stream, the element's index in the full
// tensor) alone, so any split of the range gives the same values.
void init_range(const ParamSpec& s, const Shape& local, float* v, int64_t begin, int64_t end, uint64_t seed,
                uint64_t stream) {
  const int nd = int(local.size());
  std::vector<int64_t> idx(size_t(nd), 0);  // local multi-index of element `begin`
  int64_t rem = begin;
  for (int d = nd - 1; d >= 0; --d) {
    idx[size_t(d)] = rem % local[size_t(d)];
    rem /= local[size_t(d)];
  }
  for (int64_t e = begin; e < end; ++e) {
    bool padding = nd > 0 && s.shard_dim >= 0 && idx[size_t(s.shard_dim)] >= s.shard_count;
    int64_t full = 0;  // local multi-index -> full flat index
    for (int d = 0; d < nd; ++d) {
      int64_t id = idx[size_t(d)] + (d == s.shard_dim ? s.shard_offset : 0);
      full = full * s.full_shape[size_t(d)] + id;
    }
    const int64_t row0 = nd > 0 ? idx[0] + (s.shard_dim == 0 ? s.shard_offset : 0) : 0;
    if (padding || (s.zero_rows_from >= 0 && row0 >= s.zero_rows_from)) {
      v[e] = 0.f;
    } else {
      switch (s.init) {
        case InitKind::Zeros: v[e] = 0.f; break;
        case InitKind::Ones: v[e] = 1.f; break;
        case InitKind::Normal: v[e] = s.init_std * philox_normal(seed, stream, uint64_t(full)); break;
      }
    }
    for (int d = nd - 1; d >= 0; --d) {  // next local multi-index
      if (++idx[size_t(d)] < local[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
}
}  // namespace

void ParamStore::init_values(uint64_t seed) {
  Tensor host = host_values();
  // Work items of up to 1M elements over every parameter, shared by the host's threads:
  // one thread took 60-130 s for GPT-2 1.5B before the first step (session 5).
  struct Item {
    const Param* p;
    int64_t begin, end;
  };
  constexpr int64_t kItem = int64_t(1) << 20;
  std::vector<Item> items;
  for (const Param& p : params_) {
    const int64_t n = shape_numel(p.spec.local_shape());
    for (int64_t b = 0; b < n; b += kItem) items.push_back({&p, b, std::min(n, b + kItem)});
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < items.size(); i = next++) {
      const Item& it = items[i];
      init_range(it.p->spec, it.p->spec.local_shape(), host.f32() + it.p->flat_offset, it.begin, it.end, seed,
                 param_stream_id(it.p->spec.name));
    }
  };
  const unsigned threads =
      unsigned(std::min<size_t>({size_t(std::max(1u, std::thread::hardware_concurrency())), size_t(16), items.size()}));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  set_values(host);
}

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

void ParamStore::zero_grads() {
  grads_.zero_();
  for (Param& p : params_) p.ready = false, p.grad_stale = false;
  for (Bucket& b : buckets_) b.pending = int(b.params.size());
}

void ParamStore::mark_grads_stale() {
  // The buckets' padding is never zeroed again: no op writes it, and the norm and AdamW
  // walk the parameters' segments only (ZeRO-1's reduce-scatter and --inject-nan-at-step
  // may leave anything there).
  for (Param& p : params_) p.ready = false, p.grad_stale = true;
  for (Bucket& b : buckets_) b.pending = int(b.params.size());
}

void ParamStore::zero_if_stale(int i) {
  if (take_stale(i)) params_[i].grad.zero_();
}

}  // namespace braid
