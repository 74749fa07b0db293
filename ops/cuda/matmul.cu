// Linear layers through cuBLASLt: bf16 operands, fp32 compute (CUBLAS_COMPUTE_32F), the bias
// and GELU fused into the forward GEMM's epilogue where cuBLASLt offers them for an fp32
// bias, fp32 weight gradients accumulated by the GEMM itself (beta = 1, bf16 A/B, fp32 C/D).
//
// Row-major X[M,K] is column-major X^T, so in cuBLASLt's column-major terms:
//   forward  D = out^T [OC x N]:  m=OC, n=N,  k=IC, A = w   (stored IC x OC, op T), B = inp
//   dinp     D = dinp^T [IC x N]: m=IC, n=N,  k=OC, A = w   (stored IC x OC, op N), B = dout
//   dw       D = dw^T [IC x OC]:  m=IC, n=OC, k=N,  A = inp (stored IC x N,  op N),
//                                 B = dout (stored OC x N, op T)
// The algorithm for a configuration (shape, types, epilogue, pointer alignments) is chosen
// once and cached, so every call of a shape runs the same kernel: cuBLASLt's heuristic's
// first answer (told the operands' actual alignment; reproducible run to run), or with
// autotuning the fastest of its candidates, timed at the configuration's first call.
// Timed choices can be exported and preloaded (gemm_algos_tuned / gemm_algos_preload),
// so that a resumed run takes the same kernels as the run it continues.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/device_memory.h"

namespace braid::cuda {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)

struct GemmSpec {
  bool transa = false, transb = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldd = 0;
  cudaDataType_t ab_type = CUDA_R_16BF, d_type = CUDA_R_16BF;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  cudaDataType_t bias_type = CUDA_R_32F;
  int64_t aux_ld = 0;
};

// The tail of the GEMM workspace holds a bf16 copy of the bias when cuBLASLt's epilogue
// takes no fp32 bias with a bf16 output (see matmul_forward); cuBLASLt gets the rest.
constexpr size_t kBiasSlotBytes = size_t(1) << 20;
size_t lt_workspace_bytes(const GemmHandle& h) { return h.workspace_bytes - kBiasSlotBytes; }
bf16* bias_slot(const GemmHandle& h) {
  return reinterpret_cast<bf16*>(static_cast<char*>(h.workspace) + lt_workspace_bytes(h));
}

// Largest power of two (<= 256) dividing the address: cuBLASLt picks kernels by alignment.
int alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 1;
  while (al < 256 && (a % (2 * al)) == 0) al *= 2;
  return a == 0 ? 256 : al;
}

struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using AlgoKey = std::tuple<cublasLtHandle_t, bool, bool, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int, int, int, int, int, int, int, int, int, int>;
struct AlgoCache {
  std::mutex mu;
  std::map<AlgoKey, std::pair<bool, cublasLtMatmulAlgo_t>> algos;  // false: unsupported
  // Autotuned choices by configuration (the key without its handle): those timed or taken
  // from `preloaded` in this process (exported), and those handed in to take instead of timing.
  std::map<std::vector<int64_t>, cublasLtMatmulAlgo_t> tuned, preloaded;
  int reused = 0;
  int timed = 0;  // choices made by timing: what the exported set gains beyond `preloaded`
};
AlgoCache& algo_cache() {
  static AlgoCache* c = new AlgoCache();  // process lifetime, like the handles it serves
  return *c;
}

std::atomic<int> g_last_path{int(EpiloguePath::None)};
std::atomic<bool> g_autotune{false};
std::atomic<int> g_sm_target{0};  // 0: every SM (set_gemm_sm_target)
std::atomic<int> g_last_dgelu_path{int(EpiloguePath::None)};
std::atomic<bool> g_last_dgelu_bias{false};

