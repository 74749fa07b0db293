#include "framework/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "framework/run_directory.h"
#include "ops/profiler.h"
#include "parallel/collective_check.h"
#include "parallel/communicator_nccl.h"
#include "parallel/ledger_communicator.h"

namespace fs = std::filesystem;

namespace braid {

namespace {
// Thrown from the engine's poll callback when the ranks agree to stop inside a step.
struct StepAbandoned {
  StopRequest request;
};
const char* to_string(StopRequest r) { return r == StopRequest::Requeue ? "requeue" : "stop"; }
}  // namespace

Trainer::Trainer(TrainConfig cfg, ProcessGroups& groups) : cfg_(std::move(cfg)), groups_(groups) {
  const RankGrid& g = groups_.grid;
  run_collectively(*groups_.world, [&] {
    validate_train_config(cfg_, g.world_size);
    prepare_output_directory(cfg_.out_dir, g.world_rank);
    train_data_ = std::make_unique<TokenDataset>(cfg_.data_dir, "train");
    val_data_ = std::make_unique<TokenDataset>(cfg_.data_dir, "val");
    if (cfg_.model.vocab_size == 0) cfg_.model.vocab_size = train_data_->vocab_size();
    cfg_.tokenizer = train_data_->tokenizer();
    train_loader_ = std::make_unique<DataLoader>(*train_data_, cfg_.model.seq_len, cfg_.seed);
    val_loader_ = std::make_unique<DataLoader>(*val_data_, cfg_.model.seq_len, cfg_.seed + 1);
    train_loader_->check_vocab(cfg_.model.vocab_size);
    val_loader_->check_vocab(cfg_.model.vocab_size);
    layout_ = make_model_layout(cfg_.model, g.tp, g.tp_rank, g.pp, g.pp_rank, cfg_.virtual_stages,
                                cfg_.sequence_parallel, cfg_.pp_layers);
    ScheduleSpec spec{parse_schedule_kind(cfg_.schedule), g.pp, cfg_.grad_accum, cfg_.virtual_stages};
    if (spec.kind != ScheduleKind::Interleaved1F1B)
      BRAID_REQUIRE(cfg_.virtual_stages == 1, "--virtual-stages " << cfg_.virtual_stages
                                                                  << " needs --schedule interleaved");
    validate_schedule_spec(spec);
  });
  backend_ = cfg_.device == "cuda" ? make_cuda_backend(cfg_.local_device, cfg_.attention == "cudnn", cfg_.gemm_autotune) : make_cpu_backend();
  if (cfg_.profile_ops) backend_ = make_profiling_backend(std::move(backend_));
  if (cfg_.gemm_autotune) {
    // This rank's autotuned GEMM choices (OUT/tuning/): taken again by a resumed run.
    tuning_path_ = (fs::path(cfg_.out_dir) / "tuning" / ("gemm-algos.rank" + std::to_string(g.world_rank) + ".json")).string();
    const std::string warning = backend_->load_tuning(tuning_path_);
    if (!warning.empty()) std::fprintf(stderr, "rank %d: warning: %s\n", g.world_rank, warning.c_str());
  }
  if (cfg_.device == "cuda") use_nccl_where_possible();
  model_ = std::make_unique<Gpt>(cfg_.model, layout_, *groups_.tp, cfg_.micro_batch, *backend_);
  model_->set_loss_chunk_bytes(cfg_.loss_chunk_bytes());
  model_->set_recompute_gelu(cfg_.recompute == "gelu");
  model_->set_recompute_layers(cfg_.recompute == "full");
  model_->set_recompute_num_layers(cfg_.recompute_num_layers);
  model_->set_tp_comm_chunks(cfg_.tp_comm_chunks);
  model_->register_params(store_, false);
  int64_t bucket_elems = std::max<int64_t>(1, int64_t(cfg_.bucket_mb * 1024 * 1024 / sizeof(float)));
  store_.finalize(bucket_elems, g.dp, backend_->device());
  model_->bind_backend();
  std::vector<BucketRange> ranges;
  for (const Bucket& b : store_.buckets()) ranges.push_back({b.offset, b.size});
  for (int i = 0; i < store_.size(); ++i)
    if (store_[i].spec.name == "wte") wte_bucket_ = store_.bucket_of(i);
  reducer_ = std::make_unique<GradReducer>(*groups_.dp, store_.flat_grads().f32(), ranges, cfg_.zero == 1);
  sp_pending_.resize(store_.buckets().size());
  optimizer_ = std::make_unique<Optimizer>(store_, *reducer_, groups_);
  optimizer_->set_bf16_copy(backend_->bf16_weight_copy());  // AdamW writes the GEMM weights where it can
  if (cfg_.optimizer_overlap_sms != 0) {
    const int sms = backend_->sm_count();
    BRAID_REQUIRE(cfg_.optimizer_overlap_sms < sms, "--optimizer-overlap-sms " << cfg_.optimizer_overlap_sms
                                                    << " leaves no SM of this GPU's " << sms << " to the forward");
    ParamFence* fence = optimizer_->set_overlap(model_->forward_param_groups(), cfg_.optimizer_overlap_sms,
                                                cfg_.overlap_gemm_limit);
    BRAID_CHECK(fence, "the overlapped optimizer step is not available here");
    backend_->set_param_fence(fence);
    fence_ = fence;
  }
  ScheduleSpec spec{parse_schedule_kind(cfg_.schedule), g.pp, cfg_.grad_accum, cfg_.virtual_stages};
  engine_ = std::make_unique<PipelineEngine>(*model_, groups_, spec);
  if (g.pp == 1) {
    // One stage: every rank (TP and DP peers alike) runs the same action list, so the k-th
    // poll is the same point everywhere. A microbatch ends with its chunk-0 backward.
    const std::vector<Action> actions = make_schedule(spec).at(0);
    stop_check_after_.assign(actions.size(), false);
    for (size_t i = 0; i + 1 < actions.size(); ++i)
      stop_check_after_[i] = actions[i].kind == ActionKind::Backward && actions[i].chunk == 0;
  }
  nan_injections_left_ = cfg_.inject_nan_at_steps;
}

Trainer::~Trainer() = default;

void Trainer::use_nccl_where_possible() {
  // The data-plane groups (TP, DP, PP, tied embedding) move to NCCL when every member has
  // its own GPU; the control groups (world, mp) stay on MPI. Pipeline messages then go
  // over NCCL channels (PipelineEngine), for every schedule.
  std::vector<std::unique_ptr<Communicator>*> data_groups = {&groups_.tp, &groups_.dp, &groups_.pp};
  if (groups_.embed) data_groups.push_back(&groups_.embed);
  std::vector<bool> wrap(data_groups.size(), false);
  run_collectively(*groups_.world, [&] {
    std::string refused;
    for (size_t i = 0; i < data_groups.size(); ++i) {
      Communicator& g = **data_groups[i];
      bool distinct = group_has_distinct_gpus(g, cfg_.local_device);  // collective in g
      if (cfg_.comm == "nccl") {
        if (!distinct) refused = g.name();
        wrap[i] = distinct;
      } else {
        wrap[i] = cfg_.comm == "auto" && distinct && g.size() > 1;
      }
    }
    BRAID_REQUIRE(refused.empty(), "--comm nccl: ranks of the " << refused << " group share a GPU, which NCCL "
                                   "refuses; use --comm mpi (or auto) to run several ranks per GPU");
  });
  void* compute = backend_->cuda_compute_stream();
  for (size_t i = 0; i < data_groups.size(); ++i)
    if (wrap[i])  // under the ledger wrapper, so the ledger keeps recording the group's calls
      *data_groups[i] = replace_inner_communicator(std::move(*data_groups[i]), [&](std::unique_ptr<Communicator> c) {
        return make_nccl_communicator(std::move(c), compute);
      });
}

void Trainer::init_or_resume() {
  std::string path;
  if (cfg_.resume == "auto") {
    run_collectively(*groups_.world, [&] { path = find_latest_checkpoint(cfg_.out_dir); });
  } else if (cfg_.resume != "none") {
    path = cfg_.resume;
  }
  if (path.empty()) {
    store_.init_values(cfg_.seed);
    backend_->refresh_weights();
    step_ = 0;
    data_position_ = 0;
    return;
  }
  restore(path);
  if (groups_.grid.world_rank == 0 && !cfg_.quiet)
    std::printf("resumed from %s at step %lld (data position %lld)\n", path.c_str(),
                static_cast<long long>(step_), static_cast<long long>(data_position_));
}

void Trainer::restore(const std::string& path) {
  CheckpointState st = load_checkpoint(path, store_, optimizer_.get(), groups_, cfg_.model);
  backend_->refresh_weights();
  step_ = st.step;
  data_position_ = st.data_position;
  // Steps logged after this checkpoint by a run that was killed before its next save are
  // replayed now: drop their metrics lines so the file stays one line per step.
  if (groups_.grid.world_rank == 0) {
    fs::path mp = fs::path(cfg_.out_dir) / "metrics.jsonl";
    if (fs::exists(mp)) {
      std::ifstream in(mp);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          if (nlohmann::json::parse(line).value("step", int64_t(0)) <= step_) kept += line + "\n";
        } catch (...) {  // a torn last line from a crash
        }
      }
      in.close();
      std::ofstream out(mp.string() + ".tmp", std::ios::trunc);
      out << kept;
      out.close();
      fs::rename(mp.string() + ".tmp", mp);
    }
  }
  BRAID_REQUIRE(st.seed == cfg_.seed, "checkpoint " << path << " was trained with --seed " << st.seed
                                                     << " but this run has --seed " << cfg_.seed);
}

