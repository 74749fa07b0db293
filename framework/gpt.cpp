// GPT-2 chunk forward/backward over the op interface and the TP mappings. The math per
// block (pre-LN):  x2 = x + Proj(Attn(LN1(x)));  out = x2 + FcProj(GELU(Fc(LN2(x2)))).
// Column-parallel: QKV (heads split) and Fc; row-parallel: Proj and FcProj, whose partial
// outputs meet in an all-reduce (or a reduce-scatter along the sequence with SP) before
// the replicated bias is added.
#include "framework/gpt.h"

#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "parallel/tp_mappings.h"

namespace braid {

Gpt::Gpt(const ModelConfig& cfg, const ModelLayout& layout, Communicator& tp, int micro_batch)
    : cfg_(cfg), layout_(layout), tp_(tp), B_(micro_batch) {}

void Gpt::register_params(ParamStore& store, bool /*unused*/) {
  store_ = &store;
  const int C = cfg_.n_embd, T = cfg_.seq_len, L = cfg_.n_layer;
  const int tp = layout_.tp, r = layout_.tp_rank;
  const int Cl = C / tp;
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
      lp.fcw = sharded(p + "mlp.fc.w", {4 * C, C}, 0, 4 * Cl, InitKind::Normal, 0.02f, true);
      lp.fcb = sharded(p + "mlp.fc.b", {4 * C}, 0, 4 * Cl, InitKind::Zeros, 0, false);
      lp.fcprojw = sharded(p + "mlp.proj.w", {C, 4 * C}, 1, 4 * Cl, InitKind::Normal, resid_std, true);
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

// ---- TP boundaries -------------------------------------------------------------------

void Gpt::to_full_seq(const Tensor& local, Tensor& full) {
  if (!layout_.sequence_parallel) {
    full = local;  // copy_to_tp forward: identity
    return;
  }
  full = Tensor::empty({B_, cfg_.seq_len, cfg_.n_embd});
  tp_gather_seq(tp_, local.f32(), full.f32(), B_, cfg_.seq_len, cfg_.n_embd, scratch_);
}

void Gpt::grad_from_full_seq(Tensor& dfull, Tensor& dlocal) {
  if (!layout_.sequence_parallel) {
    tp_all_reduce(tp_, dfull.f32(), dfull.numel());  // copy_to_tp backward
    dlocal = dfull;
    return;
  }
  dlocal = Tensor::empty({B_, layout_.seq_local(cfg_), cfg_.n_embd});
  tp_reduce_scatter_seq(tp_, dfull.f32(), dlocal.f32(), B_, cfg_.seq_len, cfg_.n_embd, scratch_);
}

void Gpt::partial_to_local(Tensor& partial_full, Tensor& out_local) {
  if (!layout_.sequence_parallel) {
    tp_all_reduce(tp_, partial_full.f32(), partial_full.numel());  // reduce_from_tp forward
    out_local = partial_full;
    return;
  }
  out_local = Tensor::empty({B_, layout_.seq_local(cfg_), cfg_.n_embd});
  tp_reduce_scatter_seq(tp_, partial_full.f32(), out_local.f32(), B_, cfg_.seq_len, cfg_.n_embd,
                        scratch_);
}

void Gpt::grad_to_partial(const Tensor& dlocal, Tensor& dfull) {
  if (!layout_.sequence_parallel) {
    dfull = dlocal;  // reduce_from_tp backward: identity
    return;
  }
  dfull = Tensor::empty({B_, cfg_.seq_len, cfg_.n_embd});
  tp_gather_seq(tp_, dlocal.f32(), dfull.f32(), B_, cfg_.seq_len, cfg_.n_embd, scratch_);
}

namespace {
void add_bias_rows(float* x, const float* bias, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) x[n * C + c] += bias[c];
}
void bias_grad_rows(float* dbias, const float* dout, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) dbias[c] += dout[n * C + c];
}
}  // namespace

// ---- one transformer block -----------------------------------------------------------