__global__ void add_vector_kernel(float* dst, const float* src, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

std::atomic<int> g_tuned_shapes{0};  // configurations whose candidates were timed

std::vector<int64_t> config_of(const AlgoKey& k) {
  return std::apply([](cublasLtHandle_t, auto... v) { return std::vector<int64_t>{int64_t(v)...}; }, k);
}

// Times each candidate on `stream` (2 warm-up runs, then the median of 9 runs each between
// two events; D replaced by a scratch buffer, so beta = 1 GEMMs do not accumulate into the
// real output) and returns the fastest's index. (The mean of 3 after 1 warm-up caught about
// a third of what the best of 8 candidates gains alone: 2.0 of 5.6 ms per 1.5B step.)
int fastest_algo(const GemmHandle& h, const Descriptors& desc, const cublasLtMatmulHeuristicResult_t* results,
                 int count, const void* A, const void* B, size_t d_bytes, float beta, cudaStream_t stream) {
  // The scratch comes from the caching allocator (stream-ordered reuse on this stream, no
  // device-wide synchronisation of cudaFree while other streams run collectives).
  void* scratch = nullptr;
  try {
    scratch = device_alloc(d_bytes);
  } catch (const std::exception&) {
    return 0;  // no room to time: the heuristic's first answer
  }
  constexpr int kWarmup = 2, kTimed = 9;
  struct Guard {  // events and scratch released on every path, the throwing ones included
    cudaEvent_t ev[kTimed + 1] = {};
    void* scratch;
    ~Guard() {
      for (cudaEvent_t e : ev)
        if (e) cudaEventDestroy(e);
      device_free(scratch);
    }
  } guard{{}, scratch};
  for (cudaEvent_t& e : guard.ev) BRAID_CHECK_CUDA(cudaEventCreate(&e));
  ++g_tuned_shapes;
  const float alpha = 1.f;
  int best = -1;
  float best_ms = 0.f;
  for (int i = 0; i < count; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    auto run = [&] {
      return cublasLtMatmul(h.lt, desc.op, &alpha, A, desc.a, B, desc.b, &beta, scratch, desc.d, scratch, desc.d,
                            &results[i].algo, h.workspace, lt_workspace_bytes(h), stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that does not run is skipped
    for (int r = 1; r < kWarmup; ++r) BRAID_CHECK_CUBLAS(run());
    BRAID_CHECK_CUDA(cudaEventRecord(guard.ev[0], stream));
    for (int r = 0; r < kTimed; ++r) {
      BRAID_CHECK_CUBLAS(run());
      BRAID_CHECK_CUDA(cudaEventRecord(guard.ev[r + 1], stream));
    }
    BRAID_CHECK_CUDA(cudaEventSynchronize(guard.ev[kTimed]));
    float ms[kTimed];
    for (int r = 0; r < kTimed; ++r) BRAID_CHECK_CUDA(cudaEventElapsedTime(&ms[r], guard.ev[r], guard.ev[r + 1]));
    std::nth_element(ms, ms + kTimed / 2, ms + kTimed);
    const float median = ms[kTimed / 2];
    if (best < 0 || median < best_ms) best = i, best_ms = median;
  }
  // None ran: the heuristic's first (its failure is then reported). The guard returns the
  // scratch to the allocator, reused in stream order.
  return best < 0 ? 0 : best;
}

__global__ void bias_to_bf16_kernel(bf16* out, const float* bias, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_bf16(bias[i]);
}

// D = alpha op(A) op(B) + beta D with the spec's epilogue. Returns false (and does nothing)
// when cuBLASLt has no algorithm for the configuration; throws on any other failure.
bool run_gemm(const GemmHandle& h, const GemmSpec& s, const void* A, const void* B, void* D,
              float beta, const void* bias, void* aux, cudaStream_t stream) {
  Descriptors desc;
  BRAID_CHECK_CUBLAS(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = s.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = s.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                                    sizeof(ta)));
  BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                                    sizeof(tb)));
  BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                    &s.epilogue, sizeof(s.epilogue)));
  const int32_t sm_target = g_sm_target.load();
  if (sm_target > 0)
    BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sm_target,
                                                      sizeof(sm_target)));
  if (bias) {
    const int32_t bias_type = s.bias_type;
    BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof(bias)));
  }
  if (aux) {
    BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    BRAID_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                      &s.aux_ld, sizeof(s.aux_ld)));
  }
  // Stored shapes (before op): A is m x k (or k x m transposed), B is k x n (or n x k).
  BRAID_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&desc.a, s.ab_type, s.transa ? s.k : s.m,
                                                s.transa ? s.m : s.k, s.lda));
  BRAID_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&desc.b, s.ab_type, s.transb ? s.n : s.k,
                                                s.transb ? s.k : s.n, s.ldb));
  BRAID_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&desc.d, s.d_type, s.m, s.n, s.ldd));

  const AlgoKey key{h.lt,         s.transa,        s.transb,         s.m,
                    s.n,          s.k,             s.lda,            s.ldb,
                    s.ldd,        int(s.ab_type),  int(s.d_type),    int(s.epilogue),
                    int(s.bias_type), alignment(A), alignment(B),    alignment(D),
                    alignment(bias), alignment(aux), int(sm_target)};
  std::pair<bool, cublasLtMatmulAlgo_t> found{};
  {
    auto& cache = algo_cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.algos.find(key);
    if (it != cache.algos.end()) {
      found = it->second;
    } else {
      const size_t ws = lt_workspace_bytes(h);
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&desc.pref));
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      // cuBLASLt assumes 256-byte aligned operands unless told otherwise; views into a
      // tensor (row chunks of the LM head, weight slices) can be less aligned, and an
      // algorithm chosen for 256 would then read misaligned vectors. C is D here.
      const uint32_t align_a = uint32_t(alignment(A)), align_b = uint32_t(alignment(B)),
                     align_d = uint32_t(alignment(D));
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
      BRAID_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
      constexpr int kCandidates = 8;
      cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
      int count = 0;
      const bool tune = g_autotune.load();
      const std::vector<int64_t> config = config_of(key);
      // A recorded choice for this configuration, if cuBLASLt accepts it here.
      bool recorded = false;
      if (tune) {
        auto pre = cache.preloaded.find(config);
        cublasLtMatmulHeuristicResult_t check{};
        if (pre != cache.preloaded.end() &&
            cublasLtMatmulAlgoCheck(h.lt, desc.op, desc.a, desc.b, desc.d, desc.d, &pre->second, &check) ==
                CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= ws) {
          found = {true, pre->second};
          cache.tuned[config] = pre->second;
          ++cache.reused;
          recorded = true;
        }
      }
      const cublasStatus_t st = recorded ? CUBLAS_STATUS_SUCCESS : cublasLtMatmulAlgoGetHeuristic(
          h.lt, desc.op, desc.a, desc.b, desc.d, desc.d, desc.pref, tune ? kCandidates : 1, results, &count);
      if (!recorded && st == CUBLAS_STATUS_SUCCESS && count > 0) {
        const size_t d_bytes = size_t(s.ldd) * size_t(s.n) * (s.d_type == CUDA_R_32F ? 4 : 2);
        const int pick = tune && count > 1 ? fastest_algo(h, desc, results, count, A, B, d_bytes, beta, stream) : 0;
        found = {true, results[pick].algo};
        if (tune) cache.tuned[config] = results[pick].algo, ++cache.timed;
      } else if (!recorded && (s.epilogue != CUBLASLT_EPILOGUE_DEFAULT || st == CUBLAS_STATUS_NOT_SUPPORTED ||
                               st == CUBLAS_STATUS_SUCCESS)) {
        // An epilogue (or type) combination this cuBLASLt does not offer: cuBLASLt answers
        // NOT_SUPPORTED or, for an fp32 bias with a bf16 output, INVALID_VALUE. The caller
        // falls back to the next variant.
        found = {false, {}};
      } else if (!recorded) {
        BRAID_CHECK_CUBLAS(st);
      }
      cache.algos.emplace(key, found);
    }
  }
  if (!found.first) return false;
  const float alpha = 1.f;
  BRAID_CHECK_CUBLAS(cublasLtMatmul(h.lt, desc.op, &alpha, A, desc.a, B, desc.b, &beta, D,
                                    desc.d, D, desc.d, &found.second, h.workspace,
                                    lt_workspace_bytes(h), stream));
  return true;
}

