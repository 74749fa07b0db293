// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), a
// counter-based generator: the value at a counter is a pure function of (key, counter).
// Initialisation indexes it by an element's position in the FULL tensor, so every rank
// generates exactly its slice and every layout starts from the same model.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace braid {

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * ctr[0];
    uint64_t p1 = uint64_t(M1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// Standard normal for element `index` of the stream `stream` under `seed` (Box-Muller on
// the first two 32-bit outputs), computed in double and rounded once.
inline float philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  auto r = philox4x32({uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)},
                      {uint32_t(seed), uint32_t(seed >> 32)});
  double u1 = (double(r[0]) + 1.0) / 4294967296.0;  // (0, 1]
  double u2 = double(r[1]) / 4294967296.0;          // [0, 1)
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// Uniform in [0, 1) for sampling.
inline double philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  auto r = philox4x32({uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)},
                      {uint32_t(seed), uint32_t(seed >> 32)});
  return (double(r[0] >> 5) * 67108864.0 + double(r[1] >> 6)) / 9007199254740992.0;
}

}  // namespace braid
