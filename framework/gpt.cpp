// GPT-2 chunk forward/backward over the op interface and the TP mappings. The math per
// block (pre-LN):  x2 = x + Proj(Attn(LN1(x)));  out = x2 + FcProj(GELU(Fc(LN2(x2)))).
// Column-parallel: QKV (heads split) and Fc; row-parallel: Proj and FcProj, whose partial
// outputs meet in an all-reduce (or a reduce-scatter along the sequence with SP) before
// the replicated bias is added.
#include "framework/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "parallel/tp_mappings.h"

namespace braid {

Gpt::Gpt(const ModelConfig& cfg, const ModelLayout& layout, Communicator& tp, int micro_batch,
         Backend& backend)
    : cfg_(cfg), layout_(layout), tp_(tp), B_(micro_batch), be_(backend) {}

void Gpt::register_params(ParamStore& store, bool /*unused*/) {
  store_ = &store;
  const int C = cfg_.n_embd, T = cfg_.seq_len, L = cfg_.n_layer;
  const int tp = layout_.tp, r = layout_.tp_rank;
  const int Cl = int(layout_.attn_local(cfg_)), Fl = int(layout_.mlp_local(cfg_));  // padded heads: Cl*tp >= C
  const bool sp = layout_.sequence_parallel;
  const float resid_std = 0.02f / std::sqrt(2.0f * L);
  auto replicated = [&](std::string name, Shape shape, InitKind init, float std, bool wd) {
    ParamSpec s;
    s.name = std::move(name);
    s.full_shape = std::move(shape);
    s.init = init;
    s.init_std = std;
    s.weight_decay = wd;
    s.sp_partial_grad = sp;
    return store.add(s);
  };
  auto sharded = [&](std::string name, Shape shape, int dim, int64_t per_rank, InitKind init,
                     float std, bool wd) {
    ParamSpec s;
    s.name = std::move(name);
    s.full_shape = std::move(shape);
    s.shard_dim = dim;
    s.shard_offset = per_rank * r;
    s.shard_count = std::max<int64_t>(0, std::min(per_rank, s.full_shape[dim] - s.shard_offset));
    s.storage_rows = per_rank;
    s.init = init;
    s.init_std = std;
    s.weight_decay = wd;
    return store.add(s);
  };
  auto add_wte = [&](bool tied_copy) {
    ParamSpec s;
    s.name = "wte";
    s.full_shape = {cfg_.vocab_padded(), C};
    s.shard_dim = 0;
    s.storage_rows = layout_.vocab_per_rank(cfg_);
    s.shard_offset = layout_.vocab_start(cfg_);
    s.shard_count = std::max<int64_t>(0, std::min(s.storage_rows, cfg_.vocab_padded() - s.shard_offset));
    s.zero_rows_from = cfg_.vocab_size;
    s.init_std = 0.02f;
    s.weight_decay = true;
    s.own_bucket = true;
    s.tied_copy = tied_copy;
    return store.add(s);
  };

  const int V = layout_.virtual_stages;
  const int last = layout_.total_chunks() - 1;
  int wte_index = -1;
  for (int c = 0; c < V; ++c) {
    ModelChunk ch;
    ch.global_chunk = layout_.global_chunk(c);
    ch.first_layer = layout_.first_layer_of(ch.global_chunk);
    ch.has_embedding = ch.global_chunk == 0;
    ch.has_head = ch.global_chunk == last;
    if (ch.has_embedding) {
      wte_index = add_wte(false);
      ch.wte = wte_index;
      ch.wpe = replicated("wpe", {T, C}, InitKind::Normal, 0.01f, true);
    }
    for (int i = 0; i < layout_.chunk_layers[ch.global_chunk]; ++i) {
      std::string p = "h." + std::to_string(ch.first_layer + i) + ".";
      LayerParams lp;
      lp.ln1w = replicated(p + "ln1.w", {C}, InitKind::Ones, 0, false);
      lp.ln1b = replicated(p + "ln1.b", {C}, InitKind::Zeros, 0, false);
      lp.qkvw = sharded(p + "attn.qkv.w", {3, C, C}, 1, Cl, InitKind::Normal, 0.02f, true);
      lp.qkvb = sharded(p + "attn.qkv.b", {3, C}, 1, Cl, InitKind::Zeros, 0, false);
      lp.projw = sharded(p + "attn.proj.w", {C, C}, 1, Cl, InitKind::Normal, resid_std, true);
      lp.projb = replicated(p + "attn.proj.b", {C}, InitKind::Zeros, 0, false);
      lp.ln2w = replicated(p + "ln2.w", {C}, InitKind::Ones, 0, false);
      lp.ln2b = replicated(p + "ln2.b", {C}, InitKind::Zeros, 0, false);
      lp.fcw = sharded(p + "mlp.fc.w", {4 * C, C}, 0, Fl, InitKind::Normal, 0.02f, true);
      lp.fcb = sharded(p + "mlp.fc.b", {4 * C}, 0, Fl, InitKind::Zeros, 0, false);
      lp.fcprojw = sharded(p + "mlp.proj.w", {C, 4 * C}, 1, Fl, InitKind::Normal, resid_std, true);
      lp.fcprojb = replicated(p + "mlp.proj.b", {C}, InitKind::Zeros, 0, false);
      ch.layers.push_back(lp);
    }
    if (ch.has_head) {
      ch.lnfw = replicated("lnf.w", {C}, InitKind::Ones, 0, false);
      ch.lnfb = replicated("lnf.b", {C}, InitKind::Zeros, 0, false);
      // Tied head: the same parameter when the embedding is on this rank, else a copy
      // whose gradient the trainer all-reduces with the first stage's.
      ch.wte = wte_index >= 0 ? wte_index : add_wte(true);
    }
    chunks_.push_back(ch);
  }
}

void Gpt::bind_backend() { be_.bind(*store_); }

std::vector<std::vector<int>> Gpt::forward_param_groups() const {
  std::vector<std::vector<int>> groups;
  std::vector<bool> seen(size_t(store_->size()), false);
  auto group = [&](std::initializer_list<int> params) {
    std::vector<int> g;
    for (int i : params)
      if (i >= 0 && !seen[size_t(i)]) g.push_back(i), seen[size_t(i)] = true;
    if (!g.empty()) groups.push_back(std::move(g));
  };
  for (const ModelChunk& ch : chunks_) {
    if (ch.has_embedding) group({ch.wte, ch.wpe});
    for (const LayerParams& lp : ch.layers)
      group({lp.ln1w, lp.ln1b, lp.qkvw, lp.qkvb, lp.projw, lp.projb, lp.ln2w, lp.ln2b, lp.fcw, lp.fcb, lp.fcprojw,
             lp.fcprojb});
    if (ch.has_head) group({ch.lnfw, ch.lnfb, ch.wte});
  }
  return groups;
}

// ---- TP boundaries -------------------------------------------------------------------

void Gpt::to_full_seq(const Tensor& local, Tensor& full) {
  if (!layout_.sequence_parallel) {
    full = local;  // copy_to_tp forward: identity
    return;
  }
  full = be_.activation({B_, cfg_.seq_len, cfg_.n_embd});
  tp_gather_seq(tp_, local, full);
}

void Gpt::grad_from_full_seq(Tensor& dfull, Tensor& dlocal) {
  if (!layout_.sequence_parallel) {
    tp_all_reduce(tp_, dfull);  // copy_to_tp backward
    dlocal = dfull;
    return;
  }
  dlocal = be_.activation({B_, layout_.seq_local(cfg_), cfg_.n_embd});
  tp_reduce_scatter_seq(tp_, dfull, dlocal);
}

void Gpt::column_parallel_backward(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                                   int OC, Tensor& dfull, Tensor& dlocal) {
  be_.matmul_backward_input(dfull, dout, w, N, IC, OC);
  if (layout_.sequence_parallel) {
    // The reduce-scatter of dfull overlaps the weight gradient's GEMM, as the all-reduce
    // below does without SP.
    dlocal = be_.activation({B_, layout_.seq_local(cfg_), cfg_.n_embd});
    std::unique_ptr<CommRequest> scatter =
        tp_.size() > 1 ? tp_.reduce_scatter_async(dfull.raw(), dlocal.raw(), dlocal.numel(), dfull.dtype()) : nullptr;
    if (!scatter) dlocal.copy_from(dfull);
    be_.matmul_backward_weight(dout, inp, w, bias, N, IC, OC);
    if (scatter) scatter->wait();
    return;
  }
  // copy_to_tp backward: the all-reduce of dfull runs on the TP group's stream (NCCL) or
  // as a non-blocking MPI call while the weight gradient's GEMM computes.
  std::unique_ptr<CommRequest> reduce = tp_.all_reduce_async(dfull.raw(), dfull.numel(), dfull.dtype(), ReduceOp::Sum);
  be_.matmul_backward_weight(dout, inp, w, bias, N, IC, OC);
  reduce->wait();
  dlocal = dfull;
}

void Gpt::partial_to_local(Tensor& partial_full, Tensor& out_local) {
  if (!layout_.sequence_parallel) {
    tp_all_reduce(tp_, partial_full);  // reduce_from_tp forward
    out_local = partial_full;
    return;
  }
  out_local = be_.activation({B_, layout_.seq_local(cfg_), cfg_.n_embd});
  tp_reduce_scatter_seq(tp_, partial_full, out_local);
}

void Gpt::row_parallel_forward(const Tensor& inp, int w, int bias, int64_t N, int IC, int OC, Tensor& out_local) {
  Tensor partial = be_.activation({B_, cfg_.seq_len, OC});
  const int64_t chunks = std::min<int64_t>(tp_comm_chunks_, N);
  if (chunks <= 1 || tp_.size() == 1 || layout_.sequence_parallel) {
    be_.matmul_forward(partial, inp, w, bias, N, IC, OC);
    partial_to_local(partial, out_local);
    return;
  }
  // Row blocks of 8-row multiples (16-byte aligned views for any OC, IC), the last takes the rest.
  const int64_t rows = (N / chunks + 7) / 8 * 8;
  std::vector<std::unique_ptr<CommRequest>> pending;
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    Tensor out_rows = partial.view(r0 * OC, {n, OC});
    be_.matmul_forward(out_rows, inp.view(r0 * IC, {n, IC}), w, bias, n, IC, OC);
    pending.push_back(tp_.all_reduce_async(out_rows.raw(), n * OC, partial.dtype(), ReduceOp::Sum));
  }
  for (auto& p : pending) p->wait();
  out_local = partial;
}