// The epilogue as a second pass, when cuBLASLt cannot fuse it: pre = bf16(out + bias);
// out = gelu(pre) (or pre).
__global__ void bias_gelu_kernel(bf16* out, bf16* pre_gelu, const float* bias, int64_t N,
                                 int OC, bool gelu) {
  const int64_t total = N * OC;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    float x = to_float(out[i]);
    if (bias) x = to_float(to_bf16(x + bias[i % OC]));
    if (gelu) {
      pre_gelu[i] = to_bf16(x);
      const float cube = 0.044715f * x * x * x;
      x = 0.5f * x * (1.0f + tanhf(kGeluScale * (x + cube)));
    }
    out[i] = to_bf16(x);
  }
}

}  // namespace

EpiloguePath matmul_last_epilogue_path() { return EpiloguePath(g_last_path.load()); }
void set_gemm_autotune(bool on) { g_autotune.store(on); }
void set_gemm_sm_target(int sms) { g_sm_target.store(sms > 0 ? sms : 0); }
int gemm_autotuned_shapes() { return g_tuned_shapes.load(); }

std::string gemm_algo_environment() {
  int dev = 0;
  BRAID_CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  BRAID_CHECK_CUDA(cudaGetDeviceProperties(&p, dev));
  return std::string(p.name) + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs, cuBLASLt " + std::to_string(cublasLtGetVersion());
}