void Gpt::layer_forward(const LayerParams& lp, LayerActivations& a, const Tensor& x, Tensor& out) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int Cl = C / layout_.tp, NHl = layout_.heads_local(cfg_), HS = cfg_.head_size();
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  a.input = x;
  a.ln1 = Tensor::empty({B_, Ts, C});
  a.ln1_mean = Tensor::empty({Ns});
  a.ln1_rstd = Tensor::empty({Ns});
  cpu::layernorm_forward(a.ln1.f32(), a.ln1_mean.f32(), a.ln1_rstd.f32(), x.f32(), val(lp.ln1w),
                         val(lp.ln1b), Ns, C);
  to_full_seq(a.ln1, a.ln1_full);
  a.qkv = Tensor::empty({B_, T, 3 * Cl});
  cpu::matmul_forward(a.qkv.f32(), a.ln1_full.f32(), val(lp.qkvw), val(lp.qkvb), N, C, 3 * Cl);
  a.att = Tensor::empty({B_, NHl, T, T});
  a.atty = Tensor::empty({B_, T, Cl});
  cpu::attention_forward(a.atty.f32(), a.att.f32(), a.qkv.f32(), B_, T, NHl, HS);
  Tensor proj_partial = Tensor::empty({B_, T, C}), proj;
  cpu::matmul_forward(proj_partial.f32(), a.atty.f32(), val(lp.projw), nullptr, N, Cl, C);
  partial_to_local(proj_partial, proj);
  add_bias_rows(proj.f32(), val(lp.projb), Ns, C);
  a.res2 = Tensor::empty({B_, Ts, C});
  cpu::residual_forward(a.res2.f32(), x.f32(), proj.f32(), Ns * C);

  a.ln2 = Tensor::empty({B_, Ts, C});
  a.ln2_mean = Tensor::empty({Ns});
  a.ln2_rstd = Tensor::empty({Ns});
  cpu::layernorm_forward(a.ln2.f32(), a.ln2_mean.f32(), a.ln2_rstd.f32(), a.res2.f32(),
                         val(lp.ln2w), val(lp.ln2b), Ns, C);
  to_full_seq(a.ln2, a.ln2_full);
  a.fch = Tensor::empty({B_, T, 4 * Cl});
  a.fch_gelu = Tensor::empty({B_, T, 4 * Cl});
  cpu::matmul_forward(a.fch.f32(), a.ln2_full.f32(), val(lp.fcw), val(lp.fcb), N, C, 4 * Cl);
  cpu::gelu_forward(a.fch_gelu.f32(), a.fch.f32(), N * 4 * Cl);
  Tensor fc_partial = Tensor::empty({B_, T, C}), fcproj;
  cpu::matmul_forward(fc_partial.f32(), a.fch_gelu.f32(), val(lp.fcprojw), nullptr, N, 4 * Cl, C);
  partial_to_local(fc_partial, fcproj);
  add_bias_rows(fcproj.f32(), val(lp.fcprojb), Ns, C);
  out = Tensor::empty({B_, Ts, C});
  cpu::residual_forward(out.f32(), a.res2.f32(), fcproj.f32(), Ns * C);
}

