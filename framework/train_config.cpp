#include "framework/train_config.h"

#include <cmath>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "ops/check.h"

namespace po = boost::program_options;

namespace braid {

namespace {
std::vector<int> parse_int_list(const std::string& s, const char* flag) {
  std::vector<int> out;
  if (s.empty()) return out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t pos = 0;
      int v = std::stoi(item, &pos);
      BRAID_REQUIRE(pos == item.size(), "");
      out.push_back(v);
    } catch (...) {
      BRAID_REQUIRE(false, flag << " expects comma-separated integers, got '" << s << "'");
    }
  }
  return out;
}
std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}
}  // namespace

po::options_description train_options(TrainConfig& c) {
  po::options_description d("braid-train options");
  // clang-format off
  d.add_options()
    ("help,h", "print this help and exit")
    ("config", po::value(&c.config_file), "INI-style config file (key = value, long flag names); the command line overrides it")
    ("data", po::value(&c.data_dir), "dataset directory made by braid-data (train_*.h5, val_*.h5)")
    ("out", po::value(&c.out_dir), "output directory: metrics.jsonl, log, checkpoints/")
    ("resume", po::value(&c.resume)->default_value("auto"), "auto (latest checkpoint in OUT if any) | none | PATH to a checkpoint directory")
    ("steps", po::value(&c.steps)->default_value(1000), "total optimizer steps of the run (defines the LR schedule)")
    ("seed", po::value(&c.seed)->default_value(1337), "seed of initialisation and data order")
    ("layers", po::value(&c.model.n_layer)->default_value(12), "transformer blocks")
    ("heads", po::value(&c.model.n_head)->default_value(12), "attention heads")
    ("width", po::value(&c.model.n_embd)->default_value(768), "model width (channels)")
    ("seq-len", po::value(&c.model.seq_len)->default_value(1024), "sequence length T")
    ("vocab-size", po::value(&c.model.vocab_size)->default_value(0), "model vocabulary; 0 = the dataset's")
    ("micro-batch", po::value(&c.micro_batch)->default_value(4), "sequences per microbatch per data-parallel rank")
    ("grad-accum", po::value(&c.grad_accum)->default_value(1), "microbatches per optimizer step (the pipeline's microbatches)")
    ("lr", po::value(&c.lr)->default_value(6e-4f), "peak learning rate")
    ("min-lr-ratio", po::value(&c.min_lr_ratio)->default_value(0.1f), "final LR as a fraction of --lr (cosine decay)")
    ("warmup", po::value(&c.warmup_steps)->default_value(0), "linear warm-up steps")
    ("weight-decay", po::value(&c.weight_decay)->default_value(0.1f), "AdamW decoupled weight decay (matrices and embeddings only)")
    ("beta1", po::value(&c.beta1)->default_value(0.9f), "AdamW beta1")
    ("beta2", po::value(&c.beta2)->default_value(0.95f), "AdamW beta2")
    ("eps", po::value(&c.eps)->default_value(1e-8f), "AdamW epsilon")
    ("grad-clip", po::value(&c.grad_clip)->default_value(1.0f), "clip the global gradient norm to this (0 = off)")
    ("tp", po::value(&c.tp)->default_value(1), "tensor-parallel size")
    ("pp", po::value(&c.pp)->default_value(1), "pipeline-parallel size (data parallel = world / (tp*pp))")
    ("virtual-stages", po::value(&c.virtual_stages)->default_value(1), "model chunks per pipeline stage (interleaved schedule)")
    ("schedule", po::value(&c.schedule)->default_value("1f1b"), "pipeline schedule: gpipe | 1f1b | interleaved")
    ("pp-layers", po::value<std::string>()->default_value(""), "explicit layers per pipeline chunk, e.g. 5,7")
    ("sequence-parallel", po::bool_switch(&c.sequence_parallel), "shard layernorm/residual regions along the sequence over TP")
    ("zero", po::value(&c.zero)->default_value(0), "ZeRO stage: 0 (off) or 1 (optimizer state sharded over data parallel)")
    ("bucket-mb", po::value(&c.bucket_mb)->default_value(25.0), "gradient all-reduce bucket size in MiB")
    ("save-every", po::value(&c.save_every)->default_value(0), "checkpoint every N steps (0 = only at the end)")
    ("stop-after", po::value(&c.stop_after)->default_value(0), "save a checkpoint and exit cleanly after step N (0 = run to --steps)")
    ("keep-last", po::value(&c.keep_last)->default_value(3), "checkpoints to keep (older ones are deleted)")
    ("eval-every", po::value(&c.eval_every)->default_value(0), "validation loss every N steps (0 = only at the end)")
    ("eval-batches", po::value(&c.eval_batches)->default_value(4), "microbatches per replica in a validation pass")
    ("log-every", po::value(&c.log_every)->default_value(1), "print a log line every N steps")
    ("quiet", po::bool_switch(&c.quiet), "no console log lines (metrics.jsonl is still written)")
    ("device", po::value(&c.device)->default_value("cpu"), "cpu | cuda (bf16 compute, fp32 master weights; one GPU per node-local rank)")
    ("attention", po::value(&c.attention)->default_value("braid"), "CUDA attention: braid (Braid's flash kernel) | cudnn")
    ("gemm-algos", po::value(&c.gemm_algos)->default_value("auto"), "CUDA GEMM algorithms: autotune (time up to 8 of cuBLASLt's candidates at each GEMM shape's first call and keep the fastest; the choices are recorded in OUT/tuning/ and a resumed run takes them, so it repeats the uninterrupted run bit for bit, while a fresh run may choose otherwise and differ in the low bits) | heuristic (cuBLASLt's first answer: the same kernels in every run, slower by 1-3%) | auto (autotune on CUDA; nothing to choose on the CPU)")
    ("optimizer-overlap-gemm-limit", po::value(&c.overlap_gemm_limit)->default_value(1.0), "with --optimizer-overlap-sms K: the forward's GEMMs are chosen for the other SMs until the forward reaches this fraction of its parameter groups (the embeddings, each layer, the final layernorm; rounded up; 1: the whole forward; 0: never, the GEMMs keep every SM and wait for the update's blocks where they share one). Keyed to the forward's position, so a resumed run chooses the same GEMMs")
    ("optimizer-overlap-sms", po::value(&c.optimizer_overlap_text)->default_value("0"), "CUDA without ZeRO-1: the AdamW update runs beside the next step's forward, layer by layer in the order the forward reads them; each layer's forward waits for its own update only. K: on K SMs while the forward's GEMMs are chosen for the others; all: on every SM from a stream of lower priority than the forward's (the forward's kernels are scheduled first, AdamW fills what they leave; the same bits as the plain step); 0 = off: the update runs alone on the whole GPU")
    ("tp-comm-chunks", po::value(&c.tp_comm_chunks)->default_value(1), "tensor parallelism without --sequence-parallel: the forward's row-parallel GEMMs (attention output projection, MLP output) run in this many row blocks, each block's all-reduce overlapping the next block's GEMM (1 = one GEMM, then its all-reduce)")
    ("loss-chunk-mib", po::value(&c.loss_chunk_mib)->default_value(256), "LM head and loss over row chunks whose logits take at most this many MiB; a training forward runs the head's backward chunk by chunk, so the [tokens, vocab] logits never exist whole (0 = one logits tensor kept until backward)")
    ("recompute", po::value(&c.recompute)->default_value("gelu"), "activations recomputed in the backward instead of stored: gelu (GELU's output, one elementwise pass per layer; saves a quarter of each layer's activations) | full (each layer keeps only its input and runs its forward again right before its backward: about a third more compute, one layer's activations instead of all) | none")
    ("recompute-num-layers", po::value(&c.recompute_num_layers)->default_value(-1), "with --recompute gelu or full: only the first N layers of each model chunk (a pipeline stage holds one, or one per virtual stage) recompute; the others store all their activations (-1: every layer). Between the two modes: each stored layer costs its share of the memory saved and saves its share of the recompute time")
    ("comm", po::value(&c.comm)->default_value("auto"), "GPU collectives: nccl | mpi (staged through host memory) | auto (NCCL when every rank of a group has its own GPU)")
    ("threads", po::value(&c.threads)->default_value(0), "BLAS threads per rank (0 = cores / ranks on this node)")
    ("sample-tokens", po::value(&c.sample_tokens)->default_value(0), "after training, print this many sampled tokens")
    ("sample-prompt", po::value(&c.sample_prompt)->default_value(""), "prompt for that sample")
    ("plan", po::bool_switch(&c.plan), "print each rank's parameter, gradient, optimizer and peak activation memory and every failing check for this config and layout, without allocating or training, and exit (2 if a check fails)")
    ("plan-json", po::value(&c.plan_json)->default_value(""), "with --plan (implied): also write the plan as JSON to this file")
    ("dp", po::value(&c.dp)->default_value(0), "data-parallel size: 0 = world / (tp*pp); with --plan it sets the planned world tp*pp*dp")
    ("collective-timeout", po::value(&c.collective_timeout)->default_value(600), "seconds a rank may stay blocked in one collective or receive before the watchdog dumps the ledgers and aborts the job (0 = off)")
    ("checkpoint-timeout", po::value(&c.checkpoint_timeout)->default_value(3600), "seconds one checkpoint save or load may take (parallel HDF5 synchronises the ranks inside it) before the watchdog dumps the ledgers and aborts the job (0 = off)")
    ("max-bad-steps", po::value(&c.max_bad_steps)->default_value(5), "non-finite loss or gradient norm: the step is skipped; after this many in a row, roll back to the last checkpoint (0 = never)")
    ("inject-nan-at-step", po::value<std::string>()->default_value(""), "testing: make the gradients of these steps non-finite, e.g. 3,4,5")
    ("inject-collective-mismatch", po::value<std::string>()->default_value(""), "testing: RANK,STEP: that rank issues a barrier where the others all-reduce, in that step");
  // clang-format on
  return d;
}