void Gpt::grad_to_partial(const Tensor& dlocal, Tensor& dfull) {
  if (!layout_.sequence_parallel) {
    dfull = dlocal;  // reduce_from_tp backward: identity
    return;
  }
  dfull = be_.activation({B_, cfg_.seq_len, cfg_.n_embd});
  tp_gather_seq(tp_, dlocal, dfull);
}

// ---- one transformer block -----------------------------------------------------------
// The row-parallel layers' bias is replicated: TP rank 0 adds it to its partial sum, so
// the reduction adds it exactly once (its gradient is the sum of the output gradient).

void Gpt::layer_forward(const LayerParams& lp, LayerActivations& a, const Tensor& x, Tensor& out, bool ln1_ready,
                        const NextNorm* next, bool keep_gelu) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int Cl = int(layout_.attn_local(cfg_)), Fl = int(layout_.mlp_local(cfg_));
  const int NHl = layout_.heads_local(cfg_), HS = cfg_.head_size();
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  const bool rank0 = layout_.tp_rank == 0;
  a.input = x;
  if (!ln1_ready) {
    a.ln1 = be_.activation({B_, Ts, C});
    a.ln1_mean = be_.stats({Ns});
    a.ln1_rstd = be_.stats({Ns});
    be_.layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, lp.ln1w, lp.ln1b);
  }
  to_full_seq(a.ln1, a.ln1_full);
  a.qkv = be_.activation({B_, T, 3 * Cl});
  be_.matmul_forward(a.qkv, a.ln1_full, lp.qkvw, lp.qkvb, N, C, 3 * Cl);
  a.atty = be_.activation({B_, T, Cl});
  be_.attention_forward(a.atty, a.att, a.qkv, B_, T, NHl, HS);
  Tensor proj;
  row_parallel_forward(a.atty, lp.projw, rank0 ? lp.projb : -1, N, Cl, C, proj);
  a.res2 = be_.activation({B_, Ts, C});
  a.ln2 = be_.activation({B_, Ts, C});
  a.ln2_mean = be_.stats({Ns});
  a.ln2_rstd = be_.stats({Ns});
  be_.residual_layernorm_forward(a.res2, a.ln2, a.ln2_mean, a.ln2_rstd, x, proj, lp.ln2w, lp.ln2b);
  to_full_seq(a.ln2, a.ln2_full);
  a.fch = be_.activation({B_, T, Fl});
  Tensor gelu_out = be_.activation({B_, T, Fl});
  be_.matmul_gelu_forward(a.fch, gelu_out, a.ln2_full, lp.fcw, lp.fcb, N, C, Fl);
  if (keep_gelu) a.fch_gelu = gelu_out;  // else freed below, recomputed in backward
  Tensor fcproj;
  row_parallel_forward(gelu_out, lp.fcprojw, rank0 ? lp.fcprojb : -1, N, Fl, C, fcproj);
  out = be_.activation({B_, Ts, C});
  if (next) {  // the add and the next layernorm in one pass (one read of the output less)
    *next->ln = be_.activation({B_, Ts, C});
    *next->mean = be_.stats({Ns});
    *next->rstd = be_.stats({Ns});
    be_.residual_layernorm_forward(out, *next->ln, *next->mean, *next->rstd, a.res2, fcproj, next->w, next->b);
  } else {
    be_.residual_forward(out, a.res2, fcproj);
  }
}