void Trainer::load_batch(int64_t position, DataLoader& loader, int microbatches,
                         std::vector<std::vector<int32_t>>& tokens,
                         std::vector<std::vector<int32_t>>& targets) {
  // Global batch = microbatches x DP x B samples starting at `position`; replica d takes,
  // in microbatch m, samples position + (m * DP + d) * B + [0, B). The replicas' samples
  // are disjoint and together exactly the global batch, whatever DP is.
  const int B = cfg_.micro_batch, T = cfg_.model.seq_len, DP = groups_.grid.dp;
  tokens.assign(microbatches, std::vector<int32_t>(size_t(B) * T));
  targets.assign(microbatches, std::vector<int32_t>(size_t(B) * T));
  for (int m = 0; m < microbatches; ++m)
    for (int b = 0; b < B; ++b) {
      int64_t g = position + (int64_t(m) * DP + groups_.grid.dp_rank) * B + b;
      loader.get(g, tokens[m].data() + size_t(b) * T, targets[m].data() + size_t(b) * T);
    }
}

void Trainer::on_param_final(int i) {
  store_.zero_if_stale(i);  // final without having been written: zero, not last step's
  Param& p = store_[i];
  int b = store_.bucket_of(i);
  // Sequence parallelism: each TP rank saw only its sequence slice, so replicated
  // parameters' gradients are partial sums over the TP group. The all-reduce runs while
  // the backward goes on (NCCL's stream, or a non-blocking MPI call); the bucket's DP
  // reduction waits for it (launch_bucket).
  if (p.spec.sp_partial_grad && groups_.grid.tp > 1)
    sp_pending_[size_t(b)].push_back(
        groups_.tp->all_reduce_async(p.grad.raw(), p.grad.numel(), DType::F32, ReduceOp::Sum));
  Bucket& bk = store_.buckets()[b];
  if (--bk.pending == 0 && b != wte_bucket_) launch_bucket(b);
}

