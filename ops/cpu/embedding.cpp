// Token and position embedding on CPU. Token lookup is vocab-parallel: a shard owns ids
// [vocab_start, vocab_start + vocab_count) and writes zeros for the others, so an
// all-reduce over the tensor-parallel group assembles the full embedding.
#include <cstring>

#include "ops/ops.h"

namespace braid::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int C,
                       int64_t vocab_start, int64_t vocab_count) {
  for (int64_t n = 0; n < N; ++n) {
    int64_t v = int64_t(tokens[n]) - vocab_start;
    float* o = out + n * C;
    if (v >= 0 && v < vocab_count) std::memcpy(o, wte + v * C, sizeof(float) * C);
    else std::memset(o, 0, sizeof(float) * C);
  }
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int C,
                        int64_t vocab_start, int64_t vocab_count) {
  for (int64_t n = 0; n < N; ++n) {
    int64_t v = int64_t(tokens[n]) - vocab_start;
    if (v < 0 || v >= vocab_count) continue;
    float* d = dwte + v * C;
    const float* g = dout + n * C;
    for (int c = 0; c < C; ++c) d[c] += g[c];
  }
}

void position_forward(float* out, const float* wpe, int B, int T, int C, int pos_offset) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      float* o = out + (int64_t(b) * T + t) * C;
      const float* p = wpe + int64_t(pos_offset + t) * C;
      for (int c = 0; c < C; ++c) o[c] += p[c];
    }
}

void position_backward(float* dwpe, const float* dout, int B, int T, int C, int pos_offset) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const float* g = dout + (int64_t(b) * T + t) * C;
      float* d = dwpe + int64_t(pos_offset + t) * C;
      for (int c = 0; c < C; ++c) d[c] += g[c];
    }
}

}  // namespace braid::cpu