void Gpt::layer_backward(const LayerParams& lp, LayerActivations& a, Tensor& dx,
                         bool last_mb, const FinalFn& final_fn) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int Cl = C / layout_.tp, NHl = layout_.heads_local(cfg_), HS = cfg_.head_size();
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  auto done = [&](std::initializer_list<int> ids) {
    if (last_mb)
      for (int i : ids) final_fn(i);
  };
  // MLP half: out = res2 + FcProj(GELU(Fc(LN2(res2))))
  Tensor dres2 = dx.clone();
  bias_grad_rows(grad(lp.fcprojb), dx.f32(), Ns, C);
  Tensor dpartial;
  grad_to_partial(dx, dpartial);
  Tensor dgelu({B_, T, 4 * Cl});
  cpu::matmul_backward(dgelu.f32(), grad(lp.fcprojw), nullptr, dpartial.f32(), a.fch_gelu.f32(),
                       val(lp.fcprojw), N, 4 * Cl, C);
  done({lp.fcprojb, lp.fcprojw});
  Tensor dfch({B_, T, 4 * Cl});
  cpu::gelu_backward(dfch.f32(), a.fch.f32(), dgelu.f32(), N * 4 * Cl);
  Tensor dln2_full({B_, T, C}), dln2;
  cpu::matmul_backward(dln2_full.f32(), grad(lp.fcw), grad(lp.fcb), dfch.f32(), a.ln2_full.f32(),
                       val(lp.fcw), N, C, 4 * Cl);
  done({lp.fcw, lp.fcb});
  grad_from_full_seq(dln2_full, dln2);
  cpu::layernorm_backward(dres2.f32(), grad(lp.ln2w), grad(lp.ln2b), dln2.f32(), a.res2.f32(),
                          val(lp.ln2w), a.ln2_mean.f32(), a.ln2_rstd.f32(), Ns, C);
  done({lp.ln2w, lp.ln2b});

  // Attention half: res2 = x + Proj(Attn(LN1(x)))
  Tensor dinp = dres2.clone();
  bias_grad_rows(grad(lp.projb), dres2.f32(), Ns, C);
  grad_to_partial(dres2, dpartial);
  Tensor datty({B_, T, Cl});
  cpu::matmul_backward(datty.f32(), grad(lp.projw), nullptr, dpartial.f32(), a.atty.f32(),
                       val(lp.projw), N, Cl, C);
  done({lp.projb, lp.projw});
  Tensor dqkv({B_, T, 3 * Cl});
  cpu::attention_backward(dqkv.f32(), datty.f32(), a.qkv.f32(), a.att.f32(), B_, T, NHl, HS);
  Tensor dln1_full({B_, T, C}), dln1;
  cpu::matmul_backward(dln1_full.f32(), grad(lp.qkvw), grad(lp.qkvb), dqkv.f32(),
                       a.ln1_full.f32(), val(lp.qkvw), N, C, 3 * Cl);
  done({lp.qkvw, lp.qkvb});
  grad_from_full_seq(dln1_full, dln1);
  cpu::layernorm_backward(dinp.f32(), grad(lp.ln1w), grad(lp.ln1b), dln1.f32(), a.input.f32(),
                          val(lp.ln1w), a.ln1_mean.f32(), a.ln1_rstd.f32(), Ns, C);
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
  const Param& wte = (*store_)[ch.wte];
  Tensor partial = Tensor::empty({B_, T, C});
  cpu::embedding_forward(partial.f32(), acts.tokens.data(), wte.value.f32(), N, C,
                         wte.spec.shard_offset, wte.spec.storage_rows);
  partial_to_local(partial, out);  // vocab-parallel: each shard contributes its rows
  int pos_offset = layout_.sequence_parallel ? layout_.tp_rank * Ts : 0;
  cpu::position_forward(out.f32(), val(ch.wpe), B_, Ts, C, pos_offset);
}

void Gpt::embedding_backward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& dx) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T;
  int pos_offset = layout_.sequence_parallel ? layout_.tp_rank * Ts : 0;
  cpu::position_backward(grad(ch.wpe), dx.f32(), B_, Ts, C, pos_offset);
  Tensor dfull;
  grad_to_partial(dx, dfull);
  const Param& wte = (*store_)[ch.wte];
  cpu::embedding_backward(wte.grad.f32(), dfull.f32(), acts.tokens.data(), N, C,
                          wte.spec.shard_offset, wte.spec.storage_rows);
}

