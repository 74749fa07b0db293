// Small device helpers shared by the kernels of ops/cuda/: grid sizing, warp reductions in
// a fixed order (butterfly shuffles: every lane ends with the same, order-determined sum),
// bf16 conversions, and the Ampere/Hopper warp-level primitives (cp.async, ldmatrix,
// mma.sync m16n8k16 bf16) that the attention kernels are built from.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for an elementwise grid-stride loop: enough to fill the device several times over,
// a fixed cap so that the block count never depends on the device (determinism is not at
// stake for elementwise ops, but the same rule everywhere is easier to reason about).
inline unsigned elementwise_blocks(int64_t n, int threads) {
  int64_t b = ceil_div(n, threads);
  if (b > 65536) b = 65536;
  return unsigned(b < 1 ? 1 : b);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `shared` holds 32 values. Fixed order: lanes by butterfly, then
// warps by butterfly over the per-warp sums.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : T(0);
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// Two floats as a bf16x2 register: `lo` in the low half (the lower column of an mma
// fragment), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- V consecutive elements as one access (V = 8: 16 bytes of bf16; V = 1: a scalar) ------
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// 8 bf16 values held in one 16-byte register vector, as floats.
__device__ __forceinline__ void unpack8(float (&v)[8], const uint4& raw) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(h[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}
template <int V>
__device__ __forceinline__ void load_bf16(float (&v)[V], const bf16* p) {
  if constexpr (V == 8) {
    unpack8(v, *reinterpret_cast<const uint4*>(p));
  } else {
    v[0] = __bfloat162float(*p);
  }
}
template <int V>
__device__ __forceinline__ void store_bf16(bf16* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
    *p = __float2bfloat16_rn(v[0]);
  }
}
template <int V>
__device__ __forceinline__ void load_f32(float (&v)[V], const float* p) {
  if constexpr (V == 8) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z,
    v[7] = b.w;
  } else {
    v[0] = *p;
  }
}

// ---- Asynchronous global->shared copies (sm_80+) -------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// Copies 16 bytes, or writes 16 zero bytes when `valid` is false (src is then not read,
// but must still be a mapped address).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)),
               "l"(gmem_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  // "memory": no shared-memory read is moved above the wait (the layernorm backward reads
  // its own copies right after it, with no barrier between).
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- Tensor-core fragments (mma.sync m16n8k16, bf16 inputs, fp32 accumulators) ---------
// Fragment layout, g = lane / 4, q = lane % 4:
//   A 16x16 (row-major): a[0] = rows g, cols 2q..2q+1; a[1] = rows g+8, cols 2q..;
//                        a[2] = rows g, cols 2q+8..; a[3] = rows g+8, cols 2q+8..
//   B 16x8 (k x n):      b[0] = k 2q..2q+1, col n = g; b[1] = k 2q+8..2q+9, col g
//   C 16x8 (fp32):       c[0..1] = row g, cols 2q, 2q+1; c[2..3] = row g+8, same cols
// ldmatrix.x4 loads four 8x8 bf16 matrices; lane l supplies the address of row (l % 8) of
// matrix (l / 8), and receives in register j the elements (row g, cols 2q..2q+1) of matrix
// j (with .trans, of the transposed matrix).

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}
// c += a * b
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4],
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace braid::cuda
