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

// Where column c of a row lives in a warp's shared-memory row (forward loop kernel): with
// V = 8 a lane owns 8 consecutive columns, so they are stored k-major (column c0 + k at
// k * C/8 + c0/8) and the lanes of a warp touch consecutive words (no bank conflicts).
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

// Backward: one block per row at a time, kBwdRows consecutive rows per block, in order.
// Thread t of a block of TPR threads (C / 8 / VPT rounded up to whole warps) owns the
// columns (v * TPR + t) * 8 + k (v < VPT, k < 8): 16-byte vectors, adjacent threads on
// adjacent vectors. Rows arrive through a ring of S shared-memory stages [dout | inp |
// dinp], filled by cp.async S - 1 rows ahead: each thread copies and later reads only its
// own vectors, so a stage needs no barrier, and the copies are in flight whatever the
// register allocator does (the previous kernel held rows in registers, 16 warps an SM at
// 1.5B, 52-60% of copy; a register prefetch of the next row was slower still: ptxas sank
// the loads). Per row: the two row means of the CPU op, as sums times 1 / C (a thread's
// elements in (v, k) order, a warp butterfly, then the warps' sums in warp order through
// shared memory, one barrier), then dx = rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) with
// dnorm = dout * w, written (or added) to dinp, while xhat * dout and dout are added in
// row order into the thread's registers for dw and db. At the end each thread writes its
// columns of the block's partial row [dw | db] (SUM: [dw | db | ds], ds the column sums
// of the bf16 dinp rows as written: the bias gradient of the linear layer whose output
// gradient dinp is, without a pass of its own); column_finalize sums the partials over
// blocks in order. The bits and the partial rows depend on C and N only (not the device).
// VEC = false (C % 8 != 0 or unaligned rows): the same kernel with element loads into the
// stages, so its bits equal the vector form's (asserted in test_cuda_ops).
constexpr int kBwdRows = 16;
constexpr int kBwdMaxThreads = 512;

// Columns of a stage's array: C rounded up to whole 16-byte vectors.
__host__ __device__ __forceinline__ int bwd_width(int C) { return (C + 7) / 8 * 8; }
template <int VPT>
__host__ __device__ constexpr int bwd_stages() { return VPT == 1 ? 4 : 2; }
template <int VPT>
size_t bwd_smem_bytes(int C) { return size_t(bwd_stages<VPT>()) * 3 * bwd_width(C) * sizeof(bf16); }

// The 8 weights of a vector (zeros beyond C).
template <bool VEC>
__device__ __forceinline__ void load_weights(float (&wv)[8], const float* w, int c0, int C) {
  if constexpr (VEC) {
    load_f32<8>(wv, w + c0);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) wv[k] = c0 + k < C ? w[c0 + k] : 0.f;
  }
}

// This thread's vector at c0 of row `src` into `dst` (zeros beyond C).
template <bool VEC>
__device__ __forceinline__ void fetch_vec(bf16* dst, const bf16* src, int c0, int C) {
  if constexpr (VEC) {
    cp_async_16(dst + c0, src + c0, true);
  } else {
    uint4 raw = make_uint4(0, 0, 0, 0);
    bf16* h = reinterpret_cast<bf16*>(&raw);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c0 + k < C) h[k] = src[c0 + k];
    *reinterpret_cast<uint4*>(dst + c0) = raw;
  }
}

template <int VPT, bool VEC, bool SUM>
__global__ void __launch_bounds__(kBwdMaxThreads)
layernorm_backward_kernel(bf16* dinp, float* partial, const bf16* dout, const bf16* inp,
                          const float* w, const float* mean, const float* rstd, int64_t N,
                          int C, bool accumulate) {
  constexpr int S = bwd_stages<VPT>();
  extern __shared__ __align__(16) unsigned char bwd_smem[];
  __shared__ float2 red[2][kBwdMaxThreads / 32];  // [row parity][warp]: sum dn, sum dn * xhat
  __shared__ float stats[2][kBwdRows];             // the block's rows' mean and rstd
  bf16* ring = reinterpret_cast<bf16*>(bwd_smem);  // [S][dout | inp | dinp][W]
  const int t = threadIdx.x, TPR = blockDim.x, warp = t >> 5, lane = t & 31, warps = TPR >> 5;
  const int W = bwd_width(C);
  const int64_t row0 = int64_t(blockIdx.x) * kBwdRows;
  const int rows = int(min(int64_t(kBwdRows), N - row0));
  const bf16* old = dinp != nullptr && accumulate ? dinp : nullptr;
  auto fetch = [&](int r) {  // row r of the block into stage r % S
    bf16* st = ring + size_t(r % S) * 3 * W;
    const int64_t n = row0 + r;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int c0 = (v * TPR + t) * 8;
      if (c0 >= C) continue;
      fetch_vec<VEC>(st, dout + n * C, c0, C);
      fetch_vec<VEC>(st + W, inp + n * C, c0, C);
      if (old) fetch_vec<VEC>(st + 2 * W, old + n * C, c0, C);
    }
  };