void Trainer::launch_bucket(int b) {
  for (auto& r : sp_pending_[size_t(b)]) r->wait();
  sp_pending_[size_t(b)].clear();
  reducer_->launch(b);
}

StepResult Trainer::train_step() {
  auto t0 = std::chrono::steady_clock::now();
  const int M = cfg_.grad_accum;
  std::vector<std::vector<int32_t>> tokens, targets;
  load_batch(data_position_, *train_loader_, M, tokens, targets);
  // Normalise by the number of target tokens in the whole global batch (ignored targets
  // excluded): the loss and gradients are then independent of how the batch is split.
  int64_t valid = 0;
  for (auto& t : targets)
    for (int32_t v : t) valid += v != -1;
  all_reduce_int64(*groups_.dp, &valid, 1);
  BRAID_CHECK(valid > 0, "global batch has no target tokens");
  const float scale = float(1.0 / double(valid));

  reducer_->reset();  // before this step's first gradient writes: an in-place reduce-scatter still pending would write into them
  for (auto& v : sp_pending_) v.clear();  // (empty after a completed step; waits otherwise)
  // No pass that zeroes the gradients: each op's first write of a step overwrites its
  // gradient (ParamStore::mark_grads_stale), which also saves the GPU's weight-gradient
  // GEMMs the read of the old values.
  store_.mark_grads_stale();
  if (fence_) fence_->begin_step();  // the forward's GEMMs leave the optimizer's SMs free
  polls_ = 0;
  double loss_sum = 0;
  try {
    loss_sum = engine_->run_train(
        tokens, targets, scale, [this](int i) { on_param_final(i); }, [this] { poll_step(); });
  } catch (const StepAbandoned&) {
    // Complete the data-parallel collectives of the partial step (every replica launched
    // the same buckets), so the DP group is idle for the checkpoint's collectives. The
    // gradients are dropped; parameters, optimizer state, step and data position are
    // still those of the last completed step.
    for (int i = 0; i < store_.size(); ++i) store_.zero_if_stale(i);
    for (size_t b = 0; b < store_.buckets().size(); ++b)
      if (!reducer_->launched(int(b))) launch_bucket(int(b));
    reducer_->wait_all();
    throw;
  }
  // The mid-step stop checks assume one poll per schedule action (PipelineEngine's
  // contract); a mismatch would put the checks at other points than intended.
  BRAID_CHECK(stop_check_after_.empty() || polls_ == int(stop_check_after_.size()),
              "pipeline engine polled " << polls_ << " times for " << stop_check_after_.size() << " actions");
  // The tied embedding is final only now (its bucket is alone): reduce it over DP, then
  // sum the first and last stage's copies.
  for (int i = 0; i < store_.size(); ++i) store_.zero_if_stale(i);  // none written, none final: zero
  {
    prof::Scope p("gradient reduction: last buckets, wait for all");
    for (size_t b = 0; b < store_.buckets().size(); ++b)
      if (!reducer_->launched(int(b))) launch_bucket(int(b));
    reducer_->wait_all();
  }
  if (groups_.grid.pp > 1 && groups_.in_embed_group && wte_bucket_ >= 0) {
    const Bucket& bk = store_.buckets()[wte_bucket_];
    if (reducer_->zero())
      groups_.embed->all_reduce(reducer_->shard_grads(wte_bucket_), reducer_->shard_size(wte_bucket_), DType::F32,
                                ReduceOp::Sum);
    else
      groups_.embed->all_reduce(store_.flat_grads().f32() + bk.offset, bk.size, DType::F32, ReduceOp::Sum);
  }
  // Testing (--inject-nan-at-step): this step's gradients on world rank 0 become NaN, so
  // only the replicas whose norm includes rank 0's gradients see it (the agreement below
  // must make every rank skip). On a GPU the norm itself is poisoned instead.
  bool inject_nan = false;
  if (auto it = std::find(nan_injections_left_.begin(), nan_injections_left_.end(), step_ + 1);
      it != nan_injections_left_.end()) {
    nan_injections_left_.erase(it);
    inject_nan = groups_.grid.world_rank == 0;
  }
  if (inject_nan && store_.device() == Device::CPU) {
    float* g = store_.flat_grads().f32();  // under ZeRO-1 the owned shards are in it too
    std::fill(g, g + store_.flat_size(), std::numeric_limits<float>::quiet_NaN());
  }
  StepResult r;
  {
    prof::Scope p("gradient norm and clip");
    r.grad_norm = optimizer_->clip_grad_norm(cfg_.grad_clip);
  }
  if (inject_nan && store_.device() != Device::CPU) r.grad_norm = std::numeric_limits<double>::quiet_NaN();
  r.lr = learning_rate(cfg_, step_);

  // Loss: the last stage's sum over its replica, summed over DP, shared with every stage.
  double loss[1] = {groups_.grid.last_stage() ? loss_sum : 0.0};
  all_reduce_double(*groups_.dp, loss, 1);
  all_reduce_double(*groups_.pp, loss, 1);
  r.loss = loss[0] * double(scale);

  // A non-finite loss or gradient norm on any rank: every rank skips the update (parameters,
  // moments and the optimizer's step count stay as they are); the batch is consumed.
  r.skipped = agree_step_is_bad(!std::isfinite(r.loss) || !std::isfinite(r.grad_norm));
  if (!r.skipped) {
    AdamWConfig ac{cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, cfg_.grad_clip};
    {
      prof::Scope p("AdamW");
      optimizer_->step(r.lr, ac);
    }
    if (!optimizer_->writes_bf16_copy()) backend_->refresh_weights();  // bf16 GEMM weights on the GPU (no-op on CPU)
    bad_in_row_ = 0;
    good_step_since_rollback_ = true;
  } else {
    ++skipped_steps_;
    ++bad_in_row_;
  }
  data_position_ += cfg_.global_batch(groups_.grid.dp);
  ++step_;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  losses_.push_back(r.loss);
  return r;
}

