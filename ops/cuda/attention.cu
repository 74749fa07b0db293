// Braid's causal flash attention (forward and backward) for qkv[B,T,3,NH,HS] in bf16.
//
// Why this shape: the T x T probabilities never reach device memory. The forward walks the
// key/value tiles of a 64-row query tile with an online softmax (running max and sum per
// row, the output rescaled when the max grows) and saves only the log-sum-exp per row; the
// backward recomputes the probabilities from it. Scores, softmax and all accumulators are
// fp32; the matrix products take bf16 operands on the tensor cores (mma.sync m16n8k16, the
// fragments loaded from shared memory with ldmatrix), so P and dS are rounded to bf16 on
// their way into the second product, as in every bf16 flash attention.
//
// Determinism: the backward is two kernels. One owns a 64-key tile and loops over the
// query tiles that see it, accumulating dK and dV in registers; the other owns a 64-query
// tile and loops over its key tiles, accumulating dQ. Every output element is written by
// exactly one thread, once: no atomics, the same bits on every run (the usual single-kernel
// backward adds dQ with float atomics in a racing order).
//
// Tiling: 4 warps per block, 16 rows per warp. Head sizes are padded to D = 64 or 128 in
// shared memory (zero columns add nothing to the dot products; padded output columns are
// not stored). Shared-memory rows are D + 8 elements long, so the 8 rows an ldmatrix reads
// fall in distinct banks. Rows past T are zero-filled by the loads and masked in the scores.
// The next key/value (or query) tile is fetched with cp.async while the current one is used.
// Query tiles are scheduled longest-first (the last tile of the causal triangle does the
// most work).
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 64;  // query rows of a forward/dQ block, keys of a dK/dV block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct AttnArgs {
  const bf16* qkv;    // [B, T, 3, NH, HS]
  const bf16* out;    // [B, T, NH, HS] (backward: the forward's output)
  const bf16* dout;   // [B, T, NH, HS]
  bf16* o;            // forward output
  bf16* dqkv;         // backward output
  float* lse;         // [B, NH, T]
  const float* lse_in;
  const float* delta;  // [B, NH, T] rowsum(dout * out)
  int B, T, NH, HS;
  float scale;       // 1 / sqrt(HS)
  float scale_log2;  // scale * log2(e): scores in the exp2 domain
  bool accumulate;
};

// ---- Fragment addressing (see common.cuh for the layouts) ------------------------------
// A operand, 16x16 at (row0, col0) of a row-major tile: registers a0..a3.
template <int S>
__device__ __forceinline__ const bf16* a_frag(const bf16* tile, int row0, int col0, int lane) {
  return tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + col0 + (lane >> 4) * 8;
}
// B operand from a tile stored [n][k] (rows are the product's columns), rows n0..n0+15 and
// k0..k0+15: registers {0,1} are the n-tile n0, {2,3} the n-tile n0 + 8 (plain ldmatrix).
template <int S>
__device__ __forceinline__ const bf16* b_frag_nk(const bf16* tile, int n0, int k0, int lane) {
  return tile + (n0 + (lane & 7) + (lane >> 4) * 8) * S + k0 + ((lane >> 3) & 1) * 8;
}
// B operand from a tile stored [k][n], rows k0..k0+15 and columns n0..n0+15 (ldmatrix.trans):
// registers {0,1} are the n-tile n0, {2,3} the n-tile n0 + 8.
template <int S>
__device__ __forceinline__ const bf16* b_frag_kn(const bf16* tile, int k0, int n0, int lane) {
  return tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + n0 + (lane >> 4) * 8;
}

// Copies rows [t0, t0 + ROWS) of one head's D-padded slice into a [ROWS][D + 8] tile:
// base points at row 0 of the slice, rows are row_stride elements apart. Rows >= T and
// columns >= HS are zero-filled.
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* base, int64_t row_stride,
                                          int t0, int T, int HS) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += kThreads) {
    const int r = idx / kChunks, ch = idx % kChunks;
    const int t = t0 + r;
    const bool valid = t < T && ch * 8 < HS;
    const bf16* src = valid ? base + int64_t(t) * row_stride + ch * 8 : base;
    cp_async_16(tile + r * (D + 8) + ch * 8, src, valid);
  }
}