std::vector<GemmAlgoRecord> gemm_algos_tuned() {
  auto& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  // Records loaded but not yet used in this process stay (a resumed run that stops before
  // reaching a configuration must not drop its recorded choice).
  std::map<std::vector<int64_t>, cublasLtMatmulAlgo_t> all = cache.preloaded;
  for (const auto& [config, algo] : cache.tuned) all[config] = algo;
  std::vector<GemmAlgoRecord> out;
  for (const auto& [config, algo] : all) {
    GemmAlgoRecord r{config, {}};
    std::copy(std::begin(algo.data), std::end(algo.data), r.algo.begin());
    out.push_back(std::move(r));
  }
  return out;
}

void gemm_algos_preload(const std::vector<GemmAlgoRecord>& records) {
  auto& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  for (const GemmAlgoRecord& r : records) {
    cublasLtMatmulAlgo_t a{};
    std::copy(r.algo.begin(), r.algo.end(), std::begin(a.data));
    cache.preloaded[r.config] = a;
  }
}

void gemm_algo_cache_reset() {
  auto& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.algos.clear();
  cache.tuned.clear();
  cache.preloaded.clear();
  cache.reused = 0;
  cache.timed = 0;
}

int gemm_algos_timed() {
  auto& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.timed;
}

int gemm_algos_reused() {
  auto& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.reused;
}