void refuse_parser_placeholders(const std::string& text, const std::string& where) {
  for (const char* token : {"%option%", "%value%", "%prefix_option%", "%original_token%", "%canonical_option%"})
    BRAID_REQUIRE(text.find(token) == std::string::npos,
                  where << " contains '" << token << "', which Braid's programs do not accept in options");
}

bool parse_train_config(const std::vector<std::string>& args, TrainConfig& cfg,
                        const std::function<std::string(const std::string&)>& read_config_file) {
  for (size_t i = 0; i < args.size(); ++i) refuse_parser_placeholders(args[i], "argument " + std::to_string(i + 1));
  auto desc = train_options(cfg);
  po::variables_map vm;
  try {
    // A flag given twice takes its last value (scripts append overrides).
    po::parsed_options parsed = po::command_line_parser(args).options(desc).run();
    std::vector<po::option> last_wins;
    for (auto it = parsed.options.rbegin(); it != parsed.options.rend(); ++it) {
      bool seen = false;
      for (const auto& o : last_wins) seen = seen || (o.string_key == it->string_key);
      if (!seen) last_wins.insert(last_wins.begin(), *it);
    }
    parsed.options = last_wins;
    po::store(parsed, vm);
    if (vm.count("help")) {
      std::cout << "Usage: braid-train --data DIR --out DIR [options]\n" << desc << "\n";
      return false;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      const std::string config_text = read_config_file(path);
      refuse_parser_placeholders(config_text, "config file " + path);
      std::istringstream text(config_text);
      po::store(po::parse_config_file(text, desc), vm);  // first stored value wins: CLI overrides
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + " (see braid-train --help)");
  }
  if (cfg.optimizer_overlap_text == "all") {
    cfg.optimizer_overlap_sms = TrainConfig::kOverlapAllSms;
  } else {
    size_t pos = 0;
    int k = -1;
    try {
      k = std::stoi(cfg.optimizer_overlap_text, &pos);
    } catch (...) {
      pos = 0;
    }
    BRAID_REQUIRE(pos > 0 && pos == cfg.optimizer_overlap_text.size() && k >= 0,
                  "--optimizer-overlap-sms must be 'all' or a count of SMs >= 0 (got '" << cfg.optimizer_overlap_text << "')");
    cfg.optimizer_overlap_sms = k;
  }
  cfg.pp_layers = parse_int_list(vm["pp-layers"].as<std::string>(), "--pp-layers");
  cfg.gemm_autotune = cfg.gemm_algos == "autotune" || (cfg.gemm_algos == "auto" && cfg.device == "cuda");
  if (!cfg.plan_json.empty()) cfg.plan = true;
  cfg.inject_nan_at_steps = parse_int_list(vm["inject-nan-at-step"].as<std::string>(), "--inject-nan-at-step");
  cfg.inject_collective_mismatch =
      parse_int_list(vm["inject-collective-mismatch"].as<std::string>(), "--inject-collective-mismatch");
  return true;
}