// Stores a warp's 16 x D accumulator (rows row0 and row0 + 8 of this lane's group) times
// `mul` into bf16 rows of dst (row stride `stride`), columns < HS, rows < T; adds the old
// values first when accumulating.
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t stride, const float (&acc)[D / 8][4],
                                           int row0, int T, int HS, float mul0, float mul1,
                                           bool accumulate, int lane) {
  const int g = lane >> 2, qd = lane & 3;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    const int col = dt * 8 + 2 * qd;
    if (col >= HS) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + g + half * 8;
      if (row >= T) continue;
      const float mul = half ? mul1 : mul0;
      float x0 = acc[dt][2 * half] * mul, x1 = acc[dt][2 * half + 1] * mul;
      __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(dst + int64_t(row) * stride + col);
      if (accumulate) {
        const __nv_bfloat162 old = *p;
        x0 += __low2float(old);
        x1 += __high2float(old);
      }
      *p = __floats2bfloat162_rn(x0, x1);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Forward: block (query tile, head, batch).
template <int D>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(AttnArgs a) {
  constexpr int S = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [64][S]
  bf16* sK = sQ + kTile * S;                      // [2][64][S]
  bf16* sV = sK + 2 * kTile * S;                  // [2][64][S]

  const int T = a.T, C = a.NH * a.HS;
  const int64_t row_stride = 3 * int64_t(C);
  const int num_q_tiles = (T + kTile - 1) / kTile;
  const int qt = num_q_tiles - 1 - blockIdx.x;  // longest first
  const int h = blockIdx.y, b = blockIdx.z;
  const bf16* q_base = a.qkv + int64_t(b) * T * row_stride + int64_t(h) * a.HS;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const int q0 = qt * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, qd = lane & 3;
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0 and row0 + 8

  load_tile<D, kTile>(sQ, q_base, row_stride, q0, T, a.HS);
  load_tile<D, kTile>(sK, k_base, row_stride, 0, T, a.HS);
  load_tile<D, kTile>(sV, v_base, row_stride, 0, T, a.HS);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], a_frag<S>(sQ, warp * 16, kk * 16, lane));

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  const int num_k_tiles = qt + 1;  // causal: key tiles up to the diagonal
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < num_k_tiles) {  // prefetch the next key/value tile into the other buffer
      load_tile<D, kTile>(sK + (cur ^ 1) * kTile * S, k_base, row_stride, (kt + 1) * kTile, T,
                          a.HS);
      load_tile<D, kTile>(sV + (cur ^ 1) * kTile * S, v_base, row_stride, (kt + 1) * kTile, T,
                          a.HS);
    }
    cp_async_commit();
    const bf16* k_tile = sK + cur * kTile * S;
    const bf16* v_tile = sV + cur * kTile * S;

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t kf[4];
        ldmatrix_x4(kf, b_frag_nk<S>(k_tile, np * 16, kk * 16, lane));
        mma_bf16_16816(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_bf16_16816(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }
    }
    // Scale into the exp2 domain; mask future keys and keys past T.
    const int k0 = kt * kTile;
    const bool need_mask = kt == qt || k0 + kTile > T;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + 2 * qd + (e & 1);
        const int row = row0 + (e >> 1) * 8;
        float x = s[nt][e] * a.scale_log2;
        if (need_mask && (key > row || key >= T)) x = -INFINITY;
        s[nt][e] = x;
      }
    // Online softmax: new running max per row (4 lanes share a row), rescale, exponentiate.
    float m_new[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      m_new[0] = fmaxf(m_new[0], fmaxf(s[nt][0], s[nt][1]));
      m_new[1] = fmaxf(m_new[1], fmaxf(s[nt][2], s[nt][3]));
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      m_new[r] = fmaxf(m_new[r], __shfl_xor_sync(0xffffffffu, m_new[r], 1));
      m_new[r] = fmaxf(m_new[r], __shfl_xor_sync(0xffffffffu, m_new[r], 2));
      // A row with no visible key so far keeps max -inf; subtract 0 then (exp2(-inf) = 0).
      const float m_use = m_new[r] == -INFINITY ? 0.f : m_new[r];
      corr[r] = exp2f(m_run[r] - m_use);
      m_run[r] = m_new[r];
      m_new[r] = m_use;
      l_run[r] *= corr[r];
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= corr[0];
      o[dt][1] *= corr[0];
      o[dt][2] *= corr[1];
      o[dt][3] *= corr[1];
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[nt][e] - m_new[e >> 1]);
        s[nt][e] = p;
        l_run[e >> 1] += p;
      }
    // O += P V, P as bf16 A fragments straight from the score registers.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, b_frag_kn<S>(v_tile, kk * 16, dp * 16, lane));
        mma_bf16_16816(o[2 * dp], pa, vf[0], vf[1]);
        mma_bf16_16816(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
    // The prefetch has landed and every warp is done with the current buffers.
    cp_async_wait<0>();
    __syncthreads();
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    inv[r] = 1.f / l_run[r];
  }
  bf16* o_base = a.o + int64_t(b) * T * C + int64_t(h) * a.HS;
  store_rows<D>(o_base, C, o, q0 + warp * 16, T, a.HS, inv[0], inv[1], false, lane);
  if (qd == 0) {
    float* lse = a.lse + (int64_t(b) * a.NH + h) * T;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + r * 8;
      if (row < T) lse[row] = (m_run[r] + log2f(l_run[r])) * kLn2;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward, step 0: delta[b,h,t] = sum_d dout * out (one warp per row of a head).
__global__ void attention_delta_kernel(float* delta, const bf16* dout, const bf16* out, int B,
                                       int T, int NH, int HS) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= int64_t(B) * T * NH) return;
  const int h = int(row % NH);
  const int64_t bt = row / NH;  // b * T + t
  const int64_t off = bt * NH * HS + int64_t(h) * HS;
  float s = 0.f;
  for (int d = lane; d < HS; d += 32) s += to_float(dout[off + d]) * to_float(out[off + d]);
  s = warp_sum(s);
  if (lane == 0) {
    const int64_t b = bt / T, t = bt % T;
    delta[(b * NH + h) * T + t] = s;
  }
}