bool Trainer::agree_step_is_bad(bool bad_here) {
  int64_t bad = bad_here ? 1 : 0;
  const auto& mm = cfg_.inject_collective_mismatch;  // testing: {rank, step}
  if (mm.size() == 2 && mm[0] == groups_.grid.world_rank && mm[1] == step_ + 1) {
    groups_.world->barrier();  // where every other rank all-reduces: the job stalls here
    return bad != 0;
  }
  all_reduce_int64(*groups_.world, &bad, 1, ReduceOp::Max);
  return bad != 0;
}

bool Trainer::roll_back_if_diverging() {
  if (cfg_.max_bad_steps <= 0 || bad_in_row_ < cfg_.max_bad_steps) return false;
  std::string path;
  run_collectively(*groups_.world, [&] { path = find_latest_checkpoint(cfg_.out_dir); });
  const bool root = groups_.grid.world_rank == 0;
  if (path.empty())
    throw CollectiveError("the last " + std::to_string(bad_in_row_) + " steps (up to step " + std::to_string(step_) +
                              ") had a non-finite loss or gradient norm and there is no checkpoint in " +
                              cfg_.out_dir + "/checkpoints to roll back to (--max-bad-steps " +
                              std::to_string(cfg_.max_bad_steps) + ")",
                          kDivergedExitCode);
  if (!good_step_since_rollback_)
    throw CollectiveError("the loss or gradient norm stays non-finite after rolling back to " + path + " (" +
                              std::to_string(bad_in_row_) + " skipped steps in a row, up to step " +
                              std::to_string(step_) + "); lower --lr or check the data",
                          kDivergedExitCode);
  // The model goes back; the data does not: the samples since the checkpoint are skipped
  // (what PaLM did after loss spikes), so the run does not replay the batches that failed.
  const int64_t bad = bad_in_row_, at = step_, position = data_position_;
  restore(path);
  data_position_ = position;
  bad_in_row_ = 0;
  good_step_since_rollback_ = false;
  ++rollbacks_;
  if (root && !cfg_.quiet) {
    std::printf("rolled back to %s (step %lld) after %lld non-finite steps in a row (up to step %lld); "
                "data continues at sample %lld\n",
                path.c_str(), static_cast<long long>(step_), static_cast<long long>(bad),
                static_cast<long long>(at), static_cast<long long>(data_position_));
    std::fflush(stdout);
  }
  return true;
}

