// braid-train --plan: see plan.h. Nothing here allocates a model buffer: the parameter
// store is filled with specs and laid out (assign_buckets) but never finalized, and the
// activations are a dry run (activation_memory.h).
#include "framework/plan.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>

#include "framework/activation_memory.h"
#include "framework/backend.h"
#include "framework/data_loader.h"
#include "framework/dataset.h"
#include "framework/gpt.h"
#include "framework/params.h"
#include "ops/device_memory.h"
#include "parallel/rank_grid.h"
#include "parallel/schedule.h"

namespace braid {

namespace {

constexpr int64_t kGpt2Vocab = 50257;

ScheduleSpec schedule_spec(const TrainConfig& c) {
  return {parse_schedule_kind(c.schedule), c.pp, c.grad_accum, c.virtual_stages};
}

// As the trainer sizes its gradient buckets (Trainer::Trainer).
int64_t bucket_elems(const TrainConfig& c) {
  return std::max<int64_t>(1, int64_t(c.bucket_mb * 1024 * 1024 / sizeof(float)));
}

bool nccl_p2p_planned(const TrainConfig& c) {
  // PipelineEngine: NCCL channels when the PP communicator is NCCL (CUDA, every rank with
  // its own GPU, --comm auto|nccl); the memory is the same as over MPI.
  return c.device == "cuda" && c.comm != "mpi" && c.pp > 1;
}

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::ostringstream os;
  if (u == 0) os << b << " B";
  else os << std::fixed << std::setprecision(v < 10 ? 2 : v < 100 ? 1 : 0) << v << " " << units[u];
  return os.str();
}

// "0-3,8,10-11"
std::string rank_ranges(std::vector<int> r) {
  std::sort(r.begin(), r.end());
  std::ostringstream os;
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    os << (i ? "," : "") << r[i];
    if (j > i) os << "-" << r[j];
    i = j + 1;
  }
  return os.str();
}

bool same_memory(const RankMemoryPlan& a, const RankMemoryPlan& b) {
  return a.param_bytes == b.param_bytes && a.grad_bytes == b.grad_bytes &&
         a.optimizer_bytes == b.optimizer_bytes && a.activation_bytes == b.activation_bytes &&
         a.eval_activation_bytes == b.eval_activation_bytes && a.layers == b.layers &&
         a.peak_in_flight == b.peak_in_flight;
}

}  // namespace

bool TrainPlan::ok() const {
  return std::all_of(checks.begin(), checks.end(), [](const PlanCheck& c) { return c.ok(); });
}

RankMemoryPlan plan_rank_memory(const TrainConfig& cfg, int dp, int tp_rank, int pp_rank) {
  const ModelConfig& m = cfg.model;
  ModelLayout layout = make_model_layout(m, cfg.tp, tp_rank, cfg.pp, pp_rank, cfg.virtual_stages,
                                         cfg.sequence_parallel, cfg.pp_layers);
  const ScheduleSpec spec = schedule_spec(cfg);
  validate_schedule_spec(spec);
  const bool cuda = cfg.device == "cuda";
  RankMemoryPlan r;
  r.tp_rank = tp_rank;
  r.pp_rank = pp_rank;
  for (int g = pp_rank; g < layout.total_chunks(); g += cfg.pp) r.layers += layout.chunk_layers[size_t(g)];

  // Parameters exactly as the trainer registers and buckets them. The model needs a TP
  // communicator and a backend to exist; registering parameters uses neither.
  MPI_Comm self;
  MPI_Comm_dup(MPI_COMM_SELF, &self);
  MpiCommunicator tp_comm(self, "plan");
  std::unique_ptr<Backend> backend = make_cpu_backend();
  Gpt model(m, layout, tp_comm, cfg.micro_batch, *backend);
  ParamStore store;
  model.register_params(store, false);
  const int64_t flat = std::max<int64_t>(store.assign_buckets(bucket_elems(cfg), dp), 1);
  int64_t shard = 0;  // GradReducer::shard_total: this replica's 1/DP of every bucket
  for (const Bucket& b : store.buckets()) shard += b.size / dp;
  const bool zero = cfg.zero == 1;
  r.param_elems = flat;
  // ParamStore values (+ CudaBackend's bf16 GEMM copy of them).
  r.param_bytes = flat * 4 + (cuda ? flat * 2 : 0);
  // ParamStore grads (ZeRO-1 reduce-scatters in place: no second buffer).
  r.grad_bytes = flat * 4;
  // Optimizer: m and v over the flat buffer or this replica's shard (host vectors on the
  // CPU; on the GPU tensors of at least one element).
  if (!cuda) {
    r.optimizer_bytes = 2 * (zero ? shard : flat) * 4;
  } else {
    r.optimizer_bytes = 2 * (zero ? std::max<int64_t>(shard, 1) : flat) * 4;
  }

  ActivationPlanInput in;
  in.model = m;
  in.layout = layout;
  in.micro_batch = cfg.micro_batch;
  in.schedule = spec;
  in.cuda = cuda;
  in.eval_microbatches = int(cfg.eval_batches);
  in.loss_chunk_bytes = cfg.loss_chunk_bytes();
  in.recompute_gelu = cfg.recompute == "gelu";
  in.recompute_layers = cfg.recompute == "full";
  in.recompute_num_layers = cfg.recompute_num_layers;
  ActivationPlan a = plan_activation_memory(in);
  r.activation_bytes = a.train_peak_bytes;
  r.eval_activation_bytes = a.eval_peak_bytes;
  r.peak_in_flight = simulate_schedule(make_schedule(spec), spec).peak_in_flight_per_stage.at(size_t(pp_rank));
  return r;
}

