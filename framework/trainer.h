// The training loop: builds the model shards of this rank, the data-parallel reducer, the
// optimizer and the pipeline engine from a TrainConfig and the process groups, then runs
// steps: load this replica's microbatches, run the schedule, reduce gradients, clip,
// AdamW, log, evaluate, checkpoint. Every rank runs this same code.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "framework/checkpoint.h"
#include "framework/data_loader.h"
#include "framework/dataset.h"
#include "framework/gpt.h"
#include "framework/optimizer.h"
#include "framework/pipeline_engine.h"
#include "framework/train_config.h"

namespace braid {

// A request to end the run early with a checkpoint, e.g. from a signal (braid-train maps
// SIGUSR1 to Requeue and SIGTERM/SIGINT to Stop). The ranks agree on the largest one.
enum class StopRequest : int { None = 0, Requeue = 1, Stop = 2 };

struct StepResult {
  double loss = 0, grad_norm = 0, seconds = 0;
  float lr = 0;
  bool skipped = false;  // non-finite loss or gradient norm on some rank: no update anywhere
};

// Exit code of a run whose steps stay non-finite after a rollback (or with no checkpoint to
// roll back to): CollectiveError raised on every rank together.
constexpr int kDivergedExitCode = 3;

class Trainer {
 public:
  // Opens the data, validates config against data and layout (collectively), builds the
  // model. Throws InputError on bad input (the same on every rank).
  Trainer(TrainConfig cfg, ProcessGroups& groups);
  ~Trainer();

  // --resume auto|none|PATH; initialises from the seed when nothing is loaded.
  void init_or_resume();
  // Runs until --steps or --stop-after, or until the ranks agree on a stop request
  // (stop_requested() of every rank, all-reduced with max over the world). They agree at
  // every microbatch boundary when --pp is 1 (a stop there abandons the partial step: the
  // checkpoint holds the last completed step, so the resumed run is bitwise the same), and
  // at the end of every step otherwise (see stop_check_after_). Saves a checkpoint before
  // returning the agreed request; None when the run reached its last step.
  StopRequest train(const std::function<StopRequest()>& stop_requested = {});
  StepResult train_step();
  double evaluate();  // mean validation loss over eval_batches microbatches per replica
  std::string save();  // checkpoint at the current step

  int64_t step() const { return step_; }
  ParamStore& store() { return store_; }
  Optimizer& optimizer() { return *optimizer_; }
  const Optimizer& optimizer() const { return *optimizer_; }
  Gpt& model() { return *model_; }
  Backend& backend() { return *backend_; }
  const TrainConfig& config() const { return cfg_; }
  const std::vector<double>& losses() const { return losses_; }
  int64_t data_position() const { return data_position_; }
  // After --max-bad-steps skipped steps in a row: rolls back to the latest checkpoint
  // (collective; returns true) or throws CollectiveError(kDivergedExitCode) when there is
  // none or the previous rollback was followed by no good step. train() calls it per step.
  bool roll_back_if_diverging();
  int64_t skipped_steps() const { return skipped_steps_; }
  int64_t rollbacks() const { return rollbacks_; }

 private:
  void load_batch(int64_t position, DataLoader& loader, int microbatches,
                  std::vector<std::vector<int32_t>>& tokens,
                  std::vector<std::vector<int32_t>>& targets);
  void on_param_final(int i);
  void launch_bucket(int b);  // the bucket's DP reduction, after its SP all-reduces
  void use_nccl_where_possible();
  void log_step(const StepResult& r, std::optional<double> val_loss);
  StopRequest agree_stop();  // collective over the world
  void poll_step();          // between schedule actions: DP reducer progress, mid-step stop
  void restore(const std::string& path);  // collective: model, optimizer, step, data position
  bool agree_step_is_bad(bool bad_here);  // collective over the world

  TrainConfig cfg_;
  ProcessGroups& groups_;
  std::unique_ptr<TokenDataset> train_data_, val_data_;
  std::unique_ptr<DataLoader> train_loader_, val_loader_;
  ModelLayout layout_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Gpt> model_;
  ParamStore store_;
  std::unique_ptr<GradReducer> reducer_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<PipelineEngine> engine_;
  int wte_bucket_ = -1;
  ParamFence* fence_ = nullptr;  // the overlapped optimizer step's (owned by the optimizer)
  std::string tuning_path_;  // this rank's autotuned GEMM choices (empty: not autotuning)
  // Sequence parallelism: the replicated parameters' TP all-reduces in flight, per bucket.
  std::vector<std::vector<std::unique_ptr<CommRequest>>> sp_pending_;
  int64_t step_ = 0, data_position_ = 0;
  std::vector<double> losses_;
  bool metrics_ok_ = true;  // the last metrics.jsonl append succeeded (rank 0)
  // Stop agreement inside a step (--pp 1 only): true after the schedule actions that end a
  // microbatch, except the last one (the end-of-step agreement follows it). With --pp > 1
  // the stages are at different microbatches at any moment and the engine holds messages
  // between actions (grouped NCCL p2p is issued just before the next compute, MPI sends
  // complete at the end of the step): a blocking world collective between actions can
  // wait for a message that its peer issues only after that collective, and abandoning
  // the step would leave messages unmatched. Doing it safely needs the engine's help, so
  // those runs agree at the end of each step only.
  std::vector<bool> stop_check_after_;
  std::function<StopRequest()> stop_requested_;  // set while train() runs
  int polls_ = 0;                                // schedule actions done in this step
  std::chrono::steady_clock::time_point run_start_;
  int64_t steps_this_run_ = 0;
  double seconds_this_run_ = 0;
  // Non-finite steps (see train_step): skipped in total, in a row, rollbacks.
  int64_t skipped_steps_ = 0, bad_in_row_ = 0, rollbacks_ = 0;
  bool good_step_since_rollback_ = true;
  std::vector<int> nan_injections_left_;  // --inject-nan-at-step, each used once
};

}  // namespace braid