double Trainer::evaluate() {
  const int M = int(cfg_.eval_batches);
  std::vector<std::vector<int32_t>> tokens, targets;
  load_batch(0, *val_loader_, M, tokens, targets);  // the same held-out samples every time
  int64_t valid = 0;
  for (auto& t : targets)
    for (int32_t v : t) valid += v != -1;
  all_reduce_int64(*groups_.dp, &valid, 1);
  double s[1] = {engine_->run_forward(tokens, targets)};
  if (!groups_.grid.last_stage()) s[0] = 0;
  all_reduce_double(*groups_.dp, s, 1);
  all_reduce_double(*groups_.pp, s, 1);
  return s[0] / double(std::max<int64_t>(valid, 1));
}

std::string Trainer::save() {
  CheckpointState st;
  st.step = step_;
  st.data_position = data_position_;
  st.seed = cfg_.seed;
  st.optimizer_steps = optimizer_->steps_taken();
  st.config = cfg_.to_json();
  return save_checkpoint(cfg_.out_dir, st, store_, *optimizer_, groups_, cfg_.model, cfg_.keep_last);
}

void Trainer::log_step(const StepResult& r, std::optional<double> val_loss) {
  if (groups_.grid.world_rank != 0) return;
  const double tokens = double(cfg_.global_batch(groups_.grid.dp)) * cfg_.model.seq_len;
  const double tps = tokens / std::max(r.seconds, 1e-9);
  const double avg = seconds_this_run_ / std::max<int64_t>(1, steps_this_run_);
  const double eta = avg * double(cfg_.steps - step_);
  nlohmann::json j;
  j["step"] = step_;
  j["loss"] = r.loss;
  j["lr"] = r.lr;
  j["grad_norm"] = r.grad_norm;
  j["tokens_per_s"] = tps;
  j["ms_per_step"] = r.seconds * 1e3;
  if (val_loss) j["val_loss"] = *val_loss;
  if (r.skipped) j["skipped"] = true;
  if (skipped_steps_ > 0) j["skipped_steps"] = skipped_steps_;
  {
    std::ofstream f(fs::path(cfg_.out_dir) / "metrics.jsonl", std::ios::app);
    f << j.dump() << "\n";
    f.close();
    // Metrics are a log, not state: a full disk loses lines but must not stop training
    // (checkpoints check their own writes). Said once, and again once writing works again.
    const bool ok = !f.fail();
    if (!ok && metrics_ok_)
      std::fprintf(stderr, "%s warning: cannot append to %s/metrics.jsonl (disk full or quota?): step %lld and "
                   "later lines are lost until writing works again; training goes on\n",
                   error_prefix().c_str(), cfg_.out_dir.c_str(), static_cast<long long>(step_));
    if (ok && !metrics_ok_)
      std::fprintf(stderr, "%s metrics.jsonl writable again at step %lld\n", error_prefix().c_str(),
                   static_cast<long long>(step_));
    metrics_ok_ = ok;
  }
  if (r.skipped) {  // always on the console, whatever --log-every and --quiet say
    std::printf("step %6lld/%lld | loss %g | norm %g | non-finite: update skipped on every rank "
                "(%lld in a row, %lld in this run)\n",
                static_cast<long long>(step_), static_cast<long long>(cfg_.steps), r.loss, r.grad_norm,
                static_cast<long long>(bad_in_row_), static_cast<long long>(skipped_steps_));
    std::fflush(stdout);
    return;
  }
  if (!cfg_.quiet && (step_ % cfg_.log_every == 0 || val_loss || step_ == cfg_.steps)) {
    std::printf("step %6lld/%lld | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | %.1f ms | ETA %.0fs",
                static_cast<long long>(step_), static_cast<long long>(cfg_.steps), r.loss, r.lr,
                r.grad_norm, tps, r.seconds * 1e3, eta);
    if (val_loss) std::printf(" | val %.4f", *val_loss);
    std::printf("\n");
    std::fflush(stdout);
  }
}