// Backward, dK and dV: block (key tile, head, batch); query chunks of BQ rows.
template <int D, int BQ>
__global__ void __launch_bounds__(kThreads) flash_backward_dkdv_kernel(AttnArgs a) {
  constexpr int S = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [64][S]
  bf16* sV = sK + kTile * S;                      // [64][S]
  bf16* sQ = sV + kTile * S;                      // [2][BQ][S]
  bf16* sdO = sQ + 2 * BQ * S;                    // [2][BQ][S]
  float* sLse = reinterpret_cast<float*>(sdO + 2 * BQ * S);  // [2][BQ], exp2 domain
  float* sDelta = sLse + 2 * BQ;                             // [2][BQ]

  const int T = a.T, C = a.NH * a.HS;
  const int64_t row_stride = 3 * int64_t(C);
  const int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const bf16* q_base = a.qkv + int64_t(b) * T * row_stride + int64_t(h) * a.HS;
  const bf16* do_base = a.dout + int64_t(b) * T * C + int64_t(h) * a.HS;
  const float* lse = a.lse_in + (int64_t(b) * a.NH + h) * T;
  const float* delta = a.delta + (int64_t(b) * a.NH + h) * T;
  const int k0 = kt * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, qd = lane & 3;
  const int key0 = k0 + warp * 16 + g;  // this lane's keys: key0 and key0 + 8

  auto load_chunk = [&](int qc, int buf) {
    load_tile<D, BQ>(sQ + buf * BQ * S, q_base, row_stride, qc * BQ, T, a.HS);
    load_tile<D, BQ>(sdO + buf * BQ * S, do_base, C, qc * BQ, T, a.HS);
    for (int i = threadIdx.x; i < BQ; i += kThreads) {
      const int t = qc * BQ + i;
      sLse[buf * BQ + i] = t < T ? lse[t] * kLog2e : 0.f;
      sDelta[buf * BQ + i] = t < T ? delta[t] : 0.f;
    }
  };

  load_tile<D, kTile>(sK, q_base + C, row_stride, k0, T, a.HS);
  load_tile<D, kTile>(sV, q_base + 2 * C, row_stride, k0, T, a.HS);
  const int qc_first = k0 / BQ;  // the first query that sees key k0 is query k0
  const int num_qc = (T + BQ - 1) / BQ;
  load_chunk(qc_first, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  for (int qc = qc_first; qc < num_qc; ++qc) {
    const int cur = (qc - qc_first) & 1;
    if (qc + 1 < num_qc) load_chunk(qc + 1, cur ^ 1);
    cp_async_commit();
    const bf16* q_tile = sQ + cur * BQ * S;
    const bf16* do_tile = sdO + cur * BQ * S;
    const float* lse_c = sLse + cur * BQ;
    const float* delta_c = sDelta + cur * BQ;

    // S^T = K Q^T (16 keys x BQ queries) and dP^T = V dO^T.
    float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
    for (int i = 0; i < BQ / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t kf[4], vf[4];
      ldmatrix_x4(kf, a_frag<S>(sK, warp * 16, kk * 16, lane));
      ldmatrix_x4(vf, a_frag<S>(sV, warp * 16, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < BQ / 16; ++np) {
        uint32_t qf[4], df[4];
        ldmatrix_x4(qf, b_frag_nk<S>(q_tile, np * 16, kk * 16, lane));
        ldmatrix_x4(df, b_frag_nk<S>(do_tile, np * 16, kk * 16, lane));
        mma_bf16_16816(st[2 * np], kf, qf[0], qf[1]);
        mma_bf16_16816(st[2 * np + 1], kf, qf[2], qf[3]);
        mma_bf16_16816(dpt[2 * np], vf, df[0], df[1]);
        mma_bf16_16816(dpt[2 * np + 1], vf, df[2], df[3]);
      }
    }
    // P^T from the saved log-sum-exp; dS^T = P^T (dP^T - delta).
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ci = nt * 8 + 2 * qd + (e & 1);
        const int q = qc * BQ + ci;
        const int key = key0 + (e >> 1) * 8;
        const bool visible = q >= key && q < T && key < T;
        const float p = visible ? exp2f(st[nt][e] * a.scale_log2 - lse_c[ci]) : 0.f;
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - delta_c[ci]);
      }
    // dV += P^T dO and dK += dS^T Q (A operands from registers; B = dO, Q as [k][n]).
#pragma unroll
    for (int kq = 0; kq < BQ / 16; ++kq) {
      const uint32_t pa[4] = {pack_bf16x2(st[2 * kq][0], st[2 * kq][1]),
                              pack_bf16x2(st[2 * kq][2], st[2 * kq][3]),
                              pack_bf16x2(st[2 * kq + 1][0], st[2 * kq + 1][1]),
                              pack_bf16x2(st[2 * kq + 1][2], st[2 * kq + 1][3])};
      const uint32_t da[4] = {pack_bf16x2(dpt[2 * kq][0], dpt[2 * kq][1]),
                              pack_bf16x2(dpt[2 * kq][2], dpt[2 * kq][3]),
                              pack_bf16x2(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]),
                              pack_bf16x2(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t of[4], qf[4];
        ldmatrix_x4_trans(of, b_frag_kn<S>(do_tile, kq * 16, dp * 16, lane));
        ldmatrix_x4_trans(qf, b_frag_kn<S>(q_tile, kq * 16, dp * 16, lane));
        mma_bf16_16816(dv[2 * dp], pa, of[0], of[1]);
        mma_bf16_16816(dv[2 * dp + 1], pa, of[2], of[3]);
        mma_bf16_16816(dk[2 * dp], da, qf[0], qf[1]);
        mma_bf16_16816(dk[2 * dp + 1], da, qf[2], qf[3]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();
  }

  bf16* dk_base = a.dqkv + int64_t(b) * T * row_stride + C + int64_t(h) * a.HS;
  store_rows<D>(dk_base, row_stride, dk, k0 + warp * 16, T, a.HS, a.scale, a.scale,
                a.accumulate, lane);
  store_rows<D>(dk_base + C, row_stride, dv, k0 + warp * 16, T, a.HS, 1.f, 1.f, a.accumulate,
                lane);
}

// Backward, dQ: block (query tile, head, batch), longest first; key tiles of 64.
template <int D>
__global__ void __launch_bounds__(kThreads) flash_backward_dq_kernel(AttnArgs a) {
  constexpr int S = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [64][S]
  bf16* sdO = sQ + kTile * S;                     // [64][S]
  bf16* sK = sdO + kTile * S;                     // [2][64][S]
  bf16* sV = sK + 2 * kTile * S;                  // [2][64][S]

  const int T = a.T, C = a.NH * a.HS;
  const int64_t row_stride = 3 * int64_t(C);
  const int num_q_tiles = (T + kTile - 1) / kTile;
  const int qt = num_q_tiles - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const bf16* q_base = a.qkv + int64_t(b) * T * row_stride + int64_t(h) * a.HS;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = a.dout + int64_t(b) * T * C + int64_t(h) * a.HS;
  const int q0 = qt * kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, qd = lane & 3;
  const int row0 = q0 + warp * 16 + g;

  load_tile<D, kTile>(sQ, q_base, row_stride, q0, T, a.HS);
  load_tile<D, kTile>(sdO, do_base, C, q0, T, a.HS);
  load_tile<D, kTile>(sK, k_base, row_stride, 0, T, a.HS);
  load_tile<D, kTile>(sV, v_base, row_stride, 0, T, a.HS);
  cp_async_commit();

  float lse2[2], dlt[2];
  {
    const float* lse = a.lse_in + (int64_t(b) * a.NH + h) * T;
    const float* delta = a.delta + (int64_t(b) * a.NH + h) * T;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + r * 8;
      lse2[r] = row < T ? lse[row] * kLog2e : 0.f;
      dlt[r] = row < T ? delta[row] : 0.f;
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

  const int num_k_tiles = qt + 1;
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < num_k_tiles) {
      load_tile<D, kTile>(sK + (cur ^ 1) * kTile * S, k_base, row_stride, (kt + 1) * kTile, T,
                          a.HS);
      load_tile<D, kTile>(sV + (cur ^ 1) * kTile * S, v_base, row_stride, (kt + 1) * kTile, T,
                          a.HS);
    }
    cp_async_commit();
    const bf16* k_tile = sK + cur * kTile * S;
    const bf16* v_tile = sV + cur * kTile * S;

    // S = Q K^T and dP = dO V^T for 16 rows x 64 keys.
    float s[8][4], dp[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qf[4], df[4];
      ldmatrix_x4(qf, a_frag<S>(sQ, warp * 16, kk * 16, lane));
      ldmatrix_x4(df, a_frag<S>(sdO, warp * 16, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t kf[4], vf[4];
        ldmatrix_x4(kf, b_frag_nk<S>(k_tile, np * 16, kk * 16, lane));
        ldmatrix_x4(vf, b_frag_nk<S>(v_tile, np * 16, kk * 16, lane));
        mma_bf16_16816(s[2 * np], qf, kf[0], kf[1]);
        mma_bf16_16816(s[2 * np + 1], qf, kf[2], kf[3]);
        mma_bf16_16816(dp[2 * np], df, vf[0], vf[1]);
        mma_bf16_16816(dp[2 * np + 1], df, vf[2], vf[3]);
      }
    }
    const int k0 = kt * kTile;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + nt * 8 + 2 * qd + (e & 1);
        const int r = e >> 1;
        const int row = row0 + r * 8;
        const bool visible = key <= row && row < T && key < T;
        const float p = visible ? exp2f(s[nt][e] * a.scale_log2 - lse2[r]) : 0.f;
        s[nt][e] = p * (dp[nt][e] - dlt[r]);  // dS
      }
    // dQ += dS K (K as [k = key][n = dim]).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t da[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dpi = 0; dpi < D / 16; ++dpi) {
        uint32_t kf[4];
        ldmatrix_x4_trans(kf, b_frag_kn<S>(k_tile, kk * 16, dpi * 16, lane));
        mma_bf16_16816(dq[2 * dpi], da, kf[0], kf[1]);
        mma_bf16_16816(dq[2 * dpi + 1], da, kf[2], kf[3]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();
  }
  bf16* dq_base = a.dqkv + int64_t(b) * T * row_stride + int64_t(h) * a.HS;
  store_rows<D>(dq_base, row_stride, dq, q0 + warp * 16, T, a.HS, a.scale, a.scale,
                a.accumulate, lane);
}

// ---------------------------------------------------------------------------------------

template <class Kernel>
void launch(Kernel kernel, dim3 grid, size_t smem, const AttnArgs& args, cudaStream_t stream) {
  // Above 48 KiB a kernel must opt in to its dynamic shared memory (per device, so on
  // every launch: it costs a host call, nothing on the device).
  BRAID_CHECK_CUDA(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(args);
  BRAID_CHECK_LAUNCH();
}

AttnArgs make_args(int B, int T, int NH, int HS) {
  BRAID_CHECK(HS % 8 == 0 && HS >= 8 && HS <= 128,
              "attention: head size " << HS << " must be a multiple of 8 in [8, 128]");
  BRAID_CHECK(B >= 1 && NH >= 1 && T >= 1 && NH <= 65535 && B <= 65535,
              "attention: bad shape B=" << B << " T=" << T << " NH=" << NH);
  AttnArgs a{};
  a.B = B, a.T = T, a.NH = NH, a.HS = HS;
  a.scale = 1.f / std::sqrt(float(HS));
  a.scale_log2 = a.scale * kLog2e;
  return a;
}

template <int D>
size_t forward_smem() { return size_t(5) * kTile * (D + 8) * sizeof(bf16); }
template <int D, int BQ>
size_t dkdv_smem() {
  return (size_t(2) * kTile + 4 * BQ) * (D + 8) * sizeof(bf16) + 4 * BQ * sizeof(float);
}
template <int D>
size_t dq_smem() { return size_t(6) * kTile * (D + 8) * sizeof(bf16); }

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, int HS,
                       cudaStream_t stream) {
  AttnArgs a = make_args(B, T, NH, HS);
  a.qkv = qkv, a.o = out, a.lse = lse;
  const dim3 grid(unsigned((T + kTile - 1) / kTile), unsigned(NH), unsigned(B));
  if (HS <= 64) launch(flash_forward_kernel<64>, grid, forward_smem<64>(), a, stream);
  else launch(flash_forward_kernel<128>, grid, forward_smem<128>(), a, stream);
}

size_t attention_backward_scratch_bytes(int B, int T, int NH) {
  return size_t(B) * size_t(NH) * size_t(T) * sizeof(float);
}

void attention_backward(bf16* dqkv, void* scratch, const bf16* dout, const bf16* qkv,
                        const bf16* out, const float* lse, int B, int T, int NH, int HS,
                        bool accumulate, cudaStream_t stream) {
  AttnArgs a = make_args(B, T, NH, HS);
  BRAID_CHECK(scratch != nullptr,
              "attention_backward needs scratch (attention_backward_scratch_bytes)");
  float* delta = static_cast<float*>(scratch);
  const int64_t rows = int64_t(B) * T * NH;
  attention_delta_kernel<<<unsigned(ceil_div(rows, 8)), 256, 0, stream>>>(delta, dout, out, B,
                                                                          T, NH, HS);
  BRAID_CHECK_LAUNCH();
  a.qkv = qkv, a.out = out, a.dout = dout, a.dqkv = dqkv, a.lse_in = lse, a.delta = delta;
  a.accumulate = accumulate;
  const dim3 grid(unsigned((T + kTile - 1) / kTile), unsigned(NH), unsigned(B));
  if (HS <= 64) {
    launch(flash_backward_dkdv_kernel<64, 64>, grid, dkdv_smem<64, 64>(), a, stream);
    launch(flash_backward_dq_kernel<64>, grid, dq_smem<64>(), a, stream);
  } else {
    launch(flash_backward_dkdv_kernel<128, 32>, grid, dkdv_smem<128, 32>(), a, stream);
    launch(flash_backward_dq_kernel<128>, grid, dq_smem<128>(), a, stream);
  }
}

}  // namespace braid::cuda
