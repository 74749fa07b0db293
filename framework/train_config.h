// Every knob of a training run, parsed with Boost.Program_options from the command line
// and an INI-style config file (`key = value`, the same names as the long flags; the
// command line wins). Validation happens on every rank with the same inputs, so every
// rank reaches the same verdict and prints the same message.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "framework/model_config.h"

namespace braid {

struct TrainConfig {
  // data and output
  std::string data_dir, out_dir, resume = "auto", config_file;
  std::string tokenizer;  // recorded from the dataset (for sampling)
  // model (vocab_size 0 = take it from the dataset)
  ModelConfig model;
  // optimisation
  int64_t steps = 1000;
  int micro_batch = 4, grad_accum = 1;
  float lr = 6e-4f, min_lr_ratio = 0.1f, weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f;
  float eps = 1e-8f, grad_clip = 1.0f;
  int64_t warmup_steps = 0;
  uint64_t seed = 1337;
  // parallelism
  int tp = 1, pp = 1, virtual_stages = 1, zero = 0;
  std::string schedule = "1f1b";
  bool sequence_parallel = false;
  std::vector<int> pp_layers;
  double bucket_mb = 25.0;
  // checkpoints, evaluation, logging
  int64_t save_every = 0, stop_after = 0, keep_last = 3;
  int64_t eval_every = 0, eval_batches = 4, log_every = 1;
  int threads = 0;  // BLAS threads per rank, 0 = cores / ranks on the node
  std::string sample_prompt;  // printed sample at the end when non-empty
  int sample_tokens = 0;
  bool quiet = false;
  std::string device = "cpu";       // cpu | cuda
  std::string attention = "braid";  // braid | cudnn (CUDA attention kernel)
  std::string gemm_algos = "auto";  // auto | autotune | heuristic: how CUDA GEMM algorithms are chosen
  bool gemm_autotune = false;       // derived: time cuBLASLt's candidates per GEMM shape (CUDA)
  // CUDA: AdamW beside the next forward on this many SMs (0 = off; kOverlapAllSms: on every
  // SM at a lower stream priority than the forward's, the GEMMs keeping every SM).
  static constexpr int kOverlapAllSms = -1;
  int optimizer_overlap_sms = 0;
  std::string optimizer_overlap_text = "0";  // --optimizer-overlap-sms as given (K or "all")
  // --optimizer-overlap-gemm-limit: the forward's GEMMs leave the K SMs to the update until
  // the forward has waited for this fraction of the updated groups (0: never, on every SM).
  double overlap_gemm_limit = 1.0;
  bool profile_ops = false;         // ops inside prof::Scopes (braid-bench --profile; no CLI flag)
  std::string recompute = "gelu";   // gelu | full | none: activations recomputed in the backward
  int recompute_num_layers = -1;    // --recompute gelu|full applies to this many layers per model chunk (-1: all)
  int tp_comm_chunks = 1;           // row blocks of the row-parallel forward GEMMs, all-reduce overlapped
  double loss_chunk_mib = 256;      // logits budget of the chunked LM head + loss; 0 = unchunked
  int local_device = 0;             // GPU of this rank (set by the entry point)
  std::string comm = "auto";        // auto | mpi | nccl: data plane of GPU collectives  // no per-step console lines (metrics.jsonl is still written)
  // faults (see README "Faults"): watchdog, non-finite steps, test-only injection
  double checkpoint_timeout = 3600;     // seconds one checkpoint save or load may take; 0 = off
  double collective_timeout = 600;      // seconds blocked in one call before the watchdog aborts; 0 = off
  int max_bad_steps = 5;                // consecutive non-finite steps before rolling back; 0 = never roll back
  std::vector<int> inject_nan_at_steps;       // testing: poison these steps' gradients (once each)
  std::vector<int> inject_collective_mismatch;  // testing: {rank, step}: that rank issues a barrier in place of one collective

  // memory and layout plan (framework/plan.h): print it and exit, nothing allocated
  bool plan = false;
  std::string plan_json;  // also write it as JSON (implies plan)
  int dp = 0;             // data-parallel size: 0 = what the world gives; a plan's world is tp*pp*dp

  int64_t global_batch(int dp) const { return int64_t(micro_batch) * grad_accum * dp; }
  int64_t loss_chunk_bytes() const { return int64_t(loss_chunk_mib * 1024 * 1024); }
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

boost::program_options::options_description train_options(TrainConfig& cfg);

// Parses argv (and --config FILE). Returns false if --help was printed.
// Throws InputError on unknown flags or bad values.
bool parse_train_config(int argc, char** argv, TrainConfig& cfg);
// Boost.Program_options formats its error messages by replacing placeholders such as
// %value% until none is left; a value that itself contains one never ends that loop (found
// by fuzzing). Every program refuses such text (InputError naming `where`) before parsing.
void refuse_parser_placeholders(const std::string& text, const std::string& where);
// The same from a command line without the program name; the text of the --config file is
// what read_config_file returns for its path (tests and fuzzers pass it from memory).
bool parse_train_config(const std::vector<std::string>& args, TrainConfig& cfg,
                        const std::function<std::string(const std::string&)>& read_config_file);
void validate_train_config(const TrainConfig& cfg, int world_size);

// Learning rate at optimizer step `step` (0-based): linear warm-up to lr, then cosine
// decay to lr * min_lr_ratio at the last step.
float learning_rate(const TrainConfig& cfg, int64_t step);

}  // namespace braid