void Gpt::layer_backward(const LayerParams& lp, LayerActivations& a, Tensor& dx,
                         bool last_mb, const FinalFn& final_fn, int dinput_sum, bool fcprojb_summed) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int Cl = int(layout_.attn_local(cfg_)), Fl = int(layout_.mlp_local(cfg_));
  const int NHl = layout_.heads_local(cfg_), HS = cfg_.head_size();
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  auto done = [&](std::initializer_list<int> ids) {
    if (last_mb)
      for (int i : ids) final_fn(i);
  };
  // MLP half: out = res2 + FcProj(GELU(Fc(LN2(res2)))). The residual gradient is dx
  // itself: every read of dx below comes before the layernorm backward adds into it.
  Tensor dres2 = dx;
  // The row-parallel layers' bias gradients: the column sums of the output gradient over
  // this rank's rows (with SP the trainer all-reduces the replicated parameters' gradients
  // over TP). The attention projection's comes from ln2's backward below, which writes its
  // output gradient; the MLP projection's from the layernorm backward that wrote dx (the
  // next layer's ln1 or lnf) when fcprojb_summed, else from a pass here (with SP) or with
  // the GEMMs below (without SP, dpartial is dx itself).
  const bool sp = layout_.sequence_parallel;
  if (sp && !fcprojb_summed) be_.bias_backward(dx, lp.fcprojb, Ns, C);
  Tensor dpartial;
  grad_to_partial(dx, dpartial);
  Tensor dfch = be_.activation({B_, T, Fl});  // d(fc out), through GELU
  {
    Tensor gelu_out = std::move(a.fch_gelu);
    a.fch_gelu = Tensor{};
    if (!gelu_out.defined()) {  // --recompute gelu
      gelu_out = be_.activation({B_, T, Fl});
      be_.gelu_forward(gelu_out, a.fch);
    }
    // GELU's derivative in the input-gradient GEMM's epilogue on the GPU; fc's bias
    // gradient (the sum of dfch) with fc's weight gradient below.
    be_.matmul_backward_gelu(dfch, dpartial, gelu_out, a.fch, lp.fcprojw, sp || fcprojb_summed ? -1 : lp.fcprojb,
                             -1, N, Fl, C);
  }
  done({lp.fcprojb, lp.fcprojw});
  Tensor dln2_full = be_.activation({B_, T, C}), dln2;
  column_parallel_backward(dfch, a.ln2_full, lp.fcw, lp.fcb, N, C, Fl, dln2_full, dln2);
  done({lp.fcw, lp.fcb});
  be_.layernorm_backward_accumulate(dres2, dln2, a.res2, lp.ln2w, lp.ln2b, a.ln2_mean, a.ln2_rstd, lp.projb);
  done({lp.ln2w, lp.ln2b});

  // Attention half: res2 = x + Proj(Attn(LN1(x))); the input gradient is dres2 itself.
  Tensor dinp = dres2;
  grad_to_partial(dres2, dpartial);
  Tensor datty = be_.activation({B_, T, Cl});
  be_.matmul_backward(&datty, dpartial, a.atty, lp.projw, -1, N, Cl, C);  // (projb: above)
  done({lp.projb, lp.projw});
  Tensor dqkv = be_.activation({B_, T, 3 * Cl});
  be_.attention_backward(dqkv, datty, a.qkv, a.atty, a.att, B_, T, NHl, HS);
  Tensor dln1_full = be_.activation({B_, T, C}), dln1;
  column_parallel_backward(dqkv, a.ln1_full, lp.qkvw, lp.qkvb, N, C, 3 * Cl, dln1_full, dln1);
  done({lp.qkvw, lp.qkvb});
  be_.layernorm_backward_accumulate(dinp, dln1, a.input, lp.ln1w, lp.ln1b, a.ln1_mean, a.ln1_rstd, dinput_sum);
  done({lp.ln1w, lp.ln1b});
  dx = dinp;
  a = LayerActivations{};  // free this layer's activations as soon as they are used
}