bool parse_train_config(int argc, char** argv, TrainConfig& cfg) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  return parse_train_config(args, cfg, [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    BRAID_REQUIRE(f.good(), "config file " << path << " cannot be opened");
    std::ostringstream text;
    text << f.rdbuf();
    BRAID_REQUIRE(!f.bad(), "config file " << path << " cannot be read");
    return text.str();
  });
}

void validate_train_config(const TrainConfig& c, int world_size) {
  BRAID_REQUIRE(!c.data_dir.empty(), "--data is required (a directory made by braid-data)");
  BRAID_REQUIRE(!c.out_dir.empty(), "--out is required");
  BRAID_REQUIRE(c.steps >= 1, "--steps must be >= 1 (got " << c.steps << ")");
  BRAID_REQUIRE(c.micro_batch >= 1, "--micro-batch must be >= 1 (got " << c.micro_batch << ")");
  BRAID_REQUIRE(c.grad_accum >= 1, "--grad-accum must be >= 1 (got " << c.grad_accum << ")");
  BRAID_REQUIRE(c.lr > 0 && std::isfinite(c.lr), "--lr must be a positive number (got " << c.lr << ")");
  BRAID_REQUIRE(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1]");
  BRAID_REQUIRE(c.warmup_steps >= 0 && c.warmup_steps <= c.steps, "--warmup must be in [0, --steps]");
  BRAID_REQUIRE(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1, "--beta1/--beta2 must be in [0, 1)");
  BRAID_REQUIRE(c.eps > 0 && std::isfinite(c.eps), "--eps must be a positive number");
  BRAID_REQUIRE(c.weight_decay >= 0 && std::isfinite(c.weight_decay), "--weight-decay must be a number >= 0");
  BRAID_REQUIRE(c.grad_clip >= 0, "--grad-clip must be >= 0");
  BRAID_REQUIRE(c.zero == 0 || c.zero == 1, "--zero must be 0 or 1 (got " << c.zero << ")");
  BRAID_REQUIRE(c.save_every >= 0 && c.stop_after >= 0 && c.keep_last >= 1,
                "--save-every/--stop-after must be >= 0 and --keep-last >= 1");
  BRAID_REQUIRE(c.eval_every >= 0 && c.eval_batches >= 1 && c.log_every >= 1,
                "--eval-every must be >= 0, --eval-batches and --log-every >= 1");
  // Bounded so that the bucket's element count is a representable int64.
  BRAID_REQUIRE(c.bucket_mb > 0 && c.bucket_mb <= 1 << 30, "--bucket-mb must be in (0, 2^30] (got " << c.bucket_mb << ")");
  BRAID_REQUIRE(c.resume == "auto" || c.resume == "none" || !c.resume.empty(), "--resume auto|none|PATH");
  BRAID_REQUIRE(c.tp >= 1 && c.pp >= 1, "--tp and --pp must be >= 1");
  BRAID_REQUIRE(c.virtual_stages >= 1, "--virtual-stages must be >= 1 (got " << c.virtual_stages << ")");
  BRAID_REQUIRE(int64_t(c.tp) * c.pp <= world_size && world_size % (c.tp * c.pp) == 0,
                "the world of " << world_size << " ranks is not divisible by --tp " << c.tp
                                << " x --pp " << c.pp << "; launch a multiple of " << int64_t(c.tp) * c.pp << " ranks");
  BRAID_REQUIRE(c.dp >= 0 && (c.dp == 0 || world_size == c.tp * c.pp * c.dp),
                "--dp " << c.dp << " but the world of " << world_size << " ranks with --tp " << c.tp << " x --pp "
                        << c.pp << " gives dp " << world_size / (c.tp * c.pp));
  BRAID_REQUIRE(c.model.seq_len >= 1, "--seq-len must be >= 1");
  BRAID_REQUIRE(c.device == "cpu" || c.device == "cuda", "--device must be cpu or cuda (got '" << c.device << "')");
  BRAID_REQUIRE(c.attention == "braid" || c.attention == "cudnn", "--attention must be braid or cudnn");
  BRAID_REQUIRE(c.tp_comm_chunks >= 1 && c.tp_comm_chunks <= 64,
                "--tp-comm-chunks must be in [1, 64], got " << c.tp_comm_chunks);
  BRAID_REQUIRE(c.loss_chunk_mib >= 0 && std::isfinite(c.loss_chunk_mib),
                "--loss-chunk-mib must be >= 0 (0 = no chunking), got " << c.loss_chunk_mib);
  BRAID_REQUIRE(c.recompute == "gelu" || c.recompute == "full" || c.recompute == "none",
                "--recompute must be gelu, full or none (got '" << c.recompute << "')");
  BRAID_REQUIRE(c.recompute_num_layers >= -1,
                "--recompute-num-layers must be >= 0, or -1 for every layer (got " << c.recompute_num_layers << ")");
  BRAID_REQUIRE(c.recompute_num_layers == -1 || c.recompute != "none",
                "--recompute-num-layers " << c.recompute_num_layers << " needs --recompute gelu or full (got none)");
  BRAID_REQUIRE(c.comm == "auto" || c.comm == "mpi" || c.comm == "nccl", "--comm must be auto, mpi or nccl");
  BRAID_REQUIRE(c.collective_timeout >= 0 && std::isfinite(c.collective_timeout),
                "--collective-timeout must be >= 0 seconds (0 = off), got " << c.collective_timeout);
  BRAID_REQUIRE(c.checkpoint_timeout >= 0 && std::isfinite(c.checkpoint_timeout),
                "--checkpoint-timeout must be >= 0 seconds (0 = off), got " << c.checkpoint_timeout);
  BRAID_REQUIRE(c.max_bad_steps >= 0, "--max-bad-steps must be >= 0 (got " << c.max_bad_steps << ")");
  for (int s : c.inject_nan_at_steps) BRAID_REQUIRE(s >= 1, "--inject-nan-at-step: steps are >= 1 (got " << s << ")");
  BRAID_REQUIRE(c.inject_collective_mismatch.empty() ||
                    (c.inject_collective_mismatch.size() == 2 && c.inject_collective_mismatch[0] >= 0 &&
                     c.inject_collective_mismatch[0] < world_size && c.inject_collective_mismatch[1] >= 1),
                "--inject-collective-mismatch expects RANK,STEP with 0 <= RANK < " << world_size << " and STEP >= 1");
  // Options that contradict each other: refused rather than one silently ignored.
  BRAID_REQUIRE(c.stop_after <= c.steps, "--stop-after " << c.stop_after << " is past --steps " << c.steps
                                                         << ": the run would end before it");
  BRAID_REQUIRE(c.gemm_algos == "auto" || c.gemm_algos == "autotune" || c.gemm_algos == "heuristic",
                "--gemm-algos must be auto, autotune or heuristic (got '" << c.gemm_algos << "')");
  BRAID_REQUIRE(c.overlap_gemm_limit >= 0 && c.overlap_gemm_limit <= 1,
                "--optimizer-overlap-gemm-limit must be in [0, 1] (got " << c.overlap_gemm_limit << ")");
  BRAID_REQUIRE(c.overlap_gemm_limit == 1 || c.optimizer_overlap_sms > 0,
                "--optimizer-overlap-gemm-limit " << c.overlap_gemm_limit
                << " limits the GEMMs beside an update on K SMs, which needs --optimizer-overlap-sms K (K > 0)");
  BRAID_REQUIRE(c.optimizer_overlap_sms >= 0 || c.optimizer_overlap_sms == TrainConfig::kOverlapAllSms,
                "--optimizer-overlap-sms must be 'all' or a count of SMs >= 0 (got " << c.optimizer_overlap_sms << ")");
  BRAID_REQUIRE(c.optimizer_overlap_sms == 0 || (c.device == "cuda" && c.zero == 0),
                "--optimizer-overlap-sms " << (c.optimizer_overlap_sms < 0 ? std::string("all") : std::to_string(c.optimizer_overlap_sms)) << " overlaps the GPU's AdamW with the forward, "
                "which needs --device cuda and --zero 0 (ZeRO-1 all-gathers the updated parameters instead)");
  BRAID_REQUIRE(c.device == "cuda" || c.gemm_algos == "auto",
                "--gemm-algos " << c.gemm_algos << " chooses CUDA GEMM kernels but --device is " << c.device);
  BRAID_REQUIRE(c.device == "cuda" || c.attention == "braid",
                "--attention " << c.attention << " is a CUDA kernel but --device is " << c.device);
  BRAID_REQUIRE(c.device == "cuda" || c.comm != "nccl", "--comm nccl needs --device cuda (NCCL moves GPU memory)");
  BRAID_REQUIRE(c.schedule == "interleaved" || c.virtual_stages == 1,
                "--virtual-stages " << c.virtual_stages << " needs --schedule interleaved (got --schedule "
                                    << c.schedule << ")");
}

