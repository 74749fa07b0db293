// The CUDA op set of Braid: the device twins of the CPU kernels in ops/ops.h, one file per
// op under ops/cuda/. Same shape letters (N = B*T rows, C channels, OC/IC, V, NH, HS) and the
// same semantics, under this precision contract:
//   - activations and activation gradients are bf16;
//   - GEMM weights are bf16 copies of the fp32 master weights (adamw_update writes them);
//     small parameter vectors (layernorm w/b, biases) and the embedding tables are read as
//     fp32 directly (one exception: where cuBLASLt's fused epilogue takes no fp32 bias for a
//     bf16 output, as on the H200 with cuBLAS 13, the bias enters the epilogue rounded to
//     bf16, see matmul_last_epilogue_path);
//   - parameter gradients are fp32 and ACCUMULATED (+=), like the CPU backward;
//   - every sum, statistic, softmax, loss and norm is accumulated in fp32 (fp64 for norms);
//   - results are deterministic: no floating-point atomics; a reduction over rows writes
//     per-block partials that a second pass adds in a fixed order, and block counts depend
//     only on the problem shape, never on the device.
// Activation-gradient outputs take `accumulate`: false overwrites (and allows the output to
// alias an input where noted), true adds into the bf16 values already there, in fp32 with
// one rounding. The stream is the last argument of every launcher; launchers never
// synchronise the host. Scratch memory, where an op needs it, is passed in by the caller
// (sized by the matching *_scratch_bytes function) so that ops never allocate.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace braid::cuda {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------------------------------
// Token and position embedding (embedding.cu)

// out[N,C] = bf16(wte[tokens[n] - vocab_start]) for ids this vocabulary shard owns
// ([vocab_start, vocab_start + vocab_count)), zero rows for the others.
void embedding_forward(bf16* out, const int32_t* tokens, const float* wte, int64_t N, int C,
                       int64_t vocab_start, int64_t vocab_count, cudaStream_t stream);

// The positions of the shard's tokens grouped by local row (token id - vocab_start), built
// on the host from the host copy of the tokens (the data loader has them) and uploaded by
// the caller. Rows are in increasing order; inside a row, positions increase, so the
// backward adds each row's gradients in the same order as the sequential CPU loop.
struct TokenRows {
  std::vector<int32_t> rows;       // [num_rows] local rows that occur
  std::vector<int32_t> offsets;    // [num_rows + 1] into positions
  std::vector<int32_t> positions;  // [offsets.back()] token positions n, grouped by row
};
TokenRows group_token_rows(const int32_t* tokens, int64_t N, int64_t vocab_start,
                           int64_t vocab_count);
// dwte[rows[r]] += sum over positions n of row r of dout[n] (fp32, in position order).
// rows/offsets/positions are device copies of a TokenRows. Deterministic: one block owns a
// row, so no two blocks touch the same gradient element.
void embedding_backward(float* dwte, const bf16* dout, const int32_t* rows,
                        const int32_t* offsets, const int32_t* positions, int num_rows, int C,
                        cudaStream_t stream);

// out[b,t,:] = bf16(out[b,t,:] + wpe[pos_offset + t, :]).
void position_forward(bf16* out, const float* wpe, int B, int T, int C, int pos_offset,
                      cudaStream_t stream);
// dwpe[pos_offset + t] += sum_b dout[b,t] (b in order; one thread per element of dwpe).
void position_backward(float* dwpe, const bf16* dout, int B, int T, int C, int pos_offset,
                       cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// LayerNorm, fused with the residual add (layernorm.cu). eps = 1e-5 as the CPU op.

// residual = bf16(a + b); out = bf16((residual - mean) * rstd * w + bias), with mean/rstd
// (fp32, [N]) computed from the stored (rounded) residual, which is what the backward sees.
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd,
                                const bf16* a, const bf16* b, const float* w,
                                const float* bias, int64_t N, int C, cudaStream_t stream);
// The same without the add: normalises inp.
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const float* w,
                       const float* bias, int64_t N, int C, cudaStream_t stream);
// dinp (=/+=) LN backward in fp32; dw += sum_n xhat * dout, db += sum_n dout (fp32,
// deterministic through `scratch`; = instead of += with overwrite_params). dw or db may be null.
// dsum (optional, needs dinp): += the column sums of dinp as stored (after the update, bf16),
// = with overwrite_dsum: the bias gradient of the layer whose output gradient dinp is.
size_t layernorm_backward_scratch_bytes(int64_t N, int C);
// Testing: route 16-byte rows to the loop kernels instead of the register-row kernels in
// the forward, and to the element-load form of the same kernel in the backward
// (process-wide), so that a test can compare the two bit for bit.
void layernorm_force_loop_kernels(bool on);
void layernorm_backward(bf16* dinp, float* dw, float* db, void* scratch, const bf16* dout,
                        const bf16* inp, const float* w, const float* mean, const float* rstd,
                        int64_t N, int C, bool accumulate, cudaStream_t stream, bool overwrite_params = false,
                        float* dsum = nullptr, bool overwrite_dsum = false);

