#include "parallel/tp_mappings.h"

#include <cstring>

namespace braid {

void tp_all_reduce(Communicator& tp, float* x, int64_t n) {
  tp.all_reduce(x, n, DType::F32, ReduceOp::Sum);
}

// The communicator concatenates by rank: [TP][B][Ts][C]. The activation layout is
// [B][TP*Ts][C], so gather/scatter repack between the two.
void tp_gather_seq(Communicator& tp, const float* local, float* full, int B, int T, int C,
                   std::vector<float>& scratch) {
  const int P = tp.size();
  const int Ts = T / P;
  const int64_t block = int64_t(B) * Ts * C;
  if (P == 1) {
    std::memcpy(full, local, sizeof(float) * block);
    return;
  }
  scratch.resize(size_t(block) * P);
  tp.all_gather(local, scratch.data(), block, DType::F32);
  for (int r = 0; r < P; ++r)
    for (int b = 0; b < B; ++b)
      std::memcpy(full + (int64_t(b) * T + int64_t(r) * Ts) * C,
                  scratch.data() + r * block + int64_t(b) * Ts * C, sizeof(float) * Ts * C);
}

void tp_reduce_scatter_seq(Communicator& tp, const float* full, float* local, int B, int T, int C,
                           std::vector<float>& scratch) {
  const int P = tp.size();
  const int Ts = T / P;
  const int64_t block = int64_t(B) * Ts * C;
  if (P == 1) {
    std::memcpy(local, full, sizeof(float) * block);
    return;
  }
  scratch.resize(size_t(block) * P);
  for (int r = 0; r < P; ++r)
    for (int b = 0; b < B; ++b)
      std::memcpy(scratch.data() + r * block + int64_t(b) * Ts * C,
                  full + (int64_t(b) * T + int64_t(r) * Ts) * C, sizeof(float) * Ts * C);
  tp.reduce_scatter(scratch.data(), local, block, DType::F32);
}

}  // namespace braid
