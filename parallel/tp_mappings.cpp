#include "parallel/tp_mappings.h"

#include <cstring>

#include "ops/device_memory.h"

namespace braid {

namespace {
// Copies `bytes` between two buffers of the same device.
void copy_same_device(void* dst, const void* src, size_t bytes, Device d) {
  if (d == Device::CPU) std::memcpy(dst, src, bytes);
  else device_copy(dst, true, src, true, bytes);
}
}  // namespace

void tp_all_reduce(Communicator& tp, Tensor& x) {
  tp.all_reduce(x.raw(), x.numel(), x.dtype(), ReduceOp::Sum);
}

// The communicator concatenates by rank: [TP][B][Ts][C]. The activation layout is
// [B][TP*Ts][C], so gather/scatter repack between the two.
void tp_gather_seq(Communicator& tp, const Tensor& local, Tensor& full, int B, int T) {
  const int P = tp.size();
  const int Ts = T / P;
  const int64_t C = local.dim(-1);
  const size_t es = dtype_bytes(local.dtype());
  const int64_t block = int64_t(B) * Ts * C;
  if (P == 1) {
    full.copy_from(local);
    return;
  }
  Tensor scratch = Tensor::empty({P * block}, local.dtype(), local.device());
  tp.all_gather(local.raw(), scratch.raw(), block, local.dtype());
  auto* dst = static_cast<char*>(full.raw());
  const auto* src = static_cast<const char*>(scratch.raw());
  for (int r = 0; r < P; ++r)
    for (int b = 0; b < B; ++b)
      copy_same_device(dst + ((int64_t(b) * T + int64_t(r) * Ts) * C) * es,
                       src + (r * block + int64_t(b) * Ts * C) * es, es * Ts * C, local.device());
}

void tp_reduce_scatter_seq(Communicator& tp, const Tensor& full, Tensor& local, int B, int T) {
  const int P = tp.size();
  const int Ts = T / P;
  const int64_t C = full.dim(-1);
  const size_t es = dtype_bytes(full.dtype());
  const int64_t block = int64_t(B) * Ts * C;
  if (P == 1) {
    local.copy_from(full);
    return;
  }
  Tensor scratch = Tensor::empty({P * block}, full.dtype(), full.device());
  auto* dst = static_cast<char*>(scratch.raw());
  const auto* src = static_cast<const char*>(full.raw());
  for (int r = 0; r < P; ++r)
    for (int b = 0; b < B; ++b)
      copy_same_device(dst + (r * block + int64_t(b) * Ts * C) * es,
                       src + ((int64_t(b) * T + int64_t(r) * Ts) * C) * es, es * Ts * C, full.device());
  tp.reduce_scatter(scratch.raw(), local.raw(), block, full.dtype());
}

}  // namespace braid
