// How fast cuBLASLt runs the transformer layer's GEMMs as Braid calls them (matmul.cu's
// layouts: bf16 operands, fp32 accumulation, bf16 outputs, and fp32 weight gradients
// accumulated with beta = 1), and what the alternatives give: the heuristic's first answer
// (what Braid runs by default), the fastest of up to 32 heuristic candidates (what
// --gemm-autotune could find with a longer list), the first answer with its K split 2-8 ways
// (the weight-gradient GEMMs have a long K = B*T and a small output: few tiles per SM), the
// weight gradient written as bf16 instead of fp32, and a layer's dW GEMM run on a second
// stream beside its dinp GEMM (the two are independent).
//
// Usage: bench_gemm [--shape 124m|1.5b]   (124M: N = 16384 tokens, C = 768; 1.5B: N = 8192, C = 1600)
// Each figure: 3 warm-up runs, then the median of 20 timed with CUDA events; TFLOP/s = 2mnk / time.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_util.cuh"
#include "ops/cuda/cuda_check.h"

#define CK(x) BRAID_CHECK_CUDA(x)
#define CB(x) BRAID_CHECK_CUBLAS(x)

namespace {

constexpr double kPeakTflops = 790.0;  // measured bf16 cuBLAS peak on the H200 (8192^3)
constexpr size_t kWorkspace = size_t(32) << 20;

void* alloc_random(int64_t elems, uint32_t seed) {
  void* p = nullptr;
  CK(cudaMalloc(&p, size_t(elems) * 2));
  braid::bench::fill_bf16_kernel<<<2048, 256>>>(static_cast<__nv_bfloat16*>(p), elems, seed, 1.f);
  CK(cudaGetLastError());
  return p;
}

using braid::bench::median_ms;

struct Gemm {  // D[m,n] (col-major) = op(A) op(B) + beta D, as matmul.cu's run_gemm sets it up
  std::string name;
  bool transa = false, transb = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  cudaDataType_t d_type = CUDA_R_16BF;
  float beta = 0.f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;  // BIAS and GELU_AUX_BIAS take a bf16 bias
  void *bias = nullptr, *aux = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  void *A = nullptr, *B = nullptr, *D = nullptr;

  double flops() const { return 2.0 * double(m) * double(n) * double(k); }
  void setup() {
    CB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    const bool has_bias = epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
                          epilogue == CUBLASLT_EPILOGUE_BGRADB;
    const bool has_aux = epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || epilogue == CUBLASLT_EPILOGUE_DGELU;
    if (has_bias) {
      // Forward epilogues read a bf16 bias [m]; BGRADB writes an fp32 gradient [n].
      const bool grad = epilogue == CUBLASLT_EPILOGUE_BGRADB;
      const cudaDataType_t bt = grad ? CUDA_R_32F : CUDA_R_16BF;
      CK(cudaMalloc(&bias, size_t(grad ? n : m) * 4));
      CK(cudaMemset(bias, 0, size_t(grad ? n : m) * 4));
      CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
      CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    if (has_aux) {
      aux = alloc_random(m * n, 3);
      const int64_t ld = m;
      CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
      CB(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    }
    CB(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda));
    CB(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb));
    CB(cublasLtMatrixLayoutCreate(&d, d_type, m, n, ldd));
    A = alloc_random(lda * (transa ? m : k), 1);  // ld x (stored columns)
    B = alloc_random(ldb * (transb ? k : n), 2);
    CK(cudaMalloc(&D, size_t(ldd) * size_t(n) * (d_type == CUDA_R_32F ? 4 : 2)));
    CK(cudaMemset(D, 0, size_t(ldd) * size_t(n) * (d_type == CUDA_R_32F ? 4 : 2)));
  }
  void release() {
    cublasLtMatmulDescDestroy(op);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(d);
    cudaFree(A), cudaFree(B), cudaFree(D), cudaFree(bias), cudaFree(aux);
  }
  cublasStatus_t run(cublasLtHandle_t lt, const cublasLtMatmulAlgo_t& algo, void* ws, cudaStream_t s) const {
    const float alpha = 1.f;
    return cublasLtMatmul(lt, op, &alpha, A, a, B, b, &beta, D, d, D, d, &algo, ws, kWorkspace, s);
  }
  std::vector<cublasLtMatmulHeuristicResult_t> heuristics(cublasLtHandle_t lt, int want) const {
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kWorkspace;
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    std::vector<cublasLtMatmulHeuristicResult_t> r(want);
    int count = 0;
    CB(cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, d, d, pref, want, r.data(), &count));
    cublasLtMatmulPreferenceDestroy(pref);
    r.resize(count);
    return r;
  }
};