// ---- embedding and head --------------------------------------------------------------

void Gpt::embedding_forward(const ModelChunk& ch, ChunkActivations& acts, Tensor& out) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T;
  BRAID_CHECK(int64_t(acts.tokens.size()) == N, "embedding input has " << acts.tokens.size()
                                                                       << " tokens, expected " << N);
  Tensor partial = be_.activation({B_, T, C});
  be_.embedding_forward(partial, acts.tokens, ch.wte);
  partial_to_local(partial, out);  // vocab-parallel: each shard contributes its rows
  // Without SP the B whole samples; with SP this rank's block of the B*T token rows.
  const int64_t rows = int64_t(B_) * Ts;
  for (const PositionRun& run : position_runs(layout_.sequence_parallel ? layout_.tp_rank * rows : 0, rows, T)) {
    Tensor x = out.view(run.row * C, {run.samples, run.len, C});
    be_.position_forward(x, ch.wpe, run.samples, run.len, run.pos);
  }
}

void Gpt::embedding_backward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& dx) {
  const int C = cfg_.n_embd, Ts = layout_.seq_local(cfg_);
  const int64_t rows = int64_t(B_) * Ts;
  for (const PositionRun& run : position_runs(layout_.sequence_parallel ? layout_.tp_rank * rows : 0, rows,
                                              cfg_.seq_len)) {
    const Tensor d = dx.view(run.row * C, {run.samples, run.len, C});
    be_.position_backward(d, ch.wpe, run.samples, run.len, run.pos);
  }
  Tensor dfull;
  grad_to_partial(dx, dfull);
  be_.embedding_backward(dfull, acts.tokens, ch.wte);
}

