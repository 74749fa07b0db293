// LayerNorm on CUDA, fused with the residual add in the forward. One warp per row: the row
// (residual sum rounded to bf16, as stored) is kept in shared memory as fp32, the mean and
// then the variance about the mean are warp sums in a fixed order (the CPU op's two-pass
// form), eps 1e-5. The backward is one kernel for dinp and the per-block partial sums of
// the weight/bias gradients, then the deterministic column sum of column_reduce.cuh.
#include <atomic>

#include "ops/cuda/column_reduce.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {
namespace {

constexpr float kLayerNormEps = 1e-5f;
constexpr int kWarpsPerBlock = 4;

// Where column c of a row lives in a warp's shared-memory row (and, in the backward, in
// its accumulators): with V = 8 a lane owns 8 consecutive columns, so they are stored
// k-major (column c0 + k at k * C/8 + c0/8) and the lanes of a warp touch consecutive
// words (no bank conflicts).
template <int V>
__device__ __forceinline__ int acc_slot(int c, int C) {
  return V == 8 ? (c & 7) * (C >> 3) + (c >> 3) : c;
}

// ---- Register rows (C % 8 == 0, C <= 8 * 256, aligned rows) ---------------------------
// A lane's CH 16-byte vectors of a row (columns lane * 8 + 256 j) are all loaded before
// any is used, so a warp has 2 * CH loads in flight per row instead of two (the loop
// kernels below wait for memory once per vector: latency bound, 32-63% of the copy
// bandwidth measured at the 124M and 1.5B shapes). The arithmetic, and its order, is the
// loop kernels' (the same bits unless the compiler contracts a multiply-add differently).
__device__ __forceinline__ uint4 load16(const bf16* p) { return *reinterpret_cast<const uint4*>(p); }

// b == nullptr: plain layernorm of a (residual not written). V = 8 moves 16-byte vectors
// (C % 8 == 0 and aligned rows), V = 1 single elements.
template <int V>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
layernorm_forward_kernel(bf16* residual, bf16* out, float* mean_out, float* rstd_out,
                         const bf16* a, const bf16* b, const float* w, const float* bias,
                         int64_t N, int C) {
  extern __shared__ float s_rows[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (n >= N) return;
  float* x = s_rows + int64_t(warp) * C;  // only this lane's elements are read back by it
  float sum = 0.f;
  for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
    float v[V];
    load_bf16<V>(v, a + n * C + c0);
    if (b) {
      float bv[V];
      load_bf16<V>(bv, b + n * C + c0);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = to_float(to_bf16(v[k] + bv[k]));  // as stored
      store_bf16<V>(residual + n * C + c0, v);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) {
      x[acc_slot<V>(c0 + k, C)] = v[k];
      sum += v[k];
    }
  }
  const float m = warp_sum(sum) / C;
  float var = 0.f;
  for (int c0 = lane * V; c0 < C; c0 += 32 * V)
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float d = x[acc_slot<V>(c0 + k, C)] - m;
      var += d * d;
    }
  var = warp_sum(var) / C;
  const float s = 1.f / sqrtf(var + kLayerNormEps);
  for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
    float wv[V], bv[V], o[V];
    load_f32<V>(wv, w + c0);
    load_f32<V>(bv, bias + c0);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = (x[acc_slot<V>(c0 + k, C)] - m) * s * wv[k] + bv[k];
    store_bf16<V>(out + n * C + c0, o);
  }
  if (lane == 0) {
    mean_out[n] = m;
    rstd_out[n] = s;
  }
}

template <int CH>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
layernorm_forward_rows_kernel(bf16* residual, bf16* out, float* mean_out, float* rstd_out,
                              const bf16* a, const bf16* b, const float* w, const float* bias,
                              int64_t N, int C) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (n >= N) return;
  uint4 ra[CH], rbv[CH];
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    const int c0 = (lane + 32 * j) * 8;
    if (c0 < C) {
      ra[j] = load16(a + n * C + c0);
      if (b) rbv[j] = load16(b + n * C + c0);
    }
  }
  float x[CH][8];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    const int c0 = (lane + 32 * j) * 8;
    if (c0 >= C) continue;
    unpack8(x[j], ra[j]);
    if (b) {
      float bv[8];
      unpack8(bv, rbv[j]);
#pragma unroll
      for (int k = 0; k < 8; ++k) x[j][k] = to_float(to_bf16(x[j][k] + bv[k]));  // as stored
      store_bf16<8>(residual + n * C + c0, x[j]);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) sum += x[j][k];
  }
  const float m = warp_sum(sum) / C;
  float var = 0.f;
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    if ((lane + 32 * j) * 8 >= C) continue;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float d = x[j][k] - m;
      var += d * d;
    }
  }
  var = warp_sum(var) / C;
  const float s = 1.f / sqrtf(var + kLayerNormEps);
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    const int c0 = (lane + 32 * j) * 8;
    if (c0 >= C) continue;
    float wv[8], bv[8], o[8];
    load_f32<8>(wv, w + c0);
    load_f32<8>(bv, bias + c0);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = (x[j][k] - m) * s * wv[k] + bv[k];
    store_bf16<8>(out + n * C + c0, o);
  }
  if (lane == 0) {
    mean_out[n] = m;
    rstd_out[n] = s;
  }
}

