// The dry run behind plan_activation_memory. Each function below mirrors the function of
// gpt.cpp / pipeline_engine.cpp / tp_mappings.cpp with the same name, statement by
// statement where memory is concerned: `Buf` plays the role of Tensor (shared ownership
// of a buffer), `act(n)` of Backend::activation, `stats(n)` of Backend::stats. Statements
// that allocate nothing (kernels, collectives in place) are left out.
//
// Shapes (gpt.h): B micro-batch, T sequence, Ts local sequence, C width, Cl = local
// attention width (NHl heads), Fl = 4C/TP, NHl = ceil(heads/TP), Vl = vocabulary rows per
// TP rank; N = B*T, Ns = B*Ts.
#include "framework/activation_memory.h"

#include <algorithm>
#include <map>
#include <memory>
#include <utility>
#include <vector>

namespace braid {
namespace {

struct Tracker {
  int64_t live = 0, peak = 0;
};

// One buffer: counted while any Buf refers to it.
class Block {
 public:
  Block(Tracker& t, int64_t bytes) : t_(t), bytes_(bytes) {
    t_.live += bytes_;
    t_.peak = std::max(t_.peak, t_.live);
  }
  ~Block() { t_.live -= bytes_; }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

 private:
  Tracker& t_;
  int64_t bytes_;
};
using Buf = std::shared_ptr<Block>;

struct LayerActs {  // gpt.h LayerActivations
  Buf input, ln1, ln1_mean, ln1_rstd, ln1_full, qkv, att, atty, res2, ln2, ln2_mean, ln2_rstd,
      ln2_full, fch, fch_gelu;
};

struct ChunkActs {  // gpt.h ChunkActivations
  std::vector<LayerActs> layers;
  Buf output, lnf, lnf_mean, lnf_rstd, lnf_full, logits, dlnf_full;
};

class DryRun {
 public:
  explicit DryRun(const ActivationPlanInput& in) : in_(in) {
    const ModelConfig& m = in.model;
    const ModelLayout& l = in.layout;
    B_ = in.micro_batch;
    T_ = m.seq_len;
    Ts_ = l.seq_local(m);
    C_ = m.n_embd;
    Cl_ = l.attn_local(m);
    Fl_ = l.mlp_local(m);
    NHl_ = l.heads_local(m);
    Vl_ = l.vocab_per_rank(m);
    N_ = int64_t(B_) * T_;
    Ns_ = int64_t(B_) * Ts_;
    sp_ = l.sequence_parallel;
    act_bytes_ = in.cuda ? 2 : 4;
  }

  int64_t train_peak();
  int64_t eval_peak();

 private:
  Buf alloc(int64_t bytes) { return std::make_shared<Block>(mem_, bytes); }
  Buf act(int64_t elems) { return alloc(elems * act_bytes_); }
  Buf stats(int64_t elems) { return alloc(elems * 4); }

  // tp_mappings.cpp: the sequence all-gather / reduce-scatter run directly between the
  // local block and the full tensor (no scratch).
  void seq_scratch() {}
  void to_full_seq(const Buf& local, Buf& full) {
    if (!sp_) {
      full = local;
      return;
    }
    full = act(N_ * C_);
    seq_scratch();
  }
  void grad_from_full_seq(Buf& dfull, Buf& dlocal) {
    if (!sp_) {
      dlocal = dfull;
      return;
    }
    dlocal = act(Ns_ * C_);
    seq_scratch();
  }
  void partial_to_local(Buf& partial_full, Buf& out_local) {
    if (!sp_) {
      out_local = partial_full;
      return;
    }
    out_local = act(Ns_ * C_);
    seq_scratch();
  }
  // Gpt::row_parallel_forward: the full partial sums live only inside the call (under SP
  // the result is a new local block; otherwise it is the partial buffer itself, in row
  // blocks or not).
  void row_parallel_forward(Buf& out_local) {
    Buf partial = act(N_ * C_);
    partial_to_local(partial, out_local);
  }
  void grad_to_partial(const Buf& dlocal, Buf& dfull) {
    if (!sp_) {
      dfull = dlocal;
      return;
    }
    dfull = act(N_ * C_);
    seq_scratch();
  }