TrainPlan make_train_plan(const TrainConfig& cfg, int world_size) {
  TrainPlan p;
  p.config = cfg;
  TrainConfig& c = p.config;
  p.tp = c.tp;
  p.pp = c.pp;
  const int mp = std::max(1, c.tp) * std::max(1, c.pp);
  p.dp = c.dp > 0 ? c.dp : std::max(1, world_size / mp);
  p.world = mp * p.dp;

  auto check = [&](const std::string& name, const std::function<void()>& fn) {
    PlanCheck ck{name, ""};
    try {
      fn();
    } catch (const std::exception& e) {
      ck.problem = e.what();
    }
    p.checks.push_back(ck);
    return ck.ok();
  };

  // The vocabulary: the flag, else the dataset's (as the trainer takes it), else GPT-2's.
  if (c.model.vocab_size > 0) p.vocab_source = "--vocab-size";
  if (!c.data_dir.empty()) {
    check("dataset", [&] {
      for (const char* split : {"train", "val"}) {  // read on demand: nothing loaded
        TokenDataset data(c.data_dir, split, 0);
        if (c.model.vocab_size == 0) {
          c.model.vocab_size = data.vocab_size();
          p.vocab_source = "dataset " + c.data_dir;
        }
        DataLoader loader(data, c.model.seq_len, c.seed);
        loader.check_vocab(c.model.vocab_size);
      }
    });
  }
  if (c.model.vocab_size <= 0) {
    c.model.vocab_size = kGpt2Vocab;
    p.vocab_source = "GPT-2 default (no --vocab-size or --data)";
  }

  check("options", [&] {
    TrainConfig v = c;  // --data and --out are not needed to plan
    if (v.data_dir.empty()) v.data_dir = "(plan)";
    if (v.out_dir.empty()) v.out_dir = "(plan)";
    validate_train_config(v, p.world);
  });
  bool grid_ok = check("rank grid", [&] { RankGrid::make(p.world, 0, c.tp, c.pp); });
  bool layout_ok = false;
  if (grid_ok) {
    // Tensor- and pipeline-parallel constraints separately (each reports its own first
    // failure), then the whole layout for what only the combination violates.
    bool tp_ok = check("tensor parallel", [&] {
      make_model_layout(c.model, c.tp, 0, 1, 0, 1, c.sequence_parallel, {});
    });
    bool pp_ok = check("pipeline split", [&] {
      make_model_layout(c.model, 1, 0, c.pp, 0, c.virtual_stages, false, c.pp_layers);
    });
    if (tp_ok && pp_ok)
      layout_ok = check("layout", [&] {
        make_model_layout(c.model, c.tp, 0, c.pp, 0, c.virtual_stages, c.sequence_parallel, c.pp_layers);
      });
  }
  bool schedule_ok = check("schedule", [&] { validate_schedule_spec(schedule_spec(c)); });
  if (schedule_ok) {
    check("message tags", [&] {  // PipelineEngine's bound
      int initialized = 0;
      MPI_Initialized(&initialized);
      if (!initialized) return;
      int* tag_ub = nullptr;
      int flag = 0;
      MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
      int64_t tags = 2LL * c.pp * c.virtual_stages * c.grad_accum;
      BRAID_REQUIRE(!flag || tags <= *tag_ub, "pipeline needs " << tags
                                                  << " distinct message tags (2 x --pp x --virtual-stages x "
                                                     "--grad-accum) but MPI allows "
                                                  << *tag_ub);
    });
  }
  if (c.device == "cuda")
    check("device", [&] {
      BRAID_REQUIRE(cuda_available(), "--device cuda: no usable GPU here (this build has no CUDA backend, "
                                      "or no GPU is visible); the memory plan is still for GPUs");
    });

  if (layout_ok && schedule_ok && c.micro_batch >= 1) {  // (a bad --micro-batch fails "options")
    check("memory plan", [&] {
      const ScheduleSpec spec = schedule_spec(c);
      p.bubble_fraction = simulate_schedule(make_schedule(spec), spec).bubble_fraction;
      p.nccl_p2p = nccl_p2p_planned(c);
      for (int pr = 0; pr < c.pp; ++pr)
        for (int tr = 0; tr < c.tp; ++tr) {
          RankMemoryPlan r = plan_rank_memory(c, p.dp, tr, pr);
          for (int dr = 0; dr < p.dp; ++dr) r.world_ranks.push_back(RankGrid::rank_of(tr, dr, pr, c.tp, p.dp));
          p.ranks.push_back(std::move(r));
        }
    });
  }
  return p;
}