void Gpt::head_forward(const ModelChunk& ch, ChunkActivations& acts, const Tensor& x,
                       bool compute_grad, float dloss_scale) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  acts.lnf = Tensor::empty({B_, Ts, C});
  acts.lnf_mean = Tensor::empty({Ns});
  acts.lnf_rstd = Tensor::empty({Ns});
  cpu::layernorm_forward(acts.lnf.f32(), acts.lnf_mean.f32(), acts.lnf_rstd.f32(), x.f32(),
                         val(ch.lnfw), val(ch.lnfb), Ns, C);
  to_full_seq(acts.lnf, acts.lnf_full);
  const Param& wte = (*store_)[ch.wte];
  const int Vl = int(wte.spec.storage_rows);
  const int64_t vstart = wte.spec.shard_offset;
  acts.logits = Tensor::empty({B_, T, Vl});
  cpu::matmul_forward(acts.logits.f32(), acts.lnf_full.f32(), wte.value.f32(), nullptr, N, C, Vl);
  if (acts.targets.empty()) return;  // inference: keep the logits
  BRAID_CHECK(int64_t(acts.targets.size()) == N, "targets size");
  // Vocab-parallel cross-entropy: the logits are never gathered; three all-reduces of
  // N floats each (max, sum of exponentials, target logit) assemble the softmax.
  std::vector<float> row_max(N), row_sum(N), tlogit(N), losses(N);
  cpu::xent_local_max(row_max.data(), acts.logits.f32(), N, Vl, vstart, cfg_.vocab_size);
  tp_.all_reduce(row_max.data(), N, DType::F32, ReduceOp::Max);
  cpu::xent_target_logit(tlogit.data(), acts.logits.f32(), acts.targets.data(), N, Vl, vstart);
  tp_.all_reduce(tlogit.data(), N, DType::F32, ReduceOp::Sum);
  if (compute_grad)  // each exponential once: the logits buffer becomes exp(l - max)
    cpu::xent_exp_sum_inplace(row_sum.data(), acts.logits.f32(), row_max.data(), N, Vl, vstart,
                              cfg_.vocab_size);
  else
    cpu::xent_local_sumexp(row_sum.data(), acts.logits.f32(), row_max.data(), N, Vl, vstart,
                           cfg_.vocab_size);
  tp_.all_reduce(row_sum.data(), N, DType::F32, ReduceOp::Sum);
  cpu::xent_losses(losses.data(), row_max.data(), row_sum.data(), tlogit.data(),
                   acts.targets.data(), N);
  double s = 0;
  for (int64_t n = 0; n < N; ++n) s += losses[n];
  acts.loss_sum = s;
  if (compute_grad)  // in place: exp(logits) become dlogits (the loss scale is known up front)
    cpu::xent_backward_from_exp(acts.logits.f32(), acts.targets.data(), row_sum.data(), N, Vl,
                                vstart, cfg_.vocab_size, dloss_scale);
}

void Gpt::head_backward(const ModelChunk& ch, ChunkActivations& acts, Tensor& dx) {
  const int C = cfg_.n_embd, T = cfg_.seq_len, Ts = layout_.seq_local(cfg_);
  const int64_t N = int64_t(B_) * T, Ns = int64_t(B_) * Ts;
  const Param& wte = (*store_)[ch.wte];
  const int Vl = int(wte.spec.storage_rows);
  Tensor dlnf_full({B_, T, C}), dlnf;
  cpu::matmul_backward(dlnf_full.f32(), wte.grad.f32(), nullptr, acts.logits.f32(),
                       acts.lnf_full.f32(), wte.value.f32(), N, C, Vl);
  grad_from_full_seq(dlnf_full, dlnf);
  dx = Tensor({B_, Ts, C});
  cpu::layernorm_backward(dx.f32(), grad(ch.lnfw), grad(ch.lnfb), dlnf.f32(), acts.output.f32(),
                          val(ch.lnfw), acts.lnf_mean.f32(), acts.lnf_rstd.f32(), Ns, C);
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
  acts.layers.resize(ch.layers.size());
  for (size_t l = 0; l < ch.layers.size(); ++l) {
    Tensor out;
    layer_forward(ch.layers[l], acts.layers[l], x, out);
    x = out;
  }
  acts.output = x;
  if (ch.has_head) head_forward(ch, acts, x, compute_grad, dloss_scale);
}

void Gpt::backward(int c, ChunkActivations& acts, const Tensor* dout, Tensor& dinput,
                   bool last_mb, const FinalFn& final_fn) {
  const ModelChunk& ch = chunks_.at(c);
  Tensor dx;
  if (ch.has_head) {
    head_backward(ch, acts, dx);
    if (last_mb) {
      final_fn(ch.lnfw);
      final_fn(ch.lnfb);
    }
  } else {
    BRAID_CHECK(dout != nullptr, "backward of a non-last chunk needs the output gradient");
    dx = dout->clone();
  }
  for (int l = int(ch.layers.size()) - 1; l >= 0; --l)
    layer_backward(ch.layers[l], acts.layers[l], dx, last_mb, final_fn);
  if (ch.has_embedding) {
    embedding_backward(ch, acts, dx);
    if (last_mb) final_fn(ch.wpe);
  }
  dinput = dx;
}

}  // namespace braid
