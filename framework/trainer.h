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
  // Runs until --steps or --stop-after (or until stop_requested() agrees on a stop).
  void train(const std::function<bool()>& stop_requested = {});
  StepResult train_step();
  double evaluate();  // mean validation loss over eval_batches microbatches per replica
  std::string save();  // checkpoint at the current step

  int64_t step() const { return step_; }
  ParamStore& store() { return store_; }
  Optimizer& optimizer() { return *optimizer_; }
  Gpt& model() { return *model_; }
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
  void use_nccl_where_possible();
  void log_step(const StepResult& r, std::optional<double> val_loss);
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
  int64_t step_ = 0, data_position_ = 0;
  std::vector<double> losses_;
  std::chrono::steady_clock::time_point run_start_;
  int64_t steps_this_run_ = 0;
  double seconds_this_run_ = 0;
  // Non-finite steps (see train_step): skipped in total, in a row, rollbacks.
  int64_t skipped_steps_ = 0, bad_in_row_ = 0, rollbacks_ = 0;
  bool good_step_since_rollback_ = true;
  std::vector<int> nan_injections_left_;  // --inject-nan-at-step, each used once
};

}  // namespace braid