std::string format_train_plan(const TrainPlan& p) {
  const TrainConfig& c = p.config;
  std::ostringstream os;
  os << "Braid plan: world " << p.world << " = dp " << p.dp << " x pp " << p.pp << " x tp " << p.tp
     << " (nothing allocated)\n";
  os << "  model     " << c.model.describe() << "; vocabulary from " << p.vocab_source << "\n";
  os << "  batch     micro-batch " << c.micro_batch << " x grad-accum " << c.grad_accum << " x dp " << p.dp
     << " = " << c.global_batch(p.dp) << " sequences of " << c.model.seq_len << " tokens\n";
  os << "  pipeline  " << c.schedule << ", " << c.pp << " stage(s) x " << c.virtual_stages << " chunk(s)";
  if (c.pp > 1 && !p.ranks.empty())
    os << ", bubble " << std::fixed << std::setprecision(1) << 100 * p.bubble_fraction << "% of the step"
       << (p.nccl_p2p ? ", messages over NCCL channels when every rank has its own GPU" : "");
  os << "\n  options   " << (c.zero ? "ZeRO-1" : "ZeRO off") << " | sequence parallel "
     << (c.sequence_parallel && c.tp > 1 ? "on" : "off") << " | buckets " << std::defaultfloat << std::setprecision(6) << c.bucket_mb << " MiB | device "
     << c.device << (c.device == "cuda" ? " (bf16 activations, fp32 master weights and AdamW)" : " (fp32)")
     << "\n  memory    recompute " << c.recompute
     << (c.recompute_num_layers >= 0 ? " (first " + std::to_string(c.recompute_num_layers) + " layers of each chunk)" : "")
     << " | loss chunk ";
  if (c.loss_chunk_mib > 0) os << c.loss_chunk_mib << " MiB of logits";
  else os << "off (whole logits)";
  os << "\n\nchecks\n";
  for (const PlanCheck& ck : p.checks)
    os << "  " << (ck.ok() ? "ok    " : "FAIL  ") << ck.name << (ck.ok() ? "" : ": " + ck.problem) << "\n";
  if (p.ranks.empty()) {
    os << "\nno memory plan: the layout, schedule or micro-batch above is invalid\n";
    return os.str();
  }
  os << "\nmemory per rank (each row: ranks holding the same bytes)\n";
  const char* head[] = {"stage", "tp", "world ranks", "layers", "params", "grads", "optimizer",
                        "activations", "eval act.", "total", "in flight"};
  std::vector<std::vector<std::string>> rows;
  rows.push_back(std::vector<std::string>(std::begin(head), std::end(head)));
  int64_t largest = 0;
  for (size_t i = 0; i < p.ranks.size();) {
    // merge the TP ranks of a stage when they hold the same bytes (they do for GPT-2)
    size_t j = i + 1;
    std::vector<int> ranks = p.ranks[i].world_ranks;
    while (j < p.ranks.size() && p.ranks[j].pp_rank == p.ranks[i].pp_rank && same_memory(p.ranks[j], p.ranks[i])) {
      ranks.insert(ranks.end(), p.ranks[j].world_ranks.begin(), p.ranks[j].world_ranks.end());
      ++j;
    }
    const RankMemoryPlan& r = p.ranks[i];
    std::string tp = j - i == size_t(p.tp) ? "all" : rank_ranges([&] {
      std::vector<int> t;
      for (size_t k = i; k < j; ++k) t.push_back(p.ranks[k].tp_rank);
      return t;
    }());
    rows.push_back({std::to_string(r.pp_rank), tp, rank_ranges(ranks), std::to_string(r.layers),
                    human_bytes(r.param_bytes), human_bytes(r.grad_bytes), human_bytes(r.optimizer_bytes),
                    human_bytes(r.activation_bytes), human_bytes(r.eval_activation_bytes),
                    human_bytes(r.total_bytes()), std::to_string(r.peak_in_flight)});
    largest = std::max(largest, r.total_bytes());
    i = j;
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t k = 0; k < row.size(); ++k) width[k] = std::max(width[k], row[k].size());
  for (const auto& row : rows) {
    os << " ";
    for (size_t k = 0; k < row.size(); ++k) {
      os << " ";
      if (k < 4) os << std::left << std::setw(int(width[k])) << row[k];
      else os << std::right << std::setw(int(width[k])) << row[k];
    }
    os << "\n";
  }
  os << "\nlargest rank: " << human_bytes(largest) << " (" << (c.device == "cuda" ? "GPU" : "host")
     << " memory). total = params + grads + optimizer + max(activations, eval act.).\n"
     << "activations: peak bytes alive at once during one step (eval act.: one validation pass);\n"
     << "in flight: (microbatch, chunk) activations held at the stage's peak.";
  if (c.device == "cuda")
    os << "\nnot included on the GPU: CUDA context, cuBLASLt workspace, kernel scratch (GEMM autotuning: up to the "
          "largest GEMM output, once), allocator slack.";
  os << "\n";
  return os.str();
}

