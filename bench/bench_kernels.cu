// Timings of Braid's CUDA kernels at GPT-2 shapes on one GPU: 124M (B = 16, T = 1024,
// C = 768, NH = 12, HS = 64, V = 50304) or 1.5B (B = 8, C = 1600, NH = 25): the GEMMs through cuBLASLt, causal attention
// (Braid's flash kernels and cuDNN's), and the memory-bound kernels. Inputs are random (never
// zeros: zeros run faster than real data). Each case: 3 warm-up launches, then 20 timed
// with CUDA events one by one; the median is reported, with TFLOP/s and the fraction of the
// bf16 matrix peak measured on this workplace's H200 (about 790 TFLOP/s), or GB/s for the
// memory-bound kernels (bytes counted: each input read once, each output written once),
// also as a fraction of a device-to-device copy measured first (the bandwidth ceiling).
//
// Usage: bench_kernels [--shape 124m|1.5b] [--no-cudnn]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_util.cuh"
#include "ops/cuda/column_reduce.cuh"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/runtime.h"
#include "ops/device_memory.h"

using namespace braid;
using namespace braid::cuda;

namespace {

constexpr double kPeakTflops = 790.0;
double g_copy_gbs = 0;  // measured device-to-device copy bandwidth (read + write), GB/s

__global__ void fill_f32_kernel(float* x, int64_t n, uint32_t seed, float scale, float offset) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    x[i] = (float(h & 0xFFFFFF) / float(0x1000000) - 0.5f) * scale + offset;
  }
}

bf16* random_bf16(int64_t n, uint32_t seed, float scale = 2.f) {
  auto* p = static_cast<bf16*>(device_alloc(size_t(n) * sizeof(bf16)));
  bench::fill_bf16_kernel<<<4096, 256>>>(p, n, seed, scale);
  BRAID_CHECK_LAUNCH();
  return p;
}
float* random_f32(int64_t n, uint32_t seed, float scale = 2.f, float offset = 0.f) {
  auto* p = static_cast<float*>(device_alloc(size_t(n) * sizeof(float)));
  fill_f32_kernel<<<4096, 256>>>(p, n, seed, scale, offset);
  BRAID_CHECK_LAUNCH();
  return p;
}

using bench::median_ms;