void Gpt::head_forward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& x,
                       bool compute_grad, float dloss_scale, bool lnf_ready) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  if (!lnf_ready) {
    acts.lnf = be_.activation({B_, Ts, C});
    acts.lnf_mean = be_.stats({Ns});
    acts.lnf_rstd = be_.stats({Ns});
    be_.layernorm_forward(acts.lnf, acts.lnf_mean, acts.lnf_rstd, x, ch.lnfw, ch.lnfb);
  }
  to_full_seq(acts.lnf, acts.lnf_full);
  const Param& wte = (*store_)[ch.wte];
  const int Vl = int(wte.spec.storage_rows);
  if (acts.targets.empty() || loss_chunk_bytes_ <= 0) {
    acts.logits = be_.activation({B_, T, Vl});
    be_.matmul_forward(acts.logits, acts.lnf_full, ch.wte, -1, N, C, Vl);
    if (acts.targets.empty()) return;  // inference: keep the logits
    BRAID_CHECK(int64_t(acts.targets.size()) == N, "targets size");
    acts.loss_sum = be_.cross_entropy(acts.logits, acts.targets, N, Vl, wte.spec.shard_offset,
                                      cfg_.vocab_size, tp_, compute_grad, dloss_scale);
    return;
  }
  // Chunked loss: logits of `rows` rows at a time; with compute_grad each chunk's dlogits
  // goes straight into d(lnf_full) and the tied embedding's gradient.
  BRAID_CHECK(int64_t(acts.targets.size()) == N, "targets size");
  const int64_t rows = loss_chunk_rows(loss_chunk_bytes_, N, Vl, int(dtype_bytes(be_.activation_dtype())));
  if (compute_grad) acts.dlnf_full = be_.activation({B_, T, C});
  const Tensor targets = be_.targets_tensor(acts.targets);
  Tensor losses = be_.stats({N});  // per row; summed on the host once, after the last chunk
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    const Tensor in = acts.lnf_full.view(r0 * C, {n, C});
    Tensor logits = be_.activation({n, Vl});
    be_.matmul_forward(logits, in, ch.wte, -1, n, C, Vl);
    Tensor chunk_losses = losses.view(r0, {n});
    be_.cross_entropy_rows(logits, targets.view(r0, {n}), chunk_losses, n, Vl, wte.spec.shard_offset,
                           cfg_.vocab_size, tp_, compute_grad, dloss_scale);
    if (compute_grad) {
      Tensor din = acts.dlnf_full.view(r0 * C, {n, C});
      be_.matmul_backward(&din, logits, in, ch.wte, -1, n, C, Vl);
    }
  }
  acts.loss_sum = be_.sum_to_host(losses);
  // The backward needs only d(lnf_full), the input and the statistics.
  acts.lnf_full = Tensor{};
  acts.lnf = Tensor{};
}