// Backward, one kernel: block b owns rows [b * kBwdRows, (b + 1) * kBwdRows); each warp takes
// every kBwdWarps-th of them. Per row: the two row means of the CPU op in fp32 (warp sums),
// then dx = rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) with dnorm = dout * w,
// written (or added) to dinp, while xhat * dout and dout are added into the warp's own
// shared-memory accumulators for dw and db (each lane owns its columns: no races). At the
// end the warps' accumulators are added in warp order into the block's partial row
// [dw | db], which column_finalize sums over blocks in order. V = 8 reads 16-byte vectors.
constexpr int kBwdWarps = 4;
constexpr int kBwdRows = 16;  // 32 left the 1.5B shape at 1/8 occupancy
// Four blocks per SM for the widest rows (CH 6 and 8: at most 128 registers a thread, 36
// bytes spilled): unbounded, CH = 8 (C = 1600) took 154 registers, three blocks fitted an
// SM, and the 512 blocks of the 1.5B shape (B8) ran as 396 + 116, two waves, the second
// a quarter full. The narrower rows keep their 64-96 registers (0: no bound; a bound of
// 4 blocks let CH 3-4 grow to 109 registers, one block per SM fewer). Same arithmetic.
constexpr int kBwdMinBlocks = 4;

// The backward's per-warp shared-memory accumulators [dw | db] of this warp, zeroed.
__device__ __forceinline__ float* zeroed_warp_accumulators(float* s_acc, int warp, int lane, int C) {
  float* acc = s_acc + int64_t(warp) * 2 * C;
  for (int c = lane; c < 2 * C; c += 32) acc[c] = 0.f;
  __syncwarp();
  return acc;
}
// The block's partial row [dw | db]: the warps' accumulators added in warp order.
template <int V>
__device__ __forceinline__ void write_block_partial(float* partial, const float* s_acc, int C) {
  __syncthreads();
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
    const int slot = c < C ? acc_slot<V>(c, C) : C + acc_slot<V>(c - C, C);
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < kBwdWarps; ++k) t += s_acc[int64_t(k) * 2 * C + slot];
    partial[int64_t(blockIdx.x) * 2 * C + c] = t;
  }
}

template <int V>
__global__ void __launch_bounds__(kBwdWarps * 32)
layernorm_backward_kernel(bf16* dinp, float* partial, const bf16* dout, const bf16* inp,
                          const float* w, const float* mean, const float* rstd, int64_t N,
                          int C, bool accumulate) {
  extern __shared__ float s_acc[];  // [kBwdWarps][2 * C]: dw then db, per warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* acc_dw = zeroed_warp_accumulators(s_acc, warp, lane, C);
  float* acc_db = acc_dw + C;
  const int64_t row0 = int64_t(blockIdx.x) * kBwdRows;
  for (int r = warp; r < kBwdRows; r += kBwdWarps) {
    const int64_t n = row0 + r;
    if (n >= N) break;
    const bf16* g = dout + n * C;
    const bf16* x = inp + n * C;
    const float m = mean[n], s = rstd[n];
    float sum_dn = 0.f, sum_dnx = 0.f;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
      float gv[V], xv[V], wv[V];
      load_bf16<V>(gv, g + c0);
      load_bf16<V>(xv, x + c0);
      load_f32<V>(wv, w + c0);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float dn = gv[k] * wv[k];
        sum_dn += dn;
        sum_dnx += dn * ((xv[k] - m) * s);
      }
    }
    const float mean_dn = warp_sum(sum_dn) / C, mean_dnx = warp_sum(sum_dnx) / C;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
      float gv[V], xv[V], wv[V], dx[V];
      load_bf16<V>(gv, g + c0);  // the row is in L1 from the first pass
      load_bf16<V>(xv, x + c0);
      load_f32<V>(wv, w + c0);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float xhat = (xv[k] - m) * s;
        const float dn = gv[k] * wv[k];
        dx[k] = s * (dn - mean_dn - xhat * mean_dnx);
        acc_dw[acc_slot<V>(c0 + k, C)] += xhat * gv[k];
        acc_db[acc_slot<V>(c0 + k, C)] += gv[k];
      }
      if (dinp) {
        if (accumulate) {
          float old[V];
          load_bf16<V>(old, dinp + n * C + c0);
#pragma unroll
          for (int k = 0; k < V; ++k) dx[k] += old[k];
        }
        store_bf16<V>(dinp + n * C + c0, dx);
      }
    }
  }
  if (partial == nullptr) return;  // uniform over the block
  write_block_partial<V>(partial, s_acc, C);
}