void report_flops(const std::string& name, double ms, double flops) {
  const double tflops = flops / (ms * 1e-3) / 1e12;
  std::printf("%-44s %9.3f ms %8.1f TFLOP/s  %5.1f%% of peak\n", name.c_str(), ms, tflops,
              100.0 * tflops / kPeakTflops);
}
void report_bytes(const std::string& name, double ms, double bytes) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("%-44s %9.3f ms %8.1f GB/s  %5.1f%% of copy\n", name.c_str(), ms, gbs,
              g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  bool use_cudnn = true;
  std::string shape = "124m";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-cudnn") == 0) use_cudnn = false;
    else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc) shape = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_kernels [--shape 124m|1.5b] [--no-cudnn]\n");
      return 2;
    }
  }
  if (shape != "124m" && shape != "1.5b") {
    std::fprintf(stderr, "bench_kernels: --shape must be 124m or 1.5b\n");
    return 2;
  }
  try {
    CudaContext ctx(0);
    cudaStream_t st = ctx.compute_stream();
    const GemmHandle gemm = ctx.gemm();
    std::printf("device: %s, %d SMs\n", ctx.properties().name, ctx.properties().multiProcessorCount);
    const bool big = shape == "1.5b";
    const int B = big ? 8 : 16, T = 1024, C = big ? 1600 : 768, NH = big ? 25 : 12, HS = 64, V = 50304;
    const int L = big ? 48 : 12;
    const int64_t N = int64_t(B) * T;
    std::printf("shape: GPT-2 %s, B=%d T=%d C=%d NH=%d HS=%d V=%d\n", shape.c_str(), B, T, C, NH, HS, V);
    {  // the ceiling of the memory-bound kernels: a 2 GiB device-to-device copy
      const size_t bytes = size_t(1) << 31;
      void* src = device_alloc(bytes);
      void* dst = device_alloc(bytes);
      BRAID_CHECK_CUDA(cudaMemsetAsync(src, 1, bytes, st));
      const double ms = median_ms([&] { BRAID_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st)); }, st);
      g_copy_gbs = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
      std::printf("%-44s %9.3f ms %8.1f GB/s (read + write): the memory-bound ceiling\n", "device copy 2 GiB", ms,
                  g_copy_gbs);
      device_free(src);
      device_free(dst);
    }

    // ---- GEMMs: forward, dinp and dw of each linear layer of a block, and the LM head.
    struct Linear {
      const char* name;
      int IC, OC;
      bool gelu;
    };
    for (const Linear l : {Linear{"qkv C->3C", C, 3 * C, false},
                           Linear{"attn_proj C->C", C, C, false},
                           Linear{"fc C->4C +gelu", C, 4 * C, true},
                           Linear{"fc_proj 4C->C", 4 * C, C, false},
                           Linear{"lm_head C->V", C, V, false}}) {
      bf16* inp = random_bf16(N * l.IC, 1);
      bf16* w = random_bf16(int64_t(l.OC) * l.IC, 2, 0.1f);
      float* bias = l.OC == V ? nullptr : random_f32(l.OC, 3);
      bf16* out = random_bf16(N * l.OC, 4);
      bf16* pre = l.gelu ? random_bf16(N * l.OC, 5) : nullptr;
      float* dw = random_f32(int64_t(l.OC) * l.IC, 6);
      bf16* dinp = random_bf16(N * l.IC, 7);
      const double flops = 2.0 * double(N) * l.IC * l.OC;
      report_flops(std::string("matmul fwd ") + l.name,
                   median_ms([&] { matmul_forward(gemm, out, pre, inp, w, bias, N, l.IC, l.OC,
                                                  l.gelu, st); }, st),
                   flops);
      std::printf("    (bias/gelu epilogue path %d: 0 none, 1 fused, 2 fused bf16 bias, 3 second pass)\n",
                  int(matmul_last_epilogue_path()));
      report_flops(std::string("matmul dinp ") + l.name,
                   median_ms([&] { matmul_backward(gemm, dinp, nullptr, nullptr, nullptr, out, inp,
                                                   w, N, l.IC, l.OC, false, st); }, st),
                   flops);
      report_flops(std::string("matmul dw ") + l.name,
                   median_ms([&] { matmul_backward(gemm, nullptr, dw, nullptr, nullptr, out, inp,
                                                   w, N, l.IC, l.OC, false, st); }, st),
                   flops);
      if (bias) {
        // The dW GEMM with the bias gradient (bias_backward's pass over dout) and the pass alone.
        float* dbias = random_f32(l.OC, 8);
        void* bscratch = device_alloc(bias_backward_scratch_bytes(N, l.OC));
        report_flops(std::string("matmul dw + bias grad ") + l.name,
                     median_ms([&] { matmul_backward(gemm, nullptr, dw, dbias, bscratch, out, inp,
                                                     w, N, l.IC, l.OC, false, st); }, st),
                     flops);
        report_bytes(std::string("  bias grad alone ") + l.name,
                     median_ms([&] { bias_backward(dbias, bscratch, out, N, l.OC, st); }, st),
                     double(N) * l.OC * 2);
        device_free(dbias);
        device_free(bscratch);
      }
      if (std::string(l.name).rfind("fc_proj", 0) == 0) {
        // The MLP's second layer backward: dinp through GELU' in the epilogue (pre = GELU's input).
        bf16* pre_in = random_bf16(N * l.IC, 9);
        report_flops(std::string("matmul dinp + dGELU ") + l.name,
                     median_ms([&] { matmul_backward_dgelu(gemm, dinp, nullptr, nullptr, nullptr, out, inp, w,
                                                           pre_in, N, l.IC, l.OC, st); }, st),
                     flops);
        std::printf("    (dGELU path %d: 1 fused, 3 second pass)\n", int(matmul_last_dgelu_path()));
        device_free(pre_in);
      }
      for (void* p : {(void*)inp, (void*)w, (void*)bias, (void*)out, (void*)pre, (void*)dw,
                      (void*)dinp})
        device_free(p);
    }

    // ---- Attention (B, T, NH, HS of the shape); causal flops: half of the full products.
    {
      bf16* qkv = random_bf16(N * 3 * C, 8);
      bf16* out = random_bf16(N * C, 9);
      bf16* dout = random_bf16(N * C, 10);
      bf16* dqkv = random_bf16(N * 3 * C, 11);
      float* lse = random_f32(int64_t(B) * NH * T, 12);
      void* scratch = device_alloc(attention_backward_scratch_bytes(B, T, NH));
      const double fwd_flops = 4.0 * B * NH * double(T) * T * HS / 2;
      const double bwd_flops = 2.5 * fwd_flops;  // five products instead of two
      report_flops("attention fwd (braid flash)",
                   median_ms([&] { attention_forward(out, lse, qkv, B, T, NH, HS, st); }, st),
                   fwd_flops);
      report_flops("attention bwd (braid flash, 2 kernels)",
                   median_ms([&] { attention_backward(dqkv, scratch, dout, qkv, out, lse, B, T, NH,
                                                      HS, false, st); }, st),
                   bwd_flops);
      if (use_cudnn) {
        try {
          CudnnAttention attn(ctx.cudnn());
          report_flops("attention fwd (cuDNN)",
                       median_ms([&] { attn.forward(out, lse, qkv, B, T, NH, HS, st); }, st),
                       fwd_flops);
          report_flops("attention bwd (cuDNN)",
                       median_ms([&] { attn.backward(dqkv, dout, qkv, out, lse, B, T, NH, HS, st); },
                                 st),
                       bwd_flops);
        } catch (const std::exception& e) {
          std::printf("cuDNN attention unavailable: %s\n", e.what());
        }
      }
      for (void* p : {(void*)qkv, (void*)out, (void*)dout, (void*)dqkv, (void*)lse, scratch})
        device_free(p);
    }

    // ---- Memory-bound kernels.
    {
      bf16* a = random_bf16(N * C, 13);
      bf16* b = random_bf16(N * C, 14);
      bf16* res = random_bf16(N * C, 15);
      bf16* out = random_bf16(N * C, 16);
      float* w = random_f32(C, 17, 0.5f, 1.f);
      float* bias = random_f32(C, 18);
      float* mean = random_f32(N, 19);
      float* rstd = random_f32(N, 20, 0.1f, 1.f);
      float* dw = random_f32(C, 21);
      float* db = random_f32(C, 22);
      void* scratch = device_alloc(layernorm_backward_scratch_bytes(N, C));
      const double act = double(N) * C * 2;  // bytes of one bf16 activation
      report_bytes("residual+layernorm fwd",
                   median_ms([&] { residual_layernorm_forward(res, out, mean, rstd, a, b, w, bias,
                                                              N, C, st); }, st),
                   4 * act);
      report_bytes("layernorm bwd (dinp accumulate, dw, db)",
                   median_ms([&] { layernorm_backward(b, dw, db, scratch, a, res, w, mean, rstd, N,
                                                      C, true, st); }, st),
                   4 * act);
      // Its two parts: the row pass alone (no partial sums written) and the column pass
      // over the per-block partials [blocks, 2C] f32 (bytes: the partials read).
      report_bytes("  layernorm bwd row pass only (no dw, db)",
                   median_ms([&] { layernorm_backward(b, nullptr, nullptr, scratch, a, res, w, mean, rstd,
                                                      N, C, true, st); }, st),
                   4 * act);
      {
        const int64_t partial_rows = int64_t(layernorm_backward_scratch_bytes(N, C) / (3 * C * sizeof(float)));
        report_bytes("  column sums of the per-block partials",
                     median_ms([&] { column_finalize(ColumnDsts{{dw, db, nullptr}, C, 0u},
                                                     static_cast<const float*>(scratch), partial_rows, 2 * C, st); },
                               st),
                     double(partial_rows) * 2 * C * 4);
        report_bytes("  column sums of [dw | db | ds] partials (3C)",
                     median_ms([&] { column_finalize(ColumnDsts{{dw, db, nullptr}, C, 0u},
                                                     static_cast<const float*>(scratch), partial_rows, 3 * C, st); },
                               st),
                     double(partial_rows) * 3 * C * 4);
      }
      // With the column sums of dinp (the attention projection's bias gradient, which
      // otherwise is a pass over dinp of its own, `bias grad alone` above).
      {
        float* ds = random_f32(C, 34);
        report_bytes("layernorm bwd + column sums of dinp (fused bias grad)",
                     median_ms([&] { layernorm_backward(b, dw, db, scratch, a, res, w, mean, rstd, N, C, true, st,
                                                        false, ds); }, st),
                     4 * act);
        device_free(ds);
      }
      bf16* h = random_bf16(N * 4 * C, 23);
      bf16* g = random_bf16(N * 4 * C, 24);
      report_bytes("gelu fwd (N x 4C)",
                   median_ms([&] { gelu_forward(g, h, N * 4 * C, st); }, st), 8 * act);
      report_bytes("gelu bwd in place (N x 4C)",
                   median_ms([&] { gelu_backward(g, h, g, N * 4 * C, false, st); }, st), 12 * act);
      float* dbias = random_f32(4 * C, 33);
      void* bscratch = device_alloc(bias_backward_scratch_bytes(N, 4 * C));
      report_bytes("bias grad (N x 4C)",
                   median_ms([&] { bias_backward(dbias, bscratch, g, N, 4 * C, st); }, st),
                   4 * act);
      device_free(dbias);
      device_free(bscratch);
      for (void* p : {(void*)a, (void*)b, (void*)res, (void*)out, (void*)w, (void*)bias,
                      (void*)mean, (void*)rstd, (void*)dw, (void*)db, scratch, (void*)h, (void*)g})
        device_free(p);
    }
    {
      bf16* logits = random_bf16(N * V, 25, 8.f);
      int32_t* targets = static_cast<int32_t*>(device_alloc(N * sizeof(int32_t)));
      BRAID_CHECK_CUDA(cudaMemsetAsync(targets, 0, N * sizeof(int32_t), st));
      float* mx = random_f32(N, 26);
      float* sum = random_f32(N, 27, 1.f, 100.f);
      const double lb = double(N) * V * 2;
      report_bytes("xent local max (N x 50304)",
                   median_ms([&] { xent_local_max(mx, logits, N, V, 0, 50257, st); }, st), lb);
      report_bytes("xent local sumexp",
                   median_ms([&] { xent_local_sumexp(sum, logits, mx, N, V, 0, 50257, st); }, st),
                   lb);
      {
        float* mx2 = random_f32(N, 28);
        float* sum2 = random_f32(N, 29);
        report_bytes("xent local stats (max + sumexp, one pass)",
                     median_ms([&] { xent_local_stats(mx2, sum2, logits, N, V, 0, 50257, st); }, st), lb);
        device_free(mx2);
        device_free(sum2);
      }
      {
        float* mx2 = random_f32(N, 28);
        float* sum2 = random_f32(N, 29);
        float* loss = random_f32(N, 30);
        report_bytes("xent fused (stats, loss, backward in place; TP1)",
                     median_ms([&] { xent_fused(loss, mx2, sum2, logits, logits, targets, N, V, 50257, 1.f / N, st); },
                               st),
                     2 * lb);
        for (void* p : {(void*)mx2, (void*)sum2, (void*)loss}) device_free(p);
      }
      report_bytes("xent backward in place",
                   median_ms([&] { xent_backward(logits, logits, targets, mx, sum, N, V, 0, 50257,
                                                 1.f / N, st); }, st),
                   2 * lb);
      for (void* p : {(void*)logits, (void*)targets, (void*)mx, (void*)sum}) device_free(p);
    }
    {
      // Every parameter of the model (vocabulary padded, tied embedding once).
      const int64_t P = int64_t(V) * C + int64_t(T) * C + int64_t(L) * (12LL * C * C + 13LL * C) + 2LL * C;
      float* p = random_f32(P, 28), *gr = random_f32(P, 29), *m = random_f32(P, 30);
      float* v = random_f32(P, 31, 0.01f, 0.01f);
      bf16* pb = random_bf16(P, 32);
      ParamSegment seg{0, P, 1};
      ParamSegment* d_seg = static_cast<ParamSegment*>(device_alloc(sizeof(seg)));
      device_copy(d_seg, true, &seg, false, sizeof(seg));
      const AdamWConfig cfg{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10};
      report_bytes("adamw (all params, + bf16 copy)",
                   median_ms([&] { adamw_update(p, pb, gr, m, v, d_seg, 1, P, cfg, nullptr, st); },
                             st),
                   double(P) * (4 * 4 + 3 * 4 + 2));
      double* out = static_cast<double*>(device_alloc(sizeof(double)));
      void* scratch = device_alloc(sum_squares_scratch_bytes(P));
      report_bytes("grad sum of squares (all params)",
                   median_ms([&] { sum_squares(out, scratch, gr, d_seg, 1, P, st); }, st),
                   double(P) * 4);
      for (void* q : {(void*)p, (void*)gr, (void*)m, (void*)v, (void*)pb, (void*)d_seg,
                      (void*)out, scratch})
        device_free(q);
    }
    ctx.synchronize();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