std::string describe(const cublasLtMatmulAlgo_t& algo) {
  int id = 0, tile = 0, splitk = 0, red = 0, stages = 0, cluster = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), nullptr);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), nullptr);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), nullptr);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red), nullptr);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), nullptr);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster),
                                       nullptr);
  char buf[128];
  std::snprintf(buf, sizeof(buf), "algo %d tile %d splitK %d red %d stages %d cluster %d", id, tile, splitk, red,
                stages, cluster);
  return buf;
}

void line(const Gemm& g, const std::string& what, double ms, const std::string& cfg) {
  const double tf = g.flops() / (ms * 1e-3) / 1e12;
  std::printf("%-22s %-28s %8.3f ms %7.1f TFLOP/s %5.1f%%  %s\n", g.name.c_str(), what.c_str(), ms, tf,
              100.0 * tf / kPeakTflops, cfg.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "124m";
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) shape = argv[++i];
  const int64_t N = shape == "1.5b" ? 8192 : 16384;
  const int64_t C = shape == "1.5b" ? 1600 : 768;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench_gemm: %s, %d SMs; shape %s: N = %lld tokens, C = %lld\n", prop.name,
              prop.multiProcessorCount, shape.c_str(), (long long)N, (long long)C);
  cublasLtHandle_t lt;
  CB(cublasLtCreate(&lt));
  cudaStream_t s0, s1;
  CK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  void *ws0 = nullptr, *ws1 = nullptr;
  CK(cudaMalloc(&ws0, kWorkspace));
  CK(cudaMalloc(&ws1, kWorkspace));

  struct Linear {
    const char* name;
    int64_t ic, oc;
  };
  const Linear linears[] = {{"qkv", C, 3 * C}, {"attn_proj", C, C}, {"fc", C, 4 * C}, {"fc_proj", 4 * C, C}};
  for (const Linear& L : linears) {
    Gemm fwd, dinp, dw, dw16;
    fwd.name = std::string(L.name) + " fwd";
    fwd.transa = true, fwd.m = L.oc, fwd.n = N, fwd.k = L.ic, fwd.lda = L.ic, fwd.ldb = L.ic, fwd.ldd = L.oc;
    dinp.name = std::string(L.name) + " dinp";
    dinp.m = L.ic, dinp.n = N, dinp.k = L.oc, dinp.lda = L.ic, dinp.ldb = L.oc, dinp.ldd = L.ic;
    dw.name = std::string(L.name) + " dW";
    dw.transb = true, dw.m = L.ic, dw.n = L.oc, dw.k = N, dw.lda = L.ic, dw.ldb = L.oc, dw.ldd = L.ic;
    dw.d_type = CUDA_R_32F, dw.beta = 1.f;
    dw16 = dw;
    dw16.name = std::string(L.name) + " dW bf16 out";
    dw16.d_type = CUDA_R_16BF;
    // As Braid runs them: the forward with its bias (and GELU for fc) in the epilogue, fc_proj's
    // dinp through GELU' (DGELU), and the dW GEMM with the bias gradient (BGRADB).
    Gemm fwd_e = fwd, dinp_e = dinp, dw_e = dw;
    const bool fc = std::string(L.name) == "fc", fc_proj = std::string(L.name) == "fc_proj";
    fwd_e.name = std::string(L.name) + (fc ? " fwd+bias+GELU" : " fwd+bias");
    fwd_e.epilogue = fc ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_BIAS;
    dinp_e.name = std::string(L.name) + " dinp+dGELU";
    dinp_e.epilogue = CUBLASLT_EPILOGUE_DGELU;
    dw_e.name = std::string(L.name) + " dW+BGRADB";
    dw_e.epilogue = CUBLASLT_EPILOGUE_BGRADB;
    std::vector<Gemm*> gemms = {&fwd, &fwd_e, &dinp, &dw, &dw_e, &dw16};
    if (fc_proj) gemms.insert(gemms.begin() + 3, &dinp_e);
    for (Gemm* g : gemms) {
      g->setup();
      auto cands = g->heuristics(lt, 32);
      if (cands.empty()) {
        std::printf("%-22s no algorithm\n", g->name.c_str());
        continue;
      }
      const cublasLtMatmulAlgo_t first = cands[0].algo;
      const double t0 = median_ms([&] { CB(g->run(lt, first, ws0, s0)); }, s0);
      char waves[32];
      std::snprintf(waves, sizeof(waves), " waves %.2f", cands[0].wavesCount);
      line(*g, "heuristic #0 (default)", t0, describe(first) + waves);
      // The fastest of the candidates (not shown for the bf16-output dW).
      int best = 0;
      double best_ms = t0;
      for (size_t i = 1; i < cands.size(); ++i) {
        if (g->run(lt, cands[i].algo, ws0, s0) != CUBLAS_STATUS_SUCCESS) continue;
        const double t = median_ms([&] { CB(g->run(lt, cands[i].algo, ws0, s0)); }, s0);
        if (t < best_ms) best_ms = t, best = int(i);
      }
      if (g != &dw16)
        line(*g, "best of " + std::to_string(cands.size()) + " (#" + std::to_string(best) + ")", best_ms,
             describe(cands[best].algo));
      if (g == &dw16 || g == &fwd_e || g == &dinp_e || g == &dw_e) {  // no split-K for these
        g->release();
        continue;
      }
      // The first answer with K split.
      int splitk_ok = 0;
      CB(cublasLtMatmulAlgoCapGetAttribute(&first, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok, sizeof(splitk_ok),
                                           nullptr));
      if (!splitk_ok) std::printf("%-22s split-K not supported by the first answer's algorithm\n", g->name.c_str());
      for (int split : {2, 3, 4, 8}) {
        if (!splitk_ok) break;
        double best_t = 0;
        std::string best_cfg;
        for (int scheme : {CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                           CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE}) {
          cublasLtMatmulAlgo_t algo = first;
          cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof(split));
          cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                               sizeof(scheme));
          cublasLtMatmulHeuristicResult_t check{};
          if (cublasLtMatmulAlgoCheck(lt, g->op, g->a, g->b, g->d, g->d, &algo, &check) != CUBLAS_STATUS_SUCCESS ||
              check.workspaceSize > kWorkspace)
            continue;
          if (g->run(lt, algo, ws0, s0) != CUBLAS_STATUS_SUCCESS) continue;
          const double t = median_ms([&] { CB(g->run(lt, algo, ws0, s0)); }, s0);
          if (best_cfg.empty() || t < best_t) best_t = t, best_cfg = describe(algo);
        }
        if (!best_cfg.empty()) line(*g, "#0 split-K " + std::to_string(split), best_t, best_cfg);
      }
      CK(cudaDeviceSynchronize());
    }
    // dinp and dW side by side on two streams (their own workspaces), against one after the other.
    {
      const auto hi = dinp.heuristics(lt, 1), hw = dw.heuristics(lt, 1);
      if (!hi.empty() && !hw.empty()) {
        const double serial = median_ms(
            [&] {
              CB(dinp.run(lt, hi[0].algo, ws0, s0));
              CB(dw.run(lt, hw[0].algo, ws0, s0));
            },
            s0);
        cudaEvent_t fork, join;
        CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
        CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
        const double overlapped = median_ms(
            [&] {
              CK(cudaEventRecord(fork, s0));
              CK(cudaStreamWaitEvent(s1, fork, 0));
              CB(dw.run(lt, hw[0].algo, ws1, s1));
              CB(dinp.run(lt, hi[0].algo, ws0, s0));
              CK(cudaEventRecord(join, s1));
              CK(cudaStreamWaitEvent(s0, join, 0));
            },
            s0);
        const double f = dinp.flops() + dw.flops();
        std::printf("%-22s dinp then dW, one stream   %8.3f ms %7.1f TFLOP/s\n", L.name, serial, f / serial / 1e9);
        std::printf("%-22s dW beside dinp, 2 streams  %8.3f ms %7.1f TFLOP/s\n", L.name, overlapped,
                    f / overlapped / 1e9);
        CK(cudaEventDestroy(fork));
        CK(cudaEventDestroy(join));
      }
    }
    fwd.release(), dinp.release(), dw.release();
    CK(cudaDeviceSynchronize());
  }
  cublasLtDestroy(lt);
  return 0;
}