// The backward with register rows (see above); the same blocks, accumulators and order as
// layernorm_backward_kernel<8>.
template <int CH>
__global__ void __launch_bounds__(kBwdWarps * 32, CH >= 6 ? kBwdMinBlocks : 0)
layernorm_backward_rows_kernel(bf16* dinp, float* partial, const bf16* dout, const bf16* inp,
                               const float* w, const float* mean, const float* rstd, int64_t N,
                               int C, bool accumulate) {
  extern __shared__ float s_acc[];  // [kBwdWarps][2 * C]: dw then db, per warp
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* acc_dw = zeroed_warp_accumulators(s_acc, warp, lane, C);
  float* acc_db = acc_dw + C;
  const bool add_old = dinp != nullptr && accumulate;
  const int64_t row0 = int64_t(blockIdx.x) * kBwdRows;
  for (int r = warp; r < kBwdRows; r += kBwdWarps) {
    const int64_t n = row0 + r;
    if (n >= N) break;
    uint4 rg[CH], rx[CH], rold[CH];
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c0 = (lane + 32 * j) * 8;
      if (c0 < C) {
        rg[j] = load16(dout + n * C + c0);
        rx[j] = load16(inp + n * C + c0);
        if (add_old) rold[j] = load16(dinp + n * C + c0);
      }
    }
    const float m = mean[n], s = rstd[n];
    float sum_dn = 0.f, sum_dnx = 0.f;
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c0 = (lane + 32 * j) * 8;
      if (c0 >= C) continue;
      float gv[8], xv[8], wv[8];
      unpack8(gv, rg[j]);
      unpack8(xv, rx[j]);
      load_f32<8>(wv, w + c0);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float dn = gv[k] * wv[k];
        sum_dn += dn;
        sum_dnx += dn * ((xv[k] - m) * s);
      }
    }
    const float mean_dn = warp_sum(sum_dn) / C, mean_dnx = warp_sum(sum_dnx) / C;
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c0 = (lane + 32 * j) * 8;
      if (c0 >= C) continue;
      float gv[8], xv[8], wv[8], dx[8];
      unpack8(gv, rg[j]);
      unpack8(xv, rx[j]);
      load_f32<8>(wv, w + c0);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float xhat = (xv[k] - m) * s;
        const float dn = gv[k] * wv[k];
        dx[k] = s * (dn - mean_dn - xhat * mean_dnx);
        acc_dw[acc_slot<8>(c0 + k, C)] += xhat * gv[k];
        acc_db[acc_slot<8>(c0 + k, C)] += gv[k];
      }
      if (dinp) {
        if (add_old) {
          float old[8];
          unpack8(old, rold[j]);
#pragma unroll
          for (int k = 0; k < 8; ++k) dx[k] += old[k];
        }
        store_bf16<8>(dinp + n * C + c0, dx);
      }
    }
  }
  if (partial == nullptr) return;  // uniform over the block
  write_block_partial<8>(partial, s_acc, C);
}

std::atomic<bool> g_force_loop{false};

// Vectors per lane for the register-row kernels: 0 = use the loop kernels.
int row_chunks(int C) {
  if (g_force_loop.load(std::memory_order_relaxed)) return 0;
  const int64_t v = ceil_div(C, 256);
  return v <= 4 ? int(v) : v <= 6 ? 6 : v <= 8 ? 8 : 0;
}

int64_t backward_blocks(int64_t N) { return ceil_div(N, kBwdRows); }