float learning_rate(const TrainConfig& c, int64_t step) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) return c.lr * float(step + 1) / float(c.warmup_steps);
  const double min_lr = double(c.lr) * c.min_lr_ratio;
  const int64_t decay_steps = c.steps - c.warmup_steps;
  if (decay_steps <= 1) return c.lr;
  double progress = double(step - c.warmup_steps) / double(decay_steps - 1);
  progress = std::min(1.0, std::max(0.0, progress));
  return float(min_lr + 0.5 * (double(c.lr) - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  j["data"] = data_dir;
  j["tokenizer"] = tokenizer;
  j["steps"] = steps;
  j["seed"] = seed;
  j["layers"] = model.n_layer;
  j["heads"] = model.n_head;
  j["width"] = model.n_embd;
  j["seq_len"] = model.seq_len;
  j["vocab_size"] = model.vocab_size;
  j["micro_batch"] = micro_batch;
  j["grad_accum"] = grad_accum;
  j["lr"] = lr;
  j["min_lr_ratio"] = min_lr_ratio;
  j["warmup"] = warmup_steps;
  j["weight_decay"] = weight_decay;
  j["beta1"] = beta1;
  j["beta2"] = beta2;
  j["eps"] = eps;
  j["grad_clip"] = grad_clip;
  j["tp"] = tp;
  j["pp"] = pp;
  j["virtual_stages"] = virtual_stages;
  j["schedule"] = schedule;
  j["pp_layers"] = join_ints(pp_layers);
  j["sequence_parallel"] = sequence_parallel;
  j["zero"] = zero;
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  // The JSON comes from a checkpoint manifest: a member of the wrong type is an InputError.
  auto get = [&](const char* key, auto fallback) {
    using T = decltype(fallback);
    auto it = j.find(key);
    if (it == j.end()) return fallback;
    try {
      return it->template get<T>();
    } catch (const nlohmann::json::exception&) {
      throw InputError(std::string("saved config: '") + key + "' has the wrong type: " + it->dump());
    }
  };
  BRAID_REQUIRE(j.is_object(), "saved config should be a JSON object");
  TrainConfig c;
  c.data_dir = get("data", std::string());
  c.steps = get("steps", int64_t(0));
  c.seed = get("seed", uint64_t(0));
  c.model.n_layer = get("layers", 0);
  c.model.n_head = get("heads", 0);
  c.model.n_embd = get("width", 0);
  c.model.seq_len = get("seq_len", 0);
  c.model.vocab_size = get("vocab_size", int64_t(0));
  c.micro_batch = get("micro_batch", 1);
  c.grad_accum = get("grad_accum", 1);
  c.lr = get("lr", 0.f);
  c.tp = get("tp", 1);
  c.pp = get("pp", 1);
  c.zero = get("zero", 0);
  return c;
}

}  // namespace braid
