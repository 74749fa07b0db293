#include "framework/pipeline_engine.h"

namespace braid {

PipelineEngine::PipelineEngine(Gpt& model, ProcessGroups& groups, ScheduleSpec spec)
    : model_(model), groups_(groups), spec_(spec) {
  validate_schedule_spec(spec_);
  auto all = make_schedule(spec_);
  actions_ = all.at(groups_.grid.pp_rank);
  // Per action: the sends (by action index) known complete once it has run.
  const std::vector<int> done_at = send_completion_points(all, spec_).at(size_t(groups_.grid.pp_rank));
  complete_after_.assign(actions_.size(), {});
  for (size_t i = 0; i < done_at.size(); ++i)
    if (done_at[i] >= 0) complete_after_[size_t(done_at[i])].push_back(int(i));
  if (spec_.stages > 1) {
    // Channels for the training schedule; evaluation (run_forward) only uses activation
    // channels stage s -> s + 1 (mod P), which training uses too.
    std::vector<P2PChannel> channels = p2p_channels(all);
    if (groups_.pp->has_ordered_channels()) {
      std::string why;
      BRAID_CHECK(check_channel_order(all, spec_, &why),
                  to_string(spec_.kind) << " schedule sends and receives in different orders:" << why);
    }
    groups_.pp->open_p2p_channels(channels);
    ordered_channels_ = groups_.pp->has_ordered_channels();
  }
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
  // In-flight sends by action index.
  std::map<int, std::pair<std::unique_ptr<CommRequest>, Tensor>> sends;
  std::vector<int> backwards_done(V, 0);
  double loss_sum = 0;
  for (size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    const Key k{a.microbatch, a.chunk};
    const int g = global_chunk(stage, a.chunk, P);
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
      case ActionKind::SendAct:
      case ActionKind::SendGrad: {
        Tensor t;
        if (a.kind == ActionKind::SendAct) {
          t = acts.at(k).output;
        } else {
          t = grad_out.at(k);
          grad_out.erase(k);
        }
        // The tensor stays referenced until the send is known complete: from the schedule,
        // once this stage has run an action that follows the peer's receive, else at the end.
        sends[int(i)] = {pp.channel_send(p2p_channel(a, stage), t.raw(), t.numel(), t.dtype(),
                                         message_tag(a, stage, spec_)), t};
        break;
      }
      case ActionKind::RecvAct:
      case ActionKind::RecvGrad: {
        Tensor t = new_activation();
        pp.channel_recv(p2p_channel(a, stage), t.raw(), t.numel(), t.dtype(), message_tag(a, stage, spec_));
        (a.kind == ActionKind::RecvAct ? act_in : grad_in)[k] = t;
        break;
      }
    }
    // Sends that have completed by now (MPI: the wait returns at once; NCCL: later compute
    // is ordered after the send's kernel, which has met its receive): free their tensors.
    for (int j : complete_after_[i]) {
      sends.at(j).first->wait();
      sends.erase(j);
    }
    poll();
  }
  for (auto& [j, s] : sends) s.first->wait();
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
          pp.channel_recv({(g - 1) % P, stage, PipeLane::Activation}, in.raw(), in.numel(), in.dtype(), mb * G + g);
        }
      }
      model_.forward(c, ca, g > 0 ? &in : nullptr, false, 0.f);
      if (ch.has_head) loss_sum += ca.loss_sum;
      if (g < G - 1) {
        if (P == 1) carry = ca.output;
        else sends.emplace_back(pp.channel_send({stage, (g + 1) % P, PipeLane::Activation}, ca.output.raw(),
                                                ca.output.numel(), ca.output.dtype(), mb * G + g + 1),
                                ca.output);
      }
    }
  }
  for (auto& s : sends) s.first->wait();
  return loss_sum;
}

}  // namespace braid