void launch_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                    const bf16* b, const float* w, const float* bias, int64_t N, int C,
                    cudaStream_t stream) {
  if (N == 0) return;
  const size_t smem = size_t(kWarpsPerBlock) * C * sizeof(float);
  const unsigned blocks = unsigned(ceil_div(N, kWarpsPerBlock));
  const bool vec = C % 8 == 0 && aligned16(a) && aligned16(out) && aligned16(w) && aligned16(bias) &&
                   (b == nullptr || (aligned16(b) && aligned16(residual)));
  auto launch = [&](auto kernel) {
    if (smem > 48 * 1024)
      BRAID_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<blocks, kWarpsPerBlock * 32, smem, stream>>>(residual, out, mean, rstd, a, b, w, bias, N, C);
    BRAID_CHECK_LAUNCH();
  };
  if (vec) {
    auto rows = [&](auto kernel) {  // no shared memory
      kernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(residual, out, mean, rstd, a, b, w, bias, N, C);
      BRAID_CHECK_LAUNCH();
    };
    switch (row_chunks(C)) {
      case 1: return rows(layernorm_forward_rows_kernel<1>);
      case 2: return rows(layernorm_forward_rows_kernel<2>);
      case 3: return rows(layernorm_forward_rows_kernel<3>);
      case 4: return rows(layernorm_forward_rows_kernel<4>);
      case 6: return rows(layernorm_forward_rows_kernel<6>);
      case 8: return rows(layernorm_forward_rows_kernel<8>);
      default: return launch(layernorm_forward_kernel<8>);
    }
  }
  launch(layernorm_forward_kernel<1>);
}

}  // namespace

void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd,
                                const bf16* a, const bf16* b, const float* w,
                                const float* bias, int64_t N, int C, cudaStream_t stream) {
  BRAID_CHECK(b != nullptr && residual != nullptr,
              "residual_layernorm_forward needs a, b and residual");
  launch_forward(residual, out, mean, rstd, a, b, w, bias, N, C, stream);
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const float* w,
                       const float* bias, int64_t N, int C, cudaStream_t stream) {
  launch_forward(nullptr, out, mean, rstd, inp, nullptr, w, bias, N, C, stream);
}

void layernorm_force_loop_kernels(bool on) { g_force_loop.store(on); }

size_t layernorm_backward_scratch_bytes(int64_t N, int C) {
  return size_t(backward_blocks(N)) * 2 * size_t(C) * sizeof(float);
}

void layernorm_backward(bf16* dinp, float* dw, float* db, void* scratch, const bf16* dout,
                        const bf16* inp, const float* w, const float* mean, const float* rstd,
                        int64_t N, int C, bool accumulate, cudaStream_t stream, bool overwrite_params) {
  if (N == 0 || (!dinp && !dw && !db)) {  // sums over no rows: an overwrite writes zeros
    if (overwrite_params && dw) BRAID_CHECK_CUDA(cudaMemsetAsync(dw, 0, size_t(C) * sizeof(float), stream));
    if (overwrite_params && db) BRAID_CHECK_CUDA(cudaMemsetAsync(db, 0, size_t(C) * sizeof(float), stream));
    return;
  }
  const bool params = dw || db;
  BRAID_CHECK(!params || scratch != nullptr,
              "layernorm_backward needs scratch (layernorm_backward_scratch_bytes)");
  float* partial = params ? static_cast<float*>(scratch) : nullptr;
  const size_t smem = size_t(kBwdWarps) * 2 * C * sizeof(float);
  BRAID_CHECK(smem <= 227 * 1024, "layernorm_backward: C = " << C << " is more than supported");
  const unsigned blocks = unsigned(backward_blocks(N));
  const bool vec = C % 8 == 0 && aligned16(dout) && aligned16(inp) && aligned16(w) &&
                   (dinp == nullptr || aligned16(dinp));
  auto launch = [&](auto kernel) {
    if (smem > 48 * 1024)
      BRAID_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(smem)));
    kernel<<<blocks, kBwdWarps * 32, smem, stream>>>(dinp, partial, dout, inp, w, mean, rstd, N,
                                                     C, accumulate);
    BRAID_CHECK_LAUNCH();
  };
  if (vec) {
    switch (row_chunks(C)) {
      case 1: launch(layernorm_backward_rows_kernel<1>); break;
      case 2: launch(layernorm_backward_rows_kernel<2>); break;
      case 3: launch(layernorm_backward_rows_kernel<3>); break;
      case 4: launch(layernorm_backward_rows_kernel<4>); break;
      case 6: launch(layernorm_backward_rows_kernel<6>); break;
      case 8: launch(layernorm_backward_rows_kernel<8>); break;
      default: launch(layernorm_backward_kernel<8>); break;
    }
  } else {
    launch(layernorm_backward_kernel<1>);
  }
  if (params) column_finalize(dw, db, C, partial, blocks, 2 * C, stream, overwrite_params);
}

}  // namespace braid::cuda
