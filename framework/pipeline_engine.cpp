#include "framework/pipeline_engine.h"

namespace braid {

PipelineEngine::PipelineEngine(Gpt& model, ProcessGroups& groups, ScheduleSpec spec)
    : model_(model), groups_(groups), spec_(spec) {
  validate_schedule_spec(spec_);
  auto all = make_schedule(spec_);
  actions_ = all.at(groups_.grid.pp_rank);
  grouped_p2p_ = spec_.stages > 1 && groups_.pp->supports_grouped_p2p() && check_grouped_p2p(all, spec_, nullptr);
  int64_t max_tag = 2LL * spec_.stages * spec_.virtual_stages * spec_.microbatches;
  int* tag_ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
  BRAID_REQUIRE(!flag || max_tag <= *tag_ub,
                "pipeline needs " << max_tag << " distinct message tags (2 x --pp x --virtual-stages x --grad-accum) but MPI allows " << *tag_ub);
}

Tensor PipelineEngine::new_activation() const {
  const auto& m = model_.config();
  return model_.backend().activation({model_.micro_batch(), model_.layout().seq_local(m), m.n_embd});
}

double PipelineEngine::run_train(const std::vector<std::vector<int32_t>>& tokens,
                                 const std::vector<std::vector<int32_t>>& targets,
                                 float dloss_scale, const Gpt::FinalFn& on_param_final,
                                 const std::function<void()>& poll) {
  Communicator& pp = *groups_.pp;
  const int P = spec_.stages, V = spec_.virtual_stages, M = spec_.microbatches;
  const int stage = groups_.grid.pp_rank;
  const int G = P * V;
  std::map<Key, ChunkActivations> acts;
  std::map<Key, Tensor> act_in, grad_in, grad_out;
  std::vector<std::pair<std::unique_ptr<CommRequest>, Tensor>> sends;
  std::vector<int> backwards_done(V, 0);
  double loss_sum = 0;
  // Grouped mode: messages between two computes are issued as one NCCL group just before
  // the next compute (or at the end); their tensors live until the step ends.
  std::vector<Communicator::P2POp> group;
  std::vector<Tensor> keep_alive;
  auto flush = [&]() {
    if (group.empty()) return;
    pp.grouped_p2p(group);
    group.clear();
  };
  for (const Action& a : actions_) {
    const Key k{a.microbatch, a.chunk};
    const int g = global_chunk(stage, a.chunk, P);
    if (grouped_p2p_) {
      if (a.kind == ActionKind::Forward || a.kind == ActionKind::Backward) {
        flush();
      } else {
        Tensor t;
        if (a.kind == ActionKind::SendAct) t = acts.at(k).output;
        if (a.kind == ActionKind::SendGrad) {
          t = grad_out.at(k);
          grad_out.erase(k);
        }
        if (a.kind == ActionKind::RecvAct) act_in[k] = t = new_activation();
        if (a.kind == ActionKind::RecvGrad) grad_in[k] = t = new_activation();
        bool send = a.kind == ActionKind::SendAct || a.kind == ActionKind::SendGrad;
        group.push_back({send, t.raw(), t.numel(), t.dtype(), a.peer});
        keep_alive.push_back(t);
        continue;
      }
    }
    switch (a.kind) {
      case ActionKind::Forward: {
        ChunkActivations& ca = acts[k];
        const ModelChunk& ch = model_.chunks()[a.chunk];
        if (ch.has_embedding) ca.tokens = tokens[a.microbatch];
        if (ch.has_head) ca.targets = targets[a.microbatch];
        const Tensor* in = nullptr;
        if (!ch.has_embedding) {
          auto it = act_in.find(k);
          BRAID_CHECK(it != act_in.end(), "no input activation for microbatch " << a.microbatch << " chunk " << a.chunk);
          in = &it->second;
        }
        model_.forward(a.chunk, ca, in, true, dloss_scale);
        act_in.erase(k);
        if (ch.has_head) loss_sum += ca.loss_sum;
        // One stage: the next chunk is local (no Send/Recv in the schedule).
        if (P == 1 && g < G - 1) act_in[{a.microbatch, a.chunk + 1}] = ca.output;
        peak_live_ = std::max(peak_live_, int(acts.size()));
        break;
      }
      case ActionKind::Backward: {
        auto it = acts.find(k);
        BRAID_CHECK(it != acts.end(), "backward without forward: microbatch " << a.microbatch);
        const Tensor* dout = nullptr;
        if (g < G - 1) {
          auto gi = grad_in.find(k);
          BRAID_CHECK(gi != grad_in.end(), "no output gradient for microbatch " << a.microbatch);
          dout = &gi->second;
        }
        bool last = ++backwards_done[a.chunk] == M;
        Tensor dinput;
        model_.backward(a.chunk, it->second, dout, dinput, last, on_param_final);
        acts.erase(it);
        grad_in.erase(k);
        if (g > 0) {
          if (P == 1) grad_in[{a.microbatch, a.chunk - 1}] = dinput;
          else grad_out[k] = dinput;
        }
        break;
      }
      case ActionKind::SendAct: {
        const Tensor& out = acts.at(k).output;
        sends.emplace_back(pp.send_async(out.raw(), out.numel(), out.dtype(), a.peer,
                                         message_tag(a, stage, spec_)), out);
        break;
      }
      case ActionKind::RecvAct: {
        Tensor t = new_activation();
        pp.recv(t.raw(), t.numel(), t.dtype(), a.peer, message_tag(a, stage, spec_));
        act_in[k] = t;
        break;
      }
      case ActionKind::SendGrad: {
        Tensor t = grad_out.at(k);
        grad_out.erase(k);
        sends.emplace_back(pp.send_async(t.raw(), t.numel(), t.dtype(), a.peer,
                                         message_tag(a, stage, spec_)), t);
        break;
      }
      case ActionKind::RecvGrad: {
        Tensor t = new_activation();
        pp.recv(t.raw(), t.numel(), t.dtype(), a.peer, message_tag(a, stage, spec_));
        grad_in[k] = t;
        break;
      }
    }
    poll();
  }
  flush();
  for (auto& s : sends) s.first->wait();
  BRAID_CHECK(acts.empty(), "schedule left " << acts.size() << " microbatches without backward");
  return loss_sum;
}

double PipelineEngine::run_forward(const std::vector<std::vector<int32_t>>& tokens,
                                   const std::vector<std::vector<int32_t>>& targets) {
  // Microbatches in order, chunks in layer order: the lexicographically first unfinished
  // (microbatch, chunk) can always proceed, so blocking receives cannot deadlock.
  Communicator& pp = *groups_.pp;
  const int P = spec_.stages, V = spec_.virtual_stages;
  const int stage = groups_.grid.pp_rank;
  const int G = P * V;
  const int M = int(tokens.size());
  std::vector<std::pair<std::unique_ptr<CommRequest>, Tensor>> sends;
  double loss_sum = 0;
  for (int mb = 0; mb < M; ++mb) {
    Tensor carry;
    for (int g = 0; g < G; ++g) {
      if (g % P != stage) continue;
      const int c = g / P;
      const ModelChunk& ch = model_.chunks()[c];
      ChunkActivations ca;
      if (ch.has_embedding) ca.tokens = tokens[mb];
      if (ch.has_head) ca.targets = targets[mb];
      Tensor in;
      if (g > 0) {
        if (P == 1) {
          in = carry;
        } else {
          in = new_activation();
          // Tags of the evaluation phase: any unique-per-message scheme works since the
          // training phase has drained all of its messages.
          pp.recv(in.raw(), in.numel(), in.dtype(), (g - 1) % P, mb * G + g);
        }
      }
      model_.forward(c, ca, g > 0 ? &in : nullptr, false, 0.f);
      if (ch.has_head) loss_sum += ca.loss_sum;
      if (g < G - 1) {
        if (P == 1) carry = ca.output;
        else sends.emplace_back(pp.send_async(ca.output.raw(), ca.output.numel(), ca.output.dtype(),
                                              (g + 1) % P, mb * G + g + 1), ca.output);
      }
    }
  }
  for (auto& s : sends) s.first->wait();
  return loss_sum;
}

}  // namespace braid