void Trainer::poll_step() {
  reducer_->poll();
  const int action = polls_++;
  if (!stop_requested_ || action >= int(stop_check_after_.size()) || !stop_check_after_[action]) return;
  StopRequest r = agree_stop();
  if (r != StopRequest::None) throw StepAbandoned{r};
}

StopRequest Trainer::agree_stop() {
  int64_t s = int64_t(stop_requested_());
  all_reduce_int64(*groups_.world, &s, 1, ReduceOp::Max);  // every rank agrees
  return StopRequest(s);
}

StopRequest Trainer::train(const std::function<StopRequest()>& stop_requested) {
  if (groups_.grid.world_rank == 0) fs::create_directories(cfg_.out_dir);
  if (groups_.grid.world_rank == 0 && !cfg_.quiet) {
    std::printf("%s\nlayout: world %d = dp %d x pp %d x tp %d | schedule %s%s%s%s | global batch %lld x %d tokens\n",
                cfg_.model.describe().c_str(), groups_.grid.world_size, groups_.grid.dp,
                groups_.grid.pp, groups_.grid.tp, cfg_.schedule.c_str(),
                layout_.sequence_parallel ? " | sequence parallel" : "",
                cfg_.zero ? " | ZeRO-1" : "", engine_->uses_ordered_channels() ? " | pipeline p2p over NCCL" : "",
                static_cast<long long>(cfg_.global_batch(groups_.grid.dp)),
                cfg_.model.seq_len);
    std::fflush(stdout);
  }
  groups_.world->barrier();
  const int64_t last = cfg_.stop_after > 0 ? std::min(cfg_.stop_after, cfg_.steps) : cfg_.steps;
  stop_requested_ = stop_requested;
  StopRequest stop = StopRequest::None;
  while (step_ < last) {
    StepResult r;
    try {
      r = train_step();
    } catch (const StepAbandoned& a) {
      stop = a.request;
      if (groups_.grid.world_rank == 0)
        std::printf("stop requested (%s) during step %lld: partial step abandoned after microbatch %d of %d\n",
                    to_string(stop), static_cast<long long>(step_ + 1),
                    int(std::count(stop_check_after_.begin(), stop_check_after_.begin() + polls_, true)),
                    cfg_.grad_accum);
    }
    if (stop == StopRequest::None) {
      ++steps_this_run_;
      seconds_this_run_ += r.seconds;
      std::optional<double> val;
      if ((cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) || step_ == cfg_.steps) val = evaluate();
      log_step(r, val);
      if (!tuning_path_.empty()) backend_->save_tuning(tuning_path_);  // when new shapes were tuned
      if (roll_back_if_diverging()) continue;
      if (stop_requested_ && step_ < last) stop = agree_stop();  // at the last step: done anyway
    }
    // No periodic checkpoint in a run of skipped steps: a rollback goes back before it.
    bool periodic = cfg_.save_every > 0 && step_ % cfg_.save_every == 0 && bad_in_row_ == 0;
    if (periodic || step_ == last || stop != StopRequest::None) {
      std::string dir = save();
      if (groups_.grid.world_rank == 0 && !cfg_.quiet) {
        std::printf("saved checkpoint %s\n", dir.c_str());
        std::fflush(stdout);
      }
    }
    if (stop != StopRequest::None) {
      if (groups_.grid.world_rank == 0) {
        std::printf("stopping on signal after step %lld (%s)\n", static_cast<long long>(step_), to_string(stop));
        std::fflush(stdout);
      }
      break;
    }
  }
  stop_requested_ = nullptr;
  return stop;
}

}  // namespace braid