void Gpt::head_backward(const ModelChunk& ch, ChunkActivations& acts, Tensor& dx, int dinput_sum) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T;
  Tensor dlnf_full, dlnf;
  if (acts.dlnf_full.defined()) {  // chunked loss: the head's GEMMs ran in the forward
    dlnf_full = std::move(acts.dlnf_full);
    acts.dlnf_full = Tensor{};
  } else {
    const int Vl = int((*store_)[ch.wte].spec.storage_rows);
    dlnf_full = be_.activation({B_, T, C});
    be_.matmul_backward(&dlnf_full, acts.logits, acts.lnf_full, ch.wte, -1, N, C, Vl);
  }
  grad_from_full_seq(dlnf_full, dlnf);
  dx = be_.activation_zeros({B_, Ts, C});
  be_.layernorm_backward_accumulate(dx, dlnf, acts.output, ch.lnfw, ch.lnfb, acts.lnf_mean, acts.lnf_rstd,
                                    dinput_sum);
}

// ---- chunks --------------------------------------------------------------------------

void Gpt::forward(int c, ChunkActivations& acts, const Tensor* input, bool compute_grad,
                  float dloss_scale) {
  const ModelChunk& ch = chunks_.at(c);
  const int C = cfg_.n_embd, Ts = layout_.seq_local(cfg_);
  Tensor x;
  if (ch.has_embedding) {
    embedding_forward(ch, acts, x);
  } else {
    BRAID_CHECK(input && input->numel() == int64_t(B_) * Ts * C, "chunk input shape");
    x = *input;
  }
  const size_t layers = ch.layers.size();
  acts.layers.resize(layers);
  bool ready = false;  // this layer's ln1 made by the previous layer's residual pass
  for (size_t l = 0; l < layers; ++l) {
    Tensor out;
    NextNorm next;
    if (l + 1 < layers) {
      LayerActivations& na = acts.layers[l + 1];
      next = {ch.layers[l + 1].ln1w, ch.layers[l + 1].ln1b, &na.ln1, &na.ln1_mean, &na.ln1_rstd};
    } else if (ch.has_head) {
      next = {ch.lnfw, ch.lnfb, &acts.lnf, &acts.lnf_mean, &acts.lnf_rstd};
    }
    const bool recompute = recomputes(l);
    layer_forward(ch.layers[l], acts.layers[l], x, out, ready, next.ln ? &next : nullptr,
                  !(recompute_gelu_ && recompute));
    ready = next.ln != nullptr;
    if (!compute_grad) {
      acts.layers[l] = LayerActivations{};  // no backward: nothing to keep
    } else if (recompute_layers_ && recompute) {
      acts.layers[l] = LayerActivations{};  // the backward runs this layer's forward again
      acts.layers[l].input = x;
    }
    x = out;
  }
  acts.output = x;
  if (ch.has_head) head_forward(ch, acts, x, compute_grad, dloss_scale, ready);
}

