// The op interface. Every op is a <name>_forward / <name>_backward pair over raw,
// contiguous row-major buffers; the Tensor-level entry points in ops/dispatch.h pick the
// CPU or CUDA implementation from the tensor's device. Backward functions ACCUMULATE
// (+=) into parameter and input gradients, so a tensor used twice (the tied embedding,
// the residual stream) sums its gradients naturally; callers zero gradients once per step
// (the trainer lazily: the CUDA backend then makes a step's first write with = instead).
//
// Shape letters, declared once:  N = B*T rows (tokens), B batch, T time, C channels,
// OC/IC output/input channels of a linear layer, V vocabulary, NH heads, HS head size.
#pragma once
#include <cstdint>

namespace braid::cpu {

// out[N,C] = wte[tokens[n] - vocab_start] for tokens owned by this vocabulary shard
// [vocab_start, vocab_start + vocab_count), zero for the others (vocab-parallel).
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int C,
                       int64_t vocab_start, int64_t vocab_count);
// dwte[v - vocab_start] += dout[n] for owned tokens. Sequential over n: deterministic.
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int C,
                        int64_t vocab_start, int64_t vocab_count);
// out[b,t,:] += wpe[pos_offset + t, :] for t < T (T = local sequence length).
void position_forward(float* out, const float* wpe, int B, int T, int C, int pos_offset);
// dwpe[pos_offset + t] += sum_b dout[b,t].
void position_backward(float* dwpe, const float* dout, int B, int T, int C, int pos_offset);

// out = (inp - mean) * rstd * w + b over the last dim C; mean/rstd [N] saved for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int64_t N, int C);
// dinp += LN'(dout); dw, db accumulate; dsum (optional) += the column sums of the updated dinp.
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int64_t N, int C,
                        float* dsum = nullptr);

// out[N,OC] = inp[N,IC] @ w[OC,IC]^T + bias[OC] (bias may be null). PyTorch nn.Linear layout.
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                    int IC, int OC);
// dinp += dout @ w ; dw += dout^T @ inp ; dbias += sum_n dout. Any of dinp/dw/dbias may be null.
// With accumulate_dinp = false, dinp is overwritten instead (no zero-fill pass needed).
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int64_t N, int IC, int OC, bool accumulate_dinp = true);

// Causal multi-head self-attention over qkv[B,T,3,NH,HS] (q, k, v groups, each NH*HS wide),
// out[B,T,NH*HS]. att[B,NH,T,T] holds the softmax probabilities for the backward pass.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int NH, int HS);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        int B, int T, int NH, int HS);

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp += gelu'(inp) * dout, or dinp = ... with accumulate = false.
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, bool accumulate = true);

// out = a + b; the backward is dout added to both inputs' gradients.
void residual_forward(float* out, const float* a, const float* b, int64_t n);
void add_inplace(float* dst, const float* src, int64_t n);
void scale_inplace(float* x, float s, int64_t n);

// Vocab-parallel softmax cross-entropy, split in the pieces between which the tensor-
// parallel layer all-reduces over the vocabulary shards. logits[N,Vl] cover global ids
// [vocab_start, vocab_start + Vl); ids >= vocab_real (padding) never take part.
// Targets equal to ignore_index contribute no loss and no gradient.
constexpr int32_t kIgnoreIndex = -1;
void xent_local_max(float* row_max, const float* logits, int64_t N, int Vl, int64_t vocab_start,
                    int64_t vocab_real);
void xent_local_sumexp(float* row_sum, const float* logits, const float* row_max, int64_t N,
                       int Vl, int64_t vocab_start, int64_t vocab_real);
// target_logit[n] = logits[n, t - vocab_start] when this shard owns target t, else 0.
void xent_target_logit(float* target_logit, const float* logits, const int32_t* targets,
                       int64_t N, int Vl, int64_t vocab_start);
// losses[n] = log(row_sum) + row_max - target_logit (0 for ignored targets).
void xent_losses(float* losses, const float* row_max, const float* row_sum,
                 const float* target_logit, const int32_t* targets, int64_t N);
// dlogits = (softmax - onehot(target)) * dloss_scale for non-ignored rows; 0 elsewhere and
// on padding columns. Overwrites dlogits.
void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                   const float* row_max, const float* row_sum, int64_t N, int Vl,
                   int64_t vocab_start, int64_t vocab_real, float dloss_scale);

// Training variant that computes each exponential once: replaces logits in place with
// exp(logit - row_max) (0 on padding columns) and returns their row sums; then
// xent_backward_from_exp turns them into dlogits = (exp / row_sum - onehot) * scale.
void xent_exp_sum_inplace(float* row_sum, float* logits_to_exp, const float* row_max, int64_t N,
                          int Vl, int64_t vocab_start, int64_t vocab_real);
void xent_backward_from_exp(float* dlogits_from_exp, const int32_t* targets, const float* row_sum,
                            int64_t N, int Vl, int64_t vocab_start, int64_t vocab_real,
                            float dloss_scale);

// AdamW with decoupled weight decay and bias correction (step t >= 1):
//   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * p )
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t);

// Sum of squares, accumulated in double (the global norm all-reduces these partials).
double sum_squares(const float* x, int64_t n);

}  // namespace braid::cpu

namespace braid {
// Threads of the CPU BLAS per rank (OpenBLAS). Results are deterministic for a fixed count.
void set_cpu_threads(int n);
}  // namespace braid
