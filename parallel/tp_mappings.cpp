#include "parallel/tp_mappings.h"

#include <cstring>

#include "ops/device_memory.h"

namespace braid {

namespace {
// Copies `rows` rows of `bytes` each between two buffers of the same device, rows
// `dst_stride` / `src_stride` bytes apart: one call on the GPU (a copy per row there would
// be B launches per rank and per call, each ordered against all compute).
void copy_rows_same_device(char* dst, size_t dst_stride, const char* src, size_t src_stride, size_t bytes,
                           int64_t rows, Device d) {
  if (d == Device::CPU) {
    for (int64_t i = 0; i < rows; ++i) std::memcpy(dst + i * dst_stride, src + i * src_stride, bytes);
  } else {
    device_copy_2d(dst, dst_stride, src, src_stride, bytes, size_t(rows));
  }
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
  // Rank r's block holds B rows of Ts*C; they go to rows [r*Ts, (r+1)*Ts) of each sample.
  for (int r = 0; r < P; ++r)
    copy_rows_same_device(dst + int64_t(r) * Ts * C * es, es * T * C, src + r * block * es, es * Ts * C,
                          es * Ts * C, B, local.device());
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
    copy_rows_same_device(dst + r * block * es, es * Ts * C, src + int64_t(r) * Ts * C * es, es * T * C,
                          es * Ts * C, B, full.device());
  tp.reduce_scatter(scratch.raw(), local.raw(), block, full.dtype());
}

}  // namespace braid