void matmul_forward(const GemmHandle& gemm, bf16* out, bf16* pre_gelu, const bf16* inp,
                    const bf16* w, const float* bias, int64_t N, int IC, int OC, bool gelu,
                    cudaStream_t stream) {
  if (N == 0) return;
  BRAID_CHECK(IC % 8 == 0 && OC % 8 == 0,
              "matmul_forward: IC (" << IC << ") and OC (" << OC << ") must be multiples of 8");
  BRAID_CHECK(!gelu || pre_gelu != nullptr, "matmul_forward: gelu needs pre_gelu");
  BRAID_CHECK(gemm.workspace_bytes > kBiasSlotBytes && size_t(OC) * 2 <= kBiasSlotBytes,
              "matmul_forward: GEMM workspace too small or OC too large");
  GemmSpec s;
  s.transa = true;
  s.m = OC, s.n = N, s.k = IC;
  s.lda = IC, s.ldb = IC, s.ldd = OC;
  if (gelu) {
    s.epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    s.aux_ld = OC;
  } else if (bias) {
    s.epilogue = CUBLASLT_EPILOGUE_BIAS;
  }
  if (s.epilogue == CUBLASLT_EPILOGUE_DEFAULT) {
    BRAID_CHECK(run_gemm(gemm, s, w, inp, out, 0.f, nullptr, nullptr, stream),
                "cuBLASLt has no algorithm for the forward GEMM N=" << N << " IC=" << IC
                                                                    << " OC=" << OC);
    g_last_path = int(EpiloguePath::None);
    return;
  }
  // 1. The epilogue with the fp32 bias as it is.
  if (run_gemm(gemm, s, w, inp, out, 0.f, bias, gelu ? pre_gelu : nullptr, stream)) {
    g_last_path = int(EpiloguePath::Fused);
    return;
  }
  // 2. The epilogue with the bias rounded to bf16 (what PyTorch's autocast feeds cuBLASLt);
  //    the addition itself stays fp32, in the epilogue, before the one rounding of out.
  if (bias) {
    bf16* b16 = bias_slot(gemm);
    bias_to_bf16_kernel<<<unsigned(ceil_div(OC, 256)), 256, 0, stream>>>(b16, bias, OC);
    BRAID_CHECK_LAUNCH();
    s.bias_type = CUDA_R_16BF;
    if (run_gemm(gemm, s, w, inp, out, 0.f, b16, gelu ? pre_gelu : nullptr, stream)) {
      g_last_path = int(EpiloguePath::FusedBf16Bias);
      return;
    }
  }
  // 3. The plain GEMM, then bias and GELU in a second pass over out.
  s.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  s.aux_ld = 0;
  BRAID_CHECK(run_gemm(gemm, s, w, inp, out, 0.f, nullptr, nullptr, stream),
              "cuBLASLt has no algorithm for the forward GEMM N=" << N << " IC=" << IC
                                                                  << " OC=" << OC);
  bias_gelu_kernel<<<elementwise_blocks(N * OC, 256), 256, 0, stream>>>(out, pre_gelu, bias, N,
                                                                        OC, gelu);
  BRAID_CHECK_LAUNCH();
  g_last_path = int(EpiloguePath::SecondPass);
}

void matmul_backward(const GemmHandle& gemm, bf16* dinp, float* dw, float* dbias,
                     void* scratch, const bf16* dout, const bf16* inp, const bf16* w, int64_t N,
                     int IC, int OC, bool accumulate_dinp, cudaStream_t stream, bool overwrite_dw,
                     bool overwrite_dbias) {
  if (N == 0) {  // sums over no rows: an overwrite writes zeros
    if (dw && overwrite_dw) BRAID_CHECK_CUDA(cudaMemsetAsync(dw, 0, size_t(OC) * IC * sizeof(float), stream));
    if (dbias && overwrite_dbias) BRAID_CHECK_CUDA(cudaMemsetAsync(dbias, 0, size_t(OC) * sizeof(float), stream));
    return;
  }
  BRAID_CHECK(IC % 8 == 0 && OC % 8 == 0,
              "matmul_backward: IC (" << IC << ") and OC (" << OC << ") must be multiples of 8");
  if (dinp) {
    GemmSpec s;
    s.m = IC, s.n = N, s.k = OC;
    s.lda = IC, s.ldb = OC, s.ldd = IC;
    BRAID_CHECK(run_gemm(gemm, s, w, dout, dinp, accumulate_dinp ? 1.f : 0.f, nullptr, nullptr,
                         stream),
                "cuBLASLt has no algorithm for the dinp GEMM");
  }
  if (dw) {
    GemmSpec s;
    s.transb = true;
    s.m = IC, s.n = OC, s.k = N;
    s.lda = IC, s.ldb = OC, s.ldd = IC;
    s.d_type = CUDA_R_32F;
    // beta 0 for the step's first write of dw: the old values are not even read.
    BRAID_CHECK(run_gemm(gemm, s, inp, dout, dw, overwrite_dw ? 0.f : 1.f, nullptr, nullptr, stream),
                "cuBLASLt has no algorithm for the dw GEMM (bf16 x bf16 -> fp32)");
  }
  // The bias gradient by its own pass over dout, not by the dW GEMM's BGRADB epilogue:
  // BGRADB (a reduction along the GEMM's K) slowed the dW GEMMs by 0.02-0.10 ms each on an
  // H100, more than the pass costs (bench_kernels: 1.5B fc dW 0.229 ms alone, 0.329 with
  // BGRADB, bias_backward 0.047 ms).
  if (dbias) bias_backward(dbias, scratch, dout, N, OC, stream, overwrite_dbias);
}