// ---------------------------------------------------------------------------------------
// Pointwise ops (elementwise.cu)

// GELU, tanh approximation (as the CPU op). gelu_backward: dinp (=/+=) gelu'(inp) * dout;
// with accumulate = false, dinp may alias dout (in place).
void gelu_forward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream);
void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, bool accumulate,
                   cudaStream_t stream);
// out = bf16(a + b); out may alias a or b.
void residual_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream);
// dst += src, in fp32 with one rounding for bf16.
void add_inplace(bf16* dst, const bf16* src, int64_t n, cudaStream_t stream);
void add_inplace(float* dst, const float* src, int64_t n, cudaStream_t stream);
void scale_inplace(bf16* x, float s, int64_t n, cudaStream_t stream);
void scale_inplace(float* x, float s, int64_t n, cudaStream_t stream);
// Round to nearest even, as braid::f32_to_bf16.
void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream);
void convert(float* out, const bf16* in, int64_t n, cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Linear layers through cuBLASLt (matmul.cu) and the bias gradient (bias_grad.cu)

// What a GEMM needs from the context (runtime.h): the cuBLASLt handle and its workspace.
struct GemmHandle {
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// out[N,OC] = bf16(inp[N,IC] @ w[OC,IC]^T + bias[OC]) with fp32 accumulation; bias (fp32)
// may be null. With gelu = true, pre_gelu[N,OC] receives the bf16 pre-activation (the
// backward's input to gelu_backward) and out = bf16(gelu(pre)); both in the GEMM's
// epilogue where cuBLASLt offers it, else by a second pass (see matmul_last_epilogue_path).
// IC and OC multiples of 8. The GEMM workspace is used by one stream at a time.
void matmul_forward(const GemmHandle& gemm, bf16* out, bf16* pre_gelu, const bf16* inp,
                    const bf16* w, const float* bias, int64_t N, int IC, int OC, bool gelu,
                    cudaStream_t stream);
// dinp[N,IC] (=/+=) dout[N,OC] @ w[OC,IC] (bf16 out); dw[OC,IC] += dout^T @ inp (bf16
// inputs, fp32 C/D, beta 1; = with beta 0 when overwrite_dw); dbias[OC] += sum_n dout (fp32,
// by bias_backward through `scratch`, sized by bias_backward_scratch_bytes(N, OC); = when
// overwrite_dbias). Any of dinp/dw/dbias may be null.
void matmul_backward(const GemmHandle& gemm, bf16* dinp, float* dw, float* dbias,
                     void* scratch, const bf16* dout, const bf16* inp, const bf16* w, int64_t N,
                     int IC, int OC, bool accumulate_dinp, cudaStream_t stream, bool overwrite_dw = false,
                     bool overwrite_dbias = false);
// How the last matmul_forward applied bias/GELU (for logs and tests): in cuBLASLt's epilogue
// with the fp32 bias; in the epilogue with the bias rounded to bf16 (when cuBLASLt takes no
// fp32 bias for a bf16 output; the addition is still fp32 with one rounding of out); or in a
// second pass over out (bf16(bf16(acc) + bias)), when no fused epilogue exists at all.
enum class EpiloguePath { None, Fused, FusedBf16Bias, SecondPass };
EpiloguePath matmul_last_epilogue_path();

// The backward of out = GELU(pre) @ w^T (the MLP's second linear layer, `inp` = GELU(pre)):
// dpre[N,IC] = bf16((dout @ w) * GELU'(pre)) with the GELU derivative applied to the fp32
// GEMM result in cuBLASLt's epilogue (CUBLASLT_EPILOGUE_DGELU, `pre` as its input) where
// offered (EpiloguePath::Fused), else a plain GEMM and gelu_backward in place
// (SecondPass, bf16(bf16(dout @ w) * GELU'(pre)), the unfused ops); dw += dout^T @ inp.
// dbias_pre (may be null: the bias of the layer that produced pre) += sum_n dpre, in the
// same epilogue where offered with an fp32 bias gradient (DGELU_BGRAD into `scratch`, then
// added), else by bias_backward over dpre; scratch sized by matmul_backward_dgelu_scratch_bytes.
size_t matmul_backward_dgelu_scratch_bytes(int64_t N, int IC);
void matmul_backward_dgelu(const GemmHandle& gemm, bf16* dpre, float* dw, float* dbias_pre, void* scratch,
                           const bf16* dout, const bf16* inp, const bf16* w, const bf16* pre, int64_t N, int IC,
                           int OC, cudaStream_t stream, bool overwrite_dw = false, bool overwrite_dbias = false);
EpiloguePath matmul_last_dgelu_path();
bool matmul_last_dgelu_fused_bias();  // the bias gradient came from the epilogue

// GEMM algorithm choice for configurations not yet cached (process-wide). Off (default):
// cuBLASLt's first heuristic answer, so a configuration runs the same kernel in every run.
// On: the first call of a configuration times up to 8 heuristic candidates (2 warm-up + median of 9
// timed runs each, into a scratch output so that accumulating GEMMs are not disturbed)
// and keeps the fastest; the choice may then differ between runs (results within the
// same rounding bounds, not bitwise equal).
void set_gemm_autotune(bool on);
// GEMMs from now on are chosen (and cached) for this many SMs (cuBLASLt's SM count target),
// leaving the rest to work on another stream (the overlapped optimizer step); 0: all.
void set_gemm_sm_target(int sms);
int gemm_autotuned_shapes();  // configurations whose candidates were timed so far
// Autotuned choices, kept so that a later process (a resumed run) takes the same kernels:
// one record per configuration (shape, leading dimensions, types, epilogue, operand
// alignments) with cuBLASLt's algorithm (an opaque struct that cuBLASLt documents as
// serialisable for the same library version; gemm_algo_environment names the GPU model
// and cuBLASLt version the records hold for).
struct GemmAlgoRecord {
  std::vector<int64_t> config;
  std::array<uint64_t, 8> algo{};
};
std::string gemm_algo_environment();
std::vector<GemmAlgoRecord> gemm_algos_tuned();  // timed (or taken from preloaded records) so far
// With autotuning on, a configuration's first call takes its preloaded record instead of
// timing, when cuBLASLt accepts the algorithm for it (cublasLtMatmulAlgoCheck).
void gemm_algos_preload(const std::vector<GemmAlgoRecord>& records);
int gemm_algos_reused();  // configurations that took a preloaded record so far
int gemm_algos_timed();   // choices made by timing so far (the exported set changes only with them)
// Forgets every choice and record (each configuration chooses again at its next call), as
// in a new process: for tests of a resumed run.
void gemm_algo_cache_reset();

// dbias[OC] += sum_n dout[n, :] (= with overwrite), deterministic (per-block partials,
// fixed-order sum).
size_t bias_backward_scratch_bytes(int64_t N, int OC);
void bias_backward(float* dbias, void* scratch, const bf16* dout, int64_t N, int OC,
                   cudaStream_t stream, bool overwrite = false);

// ---------------------------------------------------------------------------------------
// Vocab-parallel softmax cross-entropy (cross_entropy.cu), the pieces of ops/ops.h over
// bf16 logits[N,Vl] (global ids [vocab_start, vocab_start + Vl); ids >= vocab_real are
// padding and never take part; targets == -1 are ignored). Statistics are fp32.
void xent_local_max(float* row_max, const bf16* logits, int64_t N, int Vl, int64_t vocab_start,
                    int64_t vocab_real, cudaStream_t stream);
void xent_local_sumexp(float* row_sum, const bf16* logits, const float* row_max, int64_t N,
                       int Vl, int64_t vocab_start, int64_t vocab_real, cudaStream_t stream);
// Both in one pass (online softmax): row_max = the shard's max, row_sum = its sum of
// exp(x - row_max). Over TP shards: all-reduce a copy of row_max (Max), then
// xent_rescale_sum(row_sum, local max, global max) and all-reduce row_sum (Sum).
void xent_local_stats(float* row_max, float* row_sum, const bf16* logits, int64_t N, int Vl,
                      int64_t vocab_start, int64_t vocab_real, cudaStream_t stream);
void xent_rescale_sum(float* row_sum, const float* local_max, const float* global_max, int64_t N,
                      cudaStream_t stream);
void xent_target_logit(float* target_logit, const bf16* logits, const int32_t* targets,
                       int64_t N, int Vl, int64_t vocab_start, cudaStream_t stream);
void xent_losses(float* losses, const float* row_max, const float* row_sum,
                 const float* target_logit, const int32_t* targets, int64_t N,
                 cudaStream_t stream);
// dlogits = bf16((softmax - onehot) * dloss_scale), 0 for ignored rows and padding columns.
// dlogits may alias logits (in place: each element is read before it is written).
void xent_backward(bf16* dlogits, const bf16* logits, const int32_t* targets,
                   const float* row_max, const float* row_sum, int64_t N, int Vl,
                   int64_t vocab_start, int64_t vocab_real, float dloss_scale,
                   cudaStream_t stream);
// The unsharded vocabulary (one TP rank; V columns from id 0) in one kernel: row_max,
// row_sum and losses as xent_local_stats + xent_losses give them, and, when dlogits is not
// null, xent_backward's dlogits (may alias logits), bit for bit; one DRAM read of the logits.
// Whether xent_fused keeps rows of V logits in shared memory (V a multiple of 8 that fits
// this GPU's shared memory per block; 16-byte aligned buffers) or reads each row twice.
bool xent_fused_rows_in_shared_memory(int V);
void xent_fused(float* losses, float* row_max, float* row_sum, bf16* dlogits, const bf16* logits,
                const int32_t* targets, int64_t N, int V, int64_t vocab_real, float dloss_scale,
                cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Causal self-attention (attention.cu: Braid's flash attention; attention_cudnn.cu: cuDNN)
// qkv[B,T,3,NH,HS] (bf16, as the CPU op), out[B,T,NH*HS], lse[B,NH,T] (fp32 natural-log
// sum of exponentials of the scaled scores, saved for the backward). HS a multiple of 8, at
// most 128; any T. The T x T matrix is never materialised: tiles with an online softmax,
// and the backward recomputes the probabilities from lse.
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, int HS,
                       cudaStream_t stream);
// dqkv (=/+=) the gradient through the attention. Deterministic: the key/value gradients
// and the query gradients are computed by separate kernels, each element by one block.
size_t attention_backward_scratch_bytes(int B, int T, int NH);
void attention_backward(bf16* dqkv, void* scratch, const bf16* dout, const bf16* qkv,
                        const bf16* out, const float* lse, int B, int T, int NH, int HS,
                        bool accumulate, cudaStream_t stream);

// The same contract through cuDNN's fused attention (the caller selects it). Plans are
// built once per shape and cached in the CudnnAttention object; lse is [B,NH,T] fp32.
// dqkv is overwritten (accumulate is not offered). Workspace is allocated through the
// caching allocator once per plan.
class CudnnAttention {
 public:
  explicit CudnnAttention(cudnnHandle_t handle);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;
  void forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, int HS,
               cudaStream_t stream);
  void backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                const float* lse, int B, int T, int NH, int HS, cudaStream_t stream);

 private:
  struct Impl;
  Impl* impl_;
};

// ---------------------------------------------------------------------------------------
// Optimizer and norms (adamw.cu)

// A parameter tensor inside the flat fp32 buffers: [offset, offset + length), with or
// without weight decay. The table lives in device memory (upload it once).
struct ParamSegment {
  int64_t offset;
  int64_t length;
  int32_t weight_decay;  // 1: apply weight decay; 0: not (biases, layernorm, ...)
  int32_t pad_ = 0;
};
struct AdamWConfig {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // t >= 1
};
// One launch over every segment: for each element of each segment, g = grad * (*grad_scale)
// (grad_scale is a device scalar, e.g. the clipping factor; null means 1), then the CPU
// adamw_update arithmetic on fp32 param/m/v, and param_bf16 (may be null) receives
// bf16(param). `total` is the flat buffers' element count (segments lie inside it).
// max_blocks > 0: at most that many blocks of 1024 threads (about one SM each), for an
// update that runs beside other work (the overlapped optimizer step); same results.
void adamw_update(float* param, bf16* param_bf16, const float* grad, float* m, float* v,
                  const ParamSegment* segments, int num_segments, int64_t total,
                  const AdamWConfig& cfg, const float* grad_scale, cudaStream_t stream, int max_blocks = 0);
// *out = sum over the segments' elements of x^2, in fp64; deterministic (per-block fp64
// partials, summed in block order by a second pass). out is a device scalar.
size_t sum_squares_scratch_bytes(int64_t total);
void sum_squares(double* out, void* scratch, const float* x, const ParamSegment* segments,
                 int num_segments, int64_t total, cudaStream_t stream);
// *scale = min(1, max_norm / (sqrt(*sum_sq) + 1e-6)), the clipping factor, on the device.
void clip_scale_from_sum_squares(float* scale, const double* sum_sq, float max_norm,
                                 cudaStream_t stream);

}  // namespace braid::cuda