  // Gpt::NextNorm: where the next layernorm's output and statistics go (null: none).
  struct NextNorm {
    Buf *ln = nullptr, *mean = nullptr, *rstd = nullptr;
  };
  void layer_forward(LayerActs& a, const Buf& x, Buf& out, bool ln1_ready, const NextNorm* next, bool keep_gelu);
  bool recomputes(size_t l) const {  // Gpt::recomputes
    return in_.recompute_num_layers < 0 || l < size_t(in_.recompute_num_layers);
  }
  void layer_backward(LayerActs& a, Buf& dx);
  void embedding_forward(Buf& out);
  void embedding_backward(const Buf& dx);
  void head_forward(ChunkActs& acts, bool compute_grad, bool lnf_ready);
  void head_backward(ChunkActs& acts, Buf& dx);
  void cross_entropy(int64_t rows);
  void forward(int c, ChunkActs& acts, const Buf* input, bool compute_grad);
  void backward(int c, ChunkActs& acts, Buf& dinput);

  int global(int c) const { return in_.layout.global_chunk(c); }
  bool has_embedding(int c) const { return global(c) == 0; }
  bool has_head(int c) const { return global(c) == in_.layout.total_chunks() - 1; }

  const ActivationPlanInput& in_;
  Tracker mem_;
  int B_, T_, Ts_, C_, NHl_;
  int64_t Cl_, Fl_;
  int64_t Vl_, N_, Ns_, act_bytes_;
  bool sp_;
};

// gpt.cpp Gpt::layer_forward
void DryRun::layer_forward(LayerActs& a, const Buf& x, Buf& out, bool ln1_ready, const NextNorm* next,
                           bool keep_gelu) {
  a.input = x;
  if (!ln1_ready) {
    a.ln1 = act(Ns_ * C_);
    a.ln1_mean = stats(Ns_);
    a.ln1_rstd = stats(Ns_);
  }
  to_full_seq(a.ln1, a.ln1_full);
  a.qkv = act(N_ * 3 * Cl_);
  a.atty = act(N_ * Cl_);
  // Backend::attention_forward: CPU saves the probabilities, CUDA the log-sum-exp (f32).
  a.att = in_.cuda ? stats(int64_t(B_) * NHl_ * T_) : alloc(int64_t(B_) * NHl_ * T_ * T_ * 4);
  Buf proj;
  row_parallel_forward(proj);
  a.res2 = act(Ns_ * C_);
  a.ln2 = act(Ns_ * C_);
  a.ln2_mean = stats(Ns_);
  a.ln2_rstd = stats(Ns_);
  to_full_seq(a.ln2, a.ln2_full);
  a.fch = act(N_ * Fl_);
  Buf gelu_out = act(N_ * Fl_);
  if (keep_gelu) a.fch_gelu = gelu_out;
  Buf fcproj;
  row_parallel_forward(fcproj);
  out = act(Ns_ * C_);
  if (next) {
    *next->ln = act(Ns_ * C_);
    *next->mean = stats(Ns_);
    *next->rstd = stats(Ns_);
  }
}

// gpt.cpp Gpt::layer_backward
void DryRun::layer_backward(LayerActs& a, Buf& dx) {
  Buf dres2 = dx;
  Buf dpartial;
  grad_to_partial(dx, dpartial);
  Buf dfch = act(N_ * Fl_);  // Backend::matmul_backward_gelu writes it (no d(GELU out))
  {
    Buf gelu_out = std::move(a.fch_gelu);
    a.fch_gelu.reset();
    if (!gelu_out) gelu_out = act(N_ * Fl_);  // recomputed
  }
  Buf dln2_full = act(N_ * C_), dln2;
  grad_from_full_seq(dln2_full, dln2);
  Buf dinp = dres2;
  grad_to_partial(dres2, dpartial);
  Buf datty = act(N_ * Cl_);
  Buf dqkv = act(N_ * 3 * Cl_);
  Buf dln1_full = act(N_ * C_), dln1;
  grad_from_full_seq(dln1_full, dln1);
  dx = dinp;
  a = LayerActs{};
}

void DryRun::cross_entropy(int64_t rows) {
  // CudaBackend::cross_entropy: the targets uploaded and four [N] f32 row vectors for the
  // call's duration. The CPU backend keeps these in std::vector (not tensor memory).
  if (!in_.cuda) return;
  Buf targets = alloc(std::max<int64_t>(rows, 1) * 4);
  Buf row_max = stats(rows), row_sum = stats(rows), tlogit = stats(rows), losses = stats(rows);
}

// gpt.cpp Gpt::embedding_forward
void DryRun::embedding_forward(Buf& out) {
  Buf partial = act(N_ * C_);
  if (in_.cuda) Buf tokens = alloc(std::max<int64_t>(N_, 1) * 4);  // CudaBackend upload
  partial_to_local(partial, out);
}

// gpt.cpp Gpt::embedding_backward
void DryRun::embedding_backward(const Buf& dx) {
  Buf dfull;
  grad_to_partial(dx, dfull);
}

// gpt.cpp Gpt::head_forward
void DryRun::head_forward(ChunkActs& acts, bool compute_grad, bool lnf_ready) {
  if (!lnf_ready) {
    acts.lnf = act(Ns_ * C_);
    acts.lnf_mean = stats(Ns_);
    acts.lnf_rstd = stats(Ns_);
  }
  to_full_seq(acts.lnf, acts.lnf_full);
  if (in_.loss_chunk_bytes <= 0) {
    acts.logits = act(N_ * Vl_);
    cross_entropy(N_);
    return;
  }
  const int64_t rows = loss_chunk_rows(in_.loss_chunk_bytes, N_, Vl_, int(act_bytes_));
  if (compute_grad) acts.dlnf_full = act(N_ * C_);
  Buf targets = alloc(std::max<int64_t>(N_, 1) * 4);  // Backend::targets_tensor
  Buf losses = stats(N_);
  for (int64_t r0 = 0; r0 < N_; r0 += rows) {
    const int64_t n = std::min(rows, N_ - r0);
    Buf logits = act(n * Vl_);
    // Backend::cross_entropy_rows: on the GPU three [n] f32 row vectors for the call's
    // duration (the CPU backend keeps them in std::vector).
    if (in_.cuda) Buf row_max = stats(n), row_sum = stats(n), tlogit = stats(n);
  }
  acts.lnf_full.reset();
  acts.lnf.reset();
}

// gpt.cpp Gpt::head_backward
void DryRun::head_backward(ChunkActs& acts, Buf& dx) {
  Buf dlnf_full, dlnf;
  if (acts.dlnf_full) {
    dlnf_full = std::move(acts.dlnf_full);
    acts.dlnf_full.reset();
  } else {
    dlnf_full = act(N_ * C_);
  }
  grad_from_full_seq(dlnf_full, dlnf);
  dx = act(Ns_ * C_);  // activation_zeros
}

// gpt.cpp Gpt::forward
void DryRun::forward(int c, ChunkActs& acts, const Buf* input, bool compute_grad) {
  Buf x;
  if (has_embedding(c)) embedding_forward(x);
  else x = *input;
  const size_t layers = size_t(in_.layout.chunk_layers[size_t(global(c))]);
  acts.layers.resize(layers);
  bool ready = false;
  for (size_t l = 0; l < layers; ++l) {
    LayerActs& layer = acts.layers[l];
    Buf out;
    NextNorm next;
    if (l + 1 < layers) {
      LayerActs& na = acts.layers[l + 1];
      next = {&na.ln1, &na.ln1_mean, &na.ln1_rstd};
    } else if (has_head(c)) {
      next = {&acts.lnf, &acts.lnf_mean, &acts.lnf_rstd};
    }
    const bool recompute = recomputes(l);
    layer_forward(layer, x, out, ready, next.ln ? &next : nullptr, !(in_.recompute_gelu && recompute));
    ready = next.ln != nullptr;
    if (!compute_grad) {
      layer = LayerActs{};
    } else if (in_.recompute_layers && recompute) {
      layer = LayerActs{};
      layer.input = x;
    }
    x = out;
  }
  acts.output = x;
  if (has_head(c)) head_forward(acts, compute_grad, ready);
}

// gpt.cpp Gpt::backward (for a non-last chunk the engine's received gradient is cloned)
void DryRun::backward(int c, ChunkActs& acts, Buf& dinput) {
  Buf dx;
  if (has_head(c)) head_backward(acts, dx);
  else dx = act(Ns_ * C_);
  for (size_t l = acts.layers.size(); l-- > 0;) {
    LayerActs& layer = acts.layers[l];
    if (in_.recompute_layers && recomputes(l)) {  // the layer's forward again, GELU's output kept
      const Buf x = layer.input;
      Buf out;
      layer_forward(layer, x, out, false, nullptr, true);
    }
    layer_backward(layer, dx);
  }
  if (has_embedding(c)) embedding_backward(dx);
  dinput = dx;
}

// pipeline_engine.cpp PipelineEngine::run_train (MPI and NCCL channels alike).
int64_t DryRun::train_peak() {
  const ScheduleSpec& spec = in_.schedule;
  const int P = spec.stages, G = P * spec.virtual_stages, stage = in_.layout.pp_rank;
  const auto schedule = make_schedule(spec);
  const std::vector<Action>& actions = schedule.at(size_t(stage));
  using Key = std::pair<int, int>;
  mem_ = Tracker{};
  {
    std::map<Key, ChunkActs> acts;
    std::map<Key, Buf> act_in, grad_in, grad_out;
    // Sent tensors live until their send is known complete (send_completion_points).
    const std::vector<int> done_at = send_completion_points(schedule, spec).at(size_t(stage));
    std::map<int, Buf> sends;
    std::map<int, std::vector<int>> complete_after;
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      const Key k{a.microbatch, a.chunk};
      const int g = global_chunk(stage, a.chunk, P);
      switch (a.kind) {
        case ActionKind::Forward: {
          ChunkActs& ca = acts[k];
          const Buf* input = has_embedding(a.chunk) ? nullptr : &act_in.at(k);
          forward(a.chunk, ca, input, /*compute_grad=*/true);
          act_in.erase(k);
          if (P == 1 && g < G - 1) act_in[{a.microbatch, a.chunk + 1}] = ca.output;
          break;
        }
        case ActionKind::Backward: {
          Buf dinput;
          backward(a.chunk, acts.at(k), dinput);
          acts.erase(k);
          grad_in.erase(k);
          if (g > 0) {
            if (P == 1) grad_in[{a.microbatch, a.chunk - 1}] = dinput;
            else grad_out[k] = dinput;
          }
          break;
        }
        case ActionKind::SendAct: sends[int(i)] = acts.at(k).output; break;
        case ActionKind::RecvAct: act_in[k] = act(Ns_ * C_); break;
        case ActionKind::SendGrad:
          sends[int(i)] = grad_out.at(k);
          grad_out.erase(k);
          break;
        case ActionKind::RecvGrad: grad_in[k] = act(Ns_ * C_); break;
      }
      if ((a.kind == ActionKind::SendAct || a.kind == ActionKind::SendGrad) && done_at[i] >= 0)
        complete_after[done_at[i]].push_back(int(i));
      if (auto it = complete_after.find(int(i)); it != complete_after.end()) {
        for (int j : it->second) sends.erase(j);
        complete_after.erase(it);
      }
    }
  }
  return mem_.peak;
}

// pipeline_engine.cpp PipelineEngine::run_forward
int64_t DryRun::eval_peak() {
  const int P = in_.schedule.stages, G = P * in_.schedule.virtual_stages, stage = in_.layout.pp_rank;
  mem_ = Tracker{};
  {
    std::vector<Buf> sends;
    for (int mb = 0; mb < in_.eval_microbatches; ++mb) {
      Buf carry;
      for (int g = 0; g < G; ++g) {
        if (g % P != stage) continue;
        const int c = g / P;
        ChunkActs ca;
        Buf input;
        if (g > 0) input = P == 1 ? carry : act(Ns_ * C_);
        forward(c, ca, g > 0 ? &input : nullptr, /*compute_grad=*/false);
        if (g < G - 1) {
          if (P == 1) carry = ca.output;
          else sends.push_back(ca.output);
        }
      }
    }
  }
  return mem_.peak;
}

}  // namespace

ActivationPlan plan_activation_memory(const ActivationPlanInput& in) {
  DryRun run(in);
  ActivationPlan p;
  p.train_peak_bytes = run.train_peak();
  p.eval_peak_bytes = run.eval_peak();
  return p;
}

}  // namespace braid
