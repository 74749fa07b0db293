// The GPT-2 model as this rank holds it: one or more pipeline chunks (consecutive layers),
// the embedding on global chunk 0, the final layernorm, tied LM head and vocab-parallel
// loss on the last global chunk, every matrix sharded Megatron-style over the TP group.
// Forward and backward are explicit per (microbatch, chunk); activations saved for the
// backward live in a ChunkActivations owned by the caller (the pipeline engine), so the
// schedule decides how many are alive at once.
//
// Shapes: B micro-batch, T sequence, Ts local sequence (T/TP with sequence parallelism,
// else T), C width, NHl = ceil(heads/TP) (padding heads on the last ranks when TP does
// not divide them), Cl = NHl x head size, Fl = 4C/TP, Vl = vocabulary rows per TP rank.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "framework/backend.h"
#include "framework/model_config.h"
#include "framework/params.h"
#include "parallel/communicator.h"

namespace braid {

struct LayerParams {
  int ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
};

struct ModelChunk {
  int global_chunk = 0;
  int first_layer = 0;
  bool has_embedding = false, has_head = false;
  std::vector<LayerParams> layers;
  int wte = -1, wpe = -1, lnfw = -1, lnfb = -1;
};

struct LayerActivations {
  Tensor input;                  // [B,Ts,C] residual in
  Tensor ln1, ln1_mean, ln1_rstd;
  Tensor ln1_full;               // [B,T,C] (gathered under SP, else aliases ln1)
  Tensor qkv, att, atty;         // [B,T,3Cl], backend's saved state, [B,T,Cl]
  Tensor res2;                   // [B,Ts,C] after attention residual
  Tensor ln2, ln2_mean, ln2_rstd, ln2_full;
  Tensor fch, fch_gelu;          // [B,T,Fl] (fch_gelu undefined with --recompute gelu)
};

struct ChunkActivations {
  std::vector<int32_t> tokens, targets;  // [B*T], first / last chunk only
  std::vector<LayerActivations> layers;
  Tensor output;                  // [B,Ts,C] residual out (sent to the next chunk)
  // Head: final layernorm and logits (overwritten in place by dlogits when training).
  // With a chunked loss (Gpt::set_loss_chunk_bytes) no logits outlive the forward: the
  // head's backward runs chunk by chunk inside it and leaves d(lnf_full) in dlnf_full.
  Tensor lnf, lnf_mean, lnf_rstd, lnf_full, logits, dlnf_full;
  double loss_sum = 0;            // sum of per-token losses of this microbatch (this rank's rows)
};

class Gpt {
 public:
  Gpt(const ModelConfig& cfg, const ModelLayout& layout, Communicator& tp, int micro_batch,
      Backend& backend);

  // Registers this rank's parameters in `store` (call before store.finalize()), then
  // bind_backend() after store.finalize() (and after values live where they will stay).
  void register_params(ParamStore& store, bool tied_copy_on_head);
  void bind_backend();
  Backend& backend() { return be_; }
  ParamStore& store() { return *store_; }
  const std::vector<ModelChunk>& chunks() const { return chunks_; }
  // This rank's parameters grouped in the order a forward reads them: per chunk the
  // embedding tables, each layer's, the head's (Optimizer::set_overlap).
  std::vector<std::vector<int>> forward_param_groups() const;
  const ModelConfig& config() const { return cfg_; }
  const ModelLayout& layout() const { return layout_; }

  // Forward of local chunk c. `input` is [B,Ts,C] for non-first chunks (ignored otherwise);
  // tokens/targets in acts must be set for the first / last chunk. With compute_grad the
  // head turns logits into dlogits scaled by dloss_scale (the 1/total-tokens of the step);
  // without it (evaluation, sampling) each layer's activations are freed as soon as the
  // next layer has its input.
  void forward(int c, ChunkActivations& acts, const Tensor* input, bool compute_grad,
               float dloss_scale);
  // Backward of local chunk c. `dout` is [B,Ts,C] for non-last chunks; returns d(input)
  // [B,Ts,C] in dinput (unused for the first chunk). Accumulates parameter gradients and
  // calls on_param_final(i) for each parameter when `last_microbatch` is set, in the order
  // their gradients become final.
  // The tied embedding (an own-bucket parameter) is never reported: it is final only
  // when the whole step's backward is done, which the trainer knows.
  using FinalFn = std::function<void(int)>;
  void backward(int c, ChunkActivations& acts, const Tensor* dout, Tensor& dinput,
                bool last_microbatch, const FinalFn& on_param_final);

  int micro_batch() const { return B_; }