#pragma unroll
  for (int r = 0; r < S - 1; ++r) {
    if (r < rows) fetch(r);
    cp_async_commit();
  }
  if (t < rows) {
    stats[0][t] = mean[row0 + t];
    stats[1][t] = rstd[row0 + t];
  }
  __syncthreads();
  float acc_dw[VPT][8], acc_db[VPT][8], wv[VPT][8];  // wv: this thread's weights (0 beyond C)
  float acc_ds[SUM ? VPT : 1][8];                      // SUM: the column sums of dinp
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int c0 = (v * TPR + t) * 8;
    if (c0 < C) load_weights<VEC>(wv[v], w, c0, C);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc_dw[v][k] = acc_db[v][k] = 0.f;
    if constexpr (SUM) {
#pragma unroll
      for (int k = 0; k < 8; ++k) acc_ds[v][k] = 0.f;
    }
  }
  const float inv_c = 1.f / float(C);
#pragma unroll 1
  for (int r = 0; r < rows; ++r) {
    if (r + S - 1 < rows) fetch(r + S - 1);  // into the stage of row r - 1, read last time
    cp_async_commit();
    cp_async_wait<S - 1>();  // row r's copies (this thread's own) have landed
    const bf16* st = ring + size_t(r % S) * 3 * W;
    const float m = stats[0][r], s = stats[1][r];
    float sum_dn = 0.f, sum_dnx = 0.f;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int c0 = (v * TPR + t) * 8;
      if (c0 >= C) continue;
      float g[8], x[8];
      unpack8(g, load16(st + c0));
      unpack8(x, load16(st + W + c0));
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        if (!VEC && c0 + k >= C) continue;  // VEC: C % 8 == 0, whole vectors
        const float dn = g[k] * wv[v][k];
        sum_dn += dn;
        sum_dnx += dn * ((x[k] - m) * s);
      }
    }
    sum_dn = warp_sum(sum_dn);
    sum_dnx = warp_sum(sum_dnx);
    if (lane == 0) red[r & 1][warp] = make_float2(sum_dn, sum_dnx);
    __syncthreads();  // (the other parity's slots, read last row, are free: one barrier a row)
    float tot_dn = 0.f, tot_dnx = 0.f;
    for (int k = 0; k < warps; ++k) {
      const float2 p = red[r & 1][k];
      tot_dn += p.x;
      tot_dnx += p.y;
    }
    const float mean_dn = tot_dn * inv_c, mean_dnx = tot_dnx * inv_c;
    bf16* drow = dinp + (row0 + r) * C;
#pragma unroll
    for (int v = 0; v < VPT; ++v) {
      const int c0 = (v * TPR + t) * 8;
      if (c0 >= C) continue;
      float g[8], x[8], dx[8], od[8];
      unpack8(g, load16(st + c0));
      unpack8(x, load16(st + W + c0));
      if (old) unpack8(od, load16(st + 2 * W + c0));
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float xhat = (x[k] - m) * s;
        const float dn = g[k] * wv[v][k];
        dx[k] = s * (dn - mean_dn - xhat * mean_dnx);
        if (old) dx[k] += od[k];
        acc_dw[v][k] += xhat * g[k];
        acc_db[v][k] += g[k];
        if constexpr (SUM) acc_ds[v][k] += to_float(to_bf16(dx[k]));  // the value stored
      }
      if (dinp == nullptr) continue;
      if constexpr (VEC) {
        store_bf16<8>(drow + c0, dx);
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k)
          if (c0 + k < C) drow[c0 + k] = to_bf16(dx[k]);
      }
    }
  }
  if (partial == nullptr) return;
  float* prow = partial + int64_t(blockIdx.x) * (SUM ? 3 : 2) * C;
  auto put = [&](float* dst, const float (&a)[8], int c0) {
    if constexpr (VEC) {  // 32 contiguous bytes per thread (C % 8 == 0: 16-byte aligned)
      float4* p = reinterpret_cast<float4*>(dst + c0);
      p[0] = make_float4(a[0], a[1], a[2], a[3]);
      p[1] = make_float4(a[4], a[5], a[6], a[7]);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (c0 + k < C) dst[c0 + k] = a[k];
    }
  };
#pragma unroll
  for (int v = 0; v < VPT; ++v) {
    const int c0 = (v * TPR + t) * 8;
    if (c0 >= C) continue;
    put(prow, acc_dw[v], c0);
    put(prow + C, acc_db[v], c0);
    if constexpr (SUM) put(prow + 2 * C, acc_ds[v], c0);
  }
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