nlohmann::json train_plan_json(const TrainPlan& p) {
  const TrainConfig& c = p.config;
  nlohmann::json j;
  j["ok"] = p.ok();
  j["world"] = p.world;
  j["tp"] = p.tp;
  j["pp"] = p.pp;
  j["dp"] = p.dp;
  j["schedule"] = c.schedule;
  j["virtual_stages"] = c.virtual_stages;
  j["microbatches"] = c.grad_accum;
  j["micro_batch"] = c.micro_batch;
  j["zero"] = c.zero;
  j["sequence_parallel"] = c.sequence_parallel && c.tp > 1;
  j["device"] = c.device;
  j["recompute"] = c.recompute;
  j["recompute_num_layers"] = c.recompute_num_layers;
  j["loss_chunk_mib"] = c.loss_chunk_mib;
  j["vocab_size"] = c.model.vocab_size;
  j["vocab_source"] = p.vocab_source;
  j["bubble_fraction"] = p.bubble_fraction;
  j["nccl_p2p"] = p.nccl_p2p;
  j["checks"] = nlohmann::json::array();
  for (const PlanCheck& ck : p.checks) j["checks"].push_back({{"name", ck.name}, {"ok", ck.ok()}, {"problem", ck.problem}});
  // One entry per world rank, in rank order.
  std::vector<nlohmann::json> ranks(size_t(p.ranks.empty() ? 0 : p.world));
  for (const RankMemoryPlan& r : p.ranks)
    for (int w : r.world_ranks) {
      const int dp_rank = (w / p.tp) % p.dp;
      ranks[size_t(w)] = {{"rank", w},
                          {"tp_rank", r.tp_rank},
                          {"dp_rank", dp_rank},
                          {"pp_rank", r.pp_rank},
                          {"layers", r.layers},
                          {"param_elems", r.param_elems},
                          {"param_bytes", r.param_bytes},
                          {"grad_bytes", r.grad_bytes},
                          {"optimizer_bytes", r.optimizer_bytes},
                          {"activation_bytes", r.activation_bytes},
                          {"eval_activation_bytes", r.eval_activation_bytes},
                          {"total_bytes", r.total_bytes()},
                          {"peak_in_flight", r.peak_in_flight}};
    }
  j["ranks"] = ranks;
  return j;
}

int run_train_plan(const TrainConfig& cfg, int world_size) {
  TrainPlan plan = make_train_plan(cfg, world_size);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int written = 1;
  if (rank == 0) {
    std::fputs(format_train_plan(plan).c_str(), stdout);
    std::fflush(stdout);
    if (!cfg.plan_json.empty()) {
      std::ofstream f(cfg.plan_json, std::ios::trunc);
      f << train_plan_json(plan).dump(2) << "\n";
      f.close();
      written = f.good() ? 1 : 0;
    }
  }
  MPI_Bcast(&written, 1, MPI_INT, 0, MPI_COMM_WORLD);  // the verdict reaches every rank
  BRAID_REQUIRE(written, "--plan-json " << cfg.plan_json << " cannot be written");
  return plan.ok() ? 0 : 2;
}

}  // namespace braid