void Gpt::backward(int c, ChunkActivations& acts, const Tensor* dout, Tensor& dinput,
                   bool last_mb, const FinalFn& final_fn) {
  const ModelChunk& ch = chunks_.at(c);
  Tensor dx;
  const int layers = int(ch.layers.size());
  bool summed = false;  // dx's column sums already in the top layer's fcprojb gradient
  if (ch.has_head) {
    head_backward(ch, acts, dx, layers > 0 ? ch.layers.back().fcprojb : -1);
    summed = layers > 0;
    if (last_mb) {
      final_fn(ch.lnfw);
      final_fn(ch.lnfb);
    }
  } else {
    BRAID_CHECK(dout != nullptr, "backward of a non-last chunk needs the output gradient");
    dx = dout->clone();
  }
  for (int l = layers - 1; l >= 0; --l) {
    if (recompute_layers_ && recomputes(size_t(l))) {  // the same forward again, on the same input
      const Tensor x = acts.layers[size_t(l)].input;
      Tensor out;  // its backward follows at once: GELU's output kept
      layer_forward(ch.layers[size_t(l)], acts.layers[size_t(l)], x, out, false, nullptr, true);
    }
    layer_backward(ch.layers[size_t(l)], acts.layers[size_t(l)], dx, last_mb, final_fn,
                   l > 0 ? ch.layers[size_t(l) - 1].fcprojb : -1, summed);
    summed = l > 0;
  }
  if (ch.has_embedding) {
    embedding_backward(ch, acts, dx);
    if (last_mb) final_fn(ch.wpe);
  }
  dinput = dx;
}

}  // namespace braid