size_t layernorm_backward_scratch_bytes(int64_t N, int C) {  // room for [dw | db | ds]
  return size_t(backward_blocks(N)) * 3 * size_t(C) * sizeof(float);
}

void layernorm_backward(bf16* dinp, float* dw, float* db, void* scratch, const bf16* dout,
                        const bf16* inp, const float* w, const float* mean, const float* rstd,
                        int64_t N, int C, bool accumulate, cudaStream_t stream, bool overwrite_params,
                        float* dsum, bool overwrite_dsum) {
  BRAID_CHECK(dsum == nullptr || dinp != nullptr, "layernorm_backward: the column sums of dinp need dinp");
  if (N == 0 || (!dinp && !dw && !db)) {  // sums over no rows: an overwrite writes zeros
    if (overwrite_params && dw) BRAID_CHECK_CUDA(cudaMemsetAsync(dw, 0, size_t(C) * sizeof(float), stream));
    if (overwrite_params && db) BRAID_CHECK_CUDA(cudaMemsetAsync(db, 0, size_t(C) * sizeof(float), stream));
    if (overwrite_dsum && dsum) BRAID_CHECK_CUDA(cudaMemsetAsync(dsum, 0, size_t(C) * sizeof(float), stream));
    return;
  }
  const bool sum = dsum != nullptr;
  const bool params = dw || db || sum;
  BRAID_CHECK(!params || scratch != nullptr,
              "layernorm_backward needs scratch (layernorm_backward_scratch_bytes)");
  BRAID_CHECK(C > 0, "layernorm_backward: C = " << C);
  float* partial = params ? static_cast<float*>(scratch) : nullptr;
  // Vectors per thread: one while a row fits kBwdMaxThreads threads (C <= 4096), else 2 or 4.
  const int64_t vectors = ceil_div(C, 8);
  const int vpt = vectors <= kBwdMaxThreads ? 1 : vectors <= 2 * kBwdMaxThreads ? 2 : 4;
  BRAID_CHECK(vectors <= 4 * kBwdMaxThreads,
              "layernorm_backward: C = " << C << " is more than supported (" << 32 * kBwdMaxThreads << ")");
  const unsigned threads = unsigned(ceil_div(ceil_div(vectors, vpt), 32) * 32);
  const unsigned blocks = unsigned(backward_blocks(N));
  const bool vec = !g_force_loop.load(std::memory_order_relaxed) && C % 8 == 0 && aligned16(dout) &&
                   aligned16(inp) && aligned16(w) && (dinp == nullptr || aligned16(dinp)) &&
                   (partial == nullptr || aligned16(partial));  // float4 partial writes
  static const int optin = [] {  // the device's shared memory per block (opt-in), asked once
    int dev = 0, v = 0;
    BRAID_CHECK_CUDA(cudaGetDevice(&dev));
    BRAID_CHECK_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  auto launch = [&](auto kernel, size_t smem) {
    BRAID_CHECK(smem + 1024 <= size_t(optin), "layernorm_backward: C = " << C << " needs " << smem / 1024
                                               << " KiB of shared memory per block; this GPU allows "
                                               << optin / 1024 << " KiB");
    if (smem > 40 * 1024)  // (the static shared memory counts against the 48 KB default too)
      BRAID_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<blocks, threads, smem, stream>>>(dinp, partial, dout, inp, w, mean, rstd, N, C, accumulate);
    BRAID_CHECK_LAUNCH();
  };
  auto pick = [&](auto with_sum) {
    constexpr bool S = decltype(with_sum)::value;
    switch (vpt * 2 + (vec ? 1 : 0)) {
      case 2: launch(layernorm_backward_kernel<1, false, S>, bwd_smem_bytes<1>(C)); break;
      case 3: launch(layernorm_backward_kernel<1, true, S>, bwd_smem_bytes<1>(C)); break;
      case 4: launch(layernorm_backward_kernel<2, false, S>, bwd_smem_bytes<2>(C)); break;
      case 5: launch(layernorm_backward_kernel<2, true, S>, bwd_smem_bytes<2>(C)); break;
      case 8: launch(layernorm_backward_kernel<4, false, S>, bwd_smem_bytes<4>(C)); break;
      default: launch(layernorm_backward_kernel<4, true, S>, bwd_smem_bytes<4>(C)); break;
    }
  };
  if (sum) pick(std::true_type{});
  else pick(std::false_type{});
  if (!params) return;
  ColumnDsts dst{{dw, db, dsum}, C, (overwrite_params ? 3u : 0u) | (overwrite_dsum ? 4u : 0u)};
  column_finalize(dst, partial, blocks, (sum ? 3 : 2) * C, stream);
}

}  // namespace braid::cuda