size_t matmul_backward_dgelu_scratch_bytes(int64_t N, int IC) {
  return std::max(bias_backward_scratch_bytes(N, IC), size_t(IC) * sizeof(float));
}

void matmul_backward_dgelu(const GemmHandle& gemm, bf16* dpre, float* dw, float* dbias_pre, void* scratch,
                           const bf16* dout, const bf16* inp, const bf16* w, const bf16* pre, int64_t N, int IC,
                           int OC, cudaStream_t stream, bool overwrite_dw, bool overwrite_dbias) {
  if (N == 0) {  // sums over no rows: an overwrite writes zeros
    if (dw && overwrite_dw) BRAID_CHECK_CUDA(cudaMemsetAsync(dw, 0, size_t(OC) * IC * sizeof(float), stream));
    if (dbias_pre && overwrite_dbias)
      BRAID_CHECK_CUDA(cudaMemsetAsync(dbias_pre, 0, size_t(IC) * sizeof(float), stream));
    return;
  }
  BRAID_CHECK(IC % 8 == 0 && OC % 8 == 0,
              "matmul_backward_dgelu: IC (" << IC << ") and OC (" << OC << ") must be multiples of 8");
  BRAID_CHECK(dbias_pre == nullptr || scratch != nullptr,
              "matmul_backward_dgelu: a bias gradient needs scratch (matmul_backward_dgelu_scratch_bytes)");
  GemmSpec s;  // dpre^T [IC x N] = w (IC x OC, op N) . dout^T (OC x N), as matmul_backward's dinp
  s.m = IC, s.n = N, s.k = OC;
  s.lda = IC, s.ldb = OC, s.ldd = IC;
  s.aux_ld = IC;  // pre [N, IC] row-major = IC x N column-major, as the forward's GELU_AUX wrote it
  bf16* aux = const_cast<bf16*>(pre);
  bool bias_done = false;
  bool fused = false;
  if (dbias_pre) {  // 1. GELU' and the bias gradient (fp32, summed over the N columns of D)
    s.epilogue = CUBLASLT_EPILOGUE_DGELU_BGRAD;
    float* db = static_cast<float*>(scratch);
    if (run_gemm(gemm, s, w, dout, dpre, 0.f, db, aux, stream)) {
      if (overwrite_dbias) {
        BRAID_CHECK_CUDA(cudaMemcpyAsync(dbias_pre, db, size_t(IC) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
      } else {
        add_vector_kernel<<<unsigned(ceil_div(IC, 256)), 256, 0, stream>>>(dbias_pre, db, IC);
        BRAID_CHECK_LAUNCH();
      }
      fused = bias_done = true;
    }
  }
  if (!fused) {  // 2. GELU' only
    s.epilogue = CUBLASLT_EPILOGUE_DGELU;
    fused = run_gemm(gemm, s, w, dout, dpre, 0.f, nullptr, aux, stream);
  }
  if (!fused) {  // 3. the unfused ops
    matmul_backward(gemm, dpre, nullptr, nullptr, nullptr, dout, nullptr, w, N, IC, OC, false, stream);
    gelu_backward(dpre, pre, dpre, N * int64_t(IC), false, stream);
  }
  g_last_dgelu_path = int(fused ? EpiloguePath::Fused : EpiloguePath::SecondPass);
  g_last_dgelu_bias = bias_done;
  if (dbias_pre && !bias_done) bias_backward(dbias_pre, scratch, dpre, N, IC, stream, overwrite_dbias);
  if (dw) matmul_backward(gemm, nullptr, dw, nullptr, nullptr, dout, inp, w, N, IC, OC, false, stream, overwrite_dw);
}

EpiloguePath matmul_last_dgelu_path() { return EpiloguePath(g_last_dgelu_path.load()); }
bool matmul_last_dgelu_fused_bias() { return g_last_dgelu_bias.load(); }

}  // namespace braid::cuda