  // Loss over row chunks whose logits take at most `bytes` (0 = one [B*T, Vl] logits
  // tensor kept from forward to backward). Chunked, a training forward of the last chunk
  // also runs the head's backward (dW of the tied embedding accumulates then) and keeps
  // only d(lnf) [B,T,C]; evaluation computes the loss chunk by chunk. Inference (no
  // targets) always keeps the whole logits.
  void set_loss_chunk_bytes(int64_t bytes) { loss_chunk_bytes_ = bytes; }
  // Keep only GELU's input from the forward and recompute its output in the backward
  // (one elementwise pass per layer) instead of storing both: 4 B T C/TP fewer activation
  // elements per layer (a quarter of a layer's).
  void set_recompute_gelu(bool on) { recompute_gelu_ = on; }
  // Full recomputation (--recompute full): a training forward keeps only each layer's
  // input; the backward runs the layer's forward again (keeping everything, GELU's output
  // included) right before its backward. One more forward of the layers per step, for
  // activations of one layer instead of all (Megatron's full activation checkpointing).
  void set_recompute_layers(bool on) { recompute_layers_ = on; }
  // Either recomputation applies to the first n layers of each model chunk only; the
  // others store everything, as without it (-1: every layer; --recompute-num-layers).
  void set_recompute_num_layers(int n) { recompute_num_layers_ = n; }
  // Tensor parallelism without SP: each row-parallel GEMM of the forward (attention's
  // output projection, the MLP's second layer) runs in `chunks` row blocks, each block's
  // all-reduce started as soon as its GEMM is done, so that it overlaps the next block's
  // GEMM (1 = one GEMM, then one blocking all-reduce).
  void set_tp_comm_chunks(int chunks) { tp_comm_chunks_ = chunks; }

 private:
  // The layernorm that reads a layer's output (the next layer's ln1, or lnf), made in the
  // same pass as the residual add that writes the output: its parameters and where its
  // output and statistics go.
  struct NextNorm {
    int w = -1, b = -1;
    Tensor *ln = nullptr, *mean = nullptr, *rstd = nullptr;
  };
  // ln1_ready: a.ln1 and its statistics were made by the previous layer's residual pass.
  // keep_gelu: GELU's output stays in a.fch_gelu (else only its input, recomputed later).
  void layer_forward(const LayerParams& lp, LayerActivations& a, const Tensor& x, Tensor& out, bool ln1_ready,
                     const NextNorm* next, bool keep_gelu);
  bool recomputes(size_t l) const { return recompute_num_layers_ < 0 || l < size_t(recompute_num_layers_); }
  // The bias gradients of the layers whose output gradient a layernorm backward writes come
  // from that pass (Backend::layernorm_backward_accumulate's dsum): the attention
  // projection's from ln2's; the MLP projection's from the next layer's ln1 (or lnf's) when
  // that layer is in this chunk. dinput_sum: the bias to get dinput's column sums (the
  // previous layer's MLP projection bias, or -1); fcprojb_summed: dout's column sums are
  // already in lp.fcprojb's gradient.
  void layer_backward(const LayerParams& lp, LayerActivations& a, Tensor& dx /* in: dout, out: dinput */,
                      bool last_microbatch, const FinalFn& final_fn, int dinput_sum, bool fcprojb_summed);
  void embedding_forward(const ModelChunk& ch, ChunkActivations& acts, Tensor& out);
  void embedding_backward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& dx);
  // lnf_ready: acts.lnf and its statistics were made by the last layer's residual pass.
  void head_forward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& x,
                    bool compute_grad, float dloss_scale, bool lnf_ready);
  void head_backward(const ModelChunk& ch, ChunkActivations& acts, Tensor& dx, int dinput_sum);
  // TP boundary helpers: gather (SP) or copy into the full-sequence buffer, and the twins.
  void to_full_seq(const Tensor& local, Tensor& full);
  void grad_from_full_seq(Tensor& dfull, Tensor& dlocal);  // dlocal += reduce(dfull)
  // Input gradient of a column-parallel GEMM (W: [OC, IC]) with its TP reduction
  // overlapping the weight gradient's GEMM: dfull = dout @ W, the reduction of dfull
  // started, dW (and dbias) accumulated, the reduction completed into dlocal (an
  // all-reduce, or under sequence parallelism a reduce-scatter into the local block).
  void column_parallel_backward(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                                int OC, Tensor& dfull, Tensor& dlocal);
  void partial_to_local(Tensor& partial_full, Tensor& out_local);
  // out_local = reduce(inp @ W^T + bias on TP rank 0): the row-parallel layer's forward,
  // in tp_comm_chunks_ overlapped row blocks where that applies.
  void row_parallel_forward(const Tensor& inp, int w, int bias, int64_t N, int IC, int OC, Tensor& out_local);
  void grad_to_partial(const Tensor& dlocal, Tensor& dfull);


  ModelConfig cfg_;
  ModelLayout layout_;
  Communicator& tp_;
  int B_;
  ParamStore* store_ = nullptr;
  std::vector<ModelChunk> chunks_;
  Backend& be_;
  int64_t loss_chunk_bytes_ = 0;
  bool recompute_gelu_ = false;
  bool recompute_layers_ = false;
  int recompute_num_layers_ = -1;
  int tp_comm_chunks_ = 1;
};

}  // namespace braid
