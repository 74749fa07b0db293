// braid-bench: steady-state training speed of a named GPT-2 configuration on random
// tokens, one line per run. Every braid-train option works (layout, device, attention,
// batch); on top of them:
//   --preset gpt2-124m|gpt2-350m|gpt2-1.5b|gpt-13b   model sizes (T = 1024, V = 50257
//                                             padded to 50304; gpt-13b: GPT-2 blocks, 40
//                                             layers of width 5120, 40 heads, 12.8B
//                                             parameters, for TP/PP over several GPUs);
//                                             later --layers/--width/... override
//   --warmup N (5)  --bench-steps N (20)      steps not timed, then timed steps
//   --peak-tflops X (989)                     the MFU denominator per GPU (H100/H200 bf16 dense)
//   --json FILE                               also append the result as one JSON line
//   --label TEXT                              a name for the run in the output
//   --profile N (0)                           after the timed steps, N more steps with every
//                                             op timed on its stream (ops/profiler.h): prints
//                                             ms per step by op, rank 0's and the slowest
//                                             rank's idle time, and adds them to the JSON
// Without --data, rank 0 writes random tokens to a temporary dataset first.
//   mpirun -np 2 build/bin/braid-bench --preset gpt2-350m --device cuda --tp 2 --micro-batch 16
//
// Figures: tokens/s over the world (median step), ms/step median/min/max, and per GPU
//   MFU = tokens/s x (6 N + 12 L T C) / (ranks x peak)   (the PaLM formula; N counts every
//         parameter once, the tied embedding once, the vocabulary padded)
//   HFU = tokens/s x (6 N + 14 L T C) / (ranks x peak)   (adds the attention backward's
//         recomputation of Q K^T, which both attention kernels do; with --recompute full
//         also the layers' second forward, 2 N_layers + 4 L T C)
// and the peak device memory: the caching allocator's reserve and the device's used bytes
// (cudaMemGetInfo, which also counts the CUDA context, cuBLAS and NCCL), max over ranks.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/trainer.h"
#include "launch/lib/entry.h"
#include "ops/profiler.h"
#include "parallel/collective_check.h"
#ifdef BRAID_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace braid {
namespace {

struct BenchOptions {
  std::string preset, json, label;
  int warmup = 5, steps = 20, profile = 0;
  double peak_tflops = 989;
};

// Takes the bench's own options out of argv (the rest goes to parse_train_config) and
// expands --preset into the model flags in front, so that later flags override it.
std::vector<std::string> split_args(int argc, char** argv, BenchOptions& o) {
  std::vector<std::string> rest{argv[0]};
  std::vector<std::string> preset_flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& name) -> std::string {
      if (a.rfind(name + "=", 0) == 0) return a.substr(name.size() + 1);
      BRAID_REQUIRE(i + 1 < argc, name << " needs a value");
      return argv[++i];
    };
    auto is = [&](const std::string& name) { return a == name || a.rfind(name + "=", 0) == 0; };
    auto to_int = [&](const std::string& name, const std::string& v) {
      try {
        size_t used = 0;
        int x = std::stoi(v, &used);
        BRAID_REQUIRE(used == v.size() && x >= 0, "");
        return x;
      } catch (...) {
        BRAID_REQUIRE(false, name << " must be a non-negative integer, got '" << v << "'");
      }
      return 0;
    };
    if (is("--preset")) {
      o.preset = value("--preset");
      static const std::map<std::string, std::vector<std::string>> presets = {
          {"gpt2-124m", {"--layers", "12", "--heads", "12", "--width", "768"}},
          {"gpt2-350m", {"--layers", "24", "--heads", "16", "--width", "1024"}},
          {"gpt2-1.5b", {"--layers", "48", "--heads", "25", "--width", "1600"}},
          {"gpt-13b", {"--layers", "40", "--heads", "40", "--width", "5120"}}};
      auto it = presets.find(o.preset);
      BRAID_REQUIRE(it != presets.end(), "--preset must be gpt2-124m, gpt2-350m, gpt2-1.5b or gpt-13b, got '" << o.preset << "'");
      preset_flags = it->second;
      for (const char* f : {"--seq-len", "1024", "--vocab-size", "50257"}) preset_flags.push_back(f);
    } else if (is("--warmup")) {
      o.warmup = to_int("--warmup", value("--warmup"));
    } else if (is("--bench-steps")) {
      o.steps = std::max(1, to_int("--bench-steps", value("--bench-steps")));
    } else if (is("--profile")) {
      o.profile = to_int("--profile", value("--profile"));
    } else if (is("--peak-tflops")) {
      o.peak_tflops = std::stod(value("--peak-tflops"));
    } else if (is("--json")) {
      o.json = value("--json");
    } else if (is("--label")) {
      o.label = value("--label");
    } else {
      rest.push_back(a);
    }
  }
  rest.insert(rest.begin() + 1, preset_flags.begin(), preset_flags.end());
  return rest;
}

// Random tokens in [0, vocab): enough for every step of the run (the loader wraps anyway).
std::string make_random_dataset(const TrainConfig& cfg, int64_t tokens_needed) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("braid_bench_v" + std::to_string(cfg.model.vocab_size) + "_n" + std::to_string(tokens_needed)))
                              .string();
  if (rank == 0 && !std::filesystem::exists(dir + "/val_000000.h5")) {
    std::filesystem::create_directories(dir);
    std::mt19937_64 rng(1);
    auto make = [&](int64_t n) {
      std::vector<uint32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = uint32_t(rng() % uint64_t(cfg.model.vocab_size));
      return t;
    };
    std::vector<int64_t> docs{0};
    write_token_shard(dir + "/train_000000.h5", make(tokens_needed), docs, cfg.model.vocab_size, "byte");
    write_token_shard(dir + "/val_000000.h5", make(int64_t(cfg.model.seq_len) * 4 + 1), docs, cfg.model.vocab_size,
                      "byte");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

double max_over_world(double x) {
  MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return x;
}

}  // namespace
}  // namespace braid

int main(int argc, char** argv) {
  return braid::run_main(argc, argv, "braid-bench", [](int ac, char** av) {
    using namespace braid;
    BenchOptions o;
    std::vector<std::string> args = split_args(ac, av, o);
    std::vector<char*> cargs;
    for (auto& s : args) cargs.push_back(s.data());
    TrainConfig cfg;
    cfg.data_dir = "-";  // filled below when not given
    cfg.out_dir = (std::filesystem::temp_directory_path() / "braid_bench_out").string();
    if (!parse_train_config(int(cargs.size()), cargs.data(), cfg)) return 0;
    int world = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    // The profiled steps run after these (the learning rate holds its final value there),
    // so the timed steps are the same with or without --profile.
    cfg.steps = o.warmup + o.steps;
    cfg.profile_ops = o.profile > 0;
    cfg.save_every = 0;
    cfg.eval_every = 0;
    cfg.resume = "none";
    cfg.quiet = true;
    const int dp = world / std::max(1, cfg.tp * cfg.pp);
    if (cfg.data_dir == "-")
      cfg.data_dir = make_random_dataset(
          cfg, cfg.global_batch(std::max(1, dp)) * cfg.model.seq_len * (cfg.steps + o.profile + 1) + 1);
    validate_train_config(cfg, world);
    ProcessGroups groups = make_process_groups(MPI_COMM_WORLD, cfg.tp, cfg.pp);
    configure_rank(groups.grid, cfg.threads);
    if (cfg.device == "cuda") cfg.local_device = local_gpu_index();
    Trainer trainer(cfg, groups);
    run_collectively(*groups.world, [&] { trainer.init_or_resume(); });
    std::vector<double> times;
    double last_loss = 0;
    for (int s = 0; s < o.warmup + o.steps; ++s) {
      StepResult r = trainer.train_step();
      // Every rank's step ends at the same host collectives (loss and norm all-reduces);
      // the slowest rank's time is the step's time.
      const double t = max_over_world(r.seconds);
      if (s >= o.warmup) times.push_back(t);
      last_loss = r.loss;
      // A skipped update (non-finite loss or norm on some rank; every rank agrees on it) is
      // not a training step's time.
      BRAID_CHECK(!r.skipped, "braid-bench: step " << s + 1 << " had a non-finite loss or gradient norm (loss "
                                                   << r.loss << ", norm " << r.grad_norm
                                                   << ") and skipped its update; no timing is reported");
    }
    // Profiled steps (not in the timed figures: the marks cost a little host time per op).
    prof::Report profile;
    double profiled_seconds = 0;
    if (o.profile > 0) {
      prof::start(trainer.backend().cuda_compute_stream());
      for (int s = 0; s < o.profile; ++s) {
        StepResult r = trainer.train_step();
        profiled_seconds += max_over_world(r.seconds);
      }
      profile = prof::collect();
    }
    const double idle_max = max_over_world(profile.idle_ms / std::max(1, o.profile));
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const auto& m = cfg.model;
    const double tokens = double(cfg.global_batch(groups.grid.dp)) * m.seq_len;
    const double tps = tokens / median;
    const double N = double(m.num_parameters());
    const double LTC = double(m.n_layer) * m.seq_len * m.n_embd;
    const double peak = o.peak_tflops * 1e12 * world;
    // The layers' own parameters (the recomputed forward's GEMMs): 12 C^2 + 13 C per layer.
    const double N_layers = double(m.n_layer) * (12.0 * m.n_embd * m.n_embd + 13.0 * m.n_embd);
    // --recompute-num-layers: the layers recomputed, summed over the model chunks.
    double recomputed_layers = m.n_layer;
    if (cfg.recompute_num_layers >= 0) {
      const ModelLayout ml = make_model_layout(m, cfg.tp, 0, cfg.pp, 0, cfg.virtual_stages, cfg.sequence_parallel,
                                               cfg.pp_layers);
      recomputed_layers = 0;
      for (int n : ml.chunk_layers) recomputed_layers += std::min(n, cfg.recompute_num_layers);
    }
    const double recomputed =
        cfg.recompute == "full" ? (2 * N_layers + 4 * LTC) * recomputed_layers / m.n_layer : 0.0;
    const double mfu = tps * (6 * N + 12 * LTC) / peak, hfu = tps * (6 * N + 14 * LTC + recomputed) / peak;
    double reserved = 0, used = 0;
#ifdef BRAID_HAVE_CUDA
    if (cfg.device == "cuda") {
      reserved = double(cuda::device_memory_stats().reserved_bytes);
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      used = double(total_b - free_b);
    }
#endif
    reserved = max_over_world(reserved);
    used = max_over_world(used);
    if (rank == 0) {
      const std::string layout = "tp" + std::to_string(cfg.tp) + " pp" + std::to_string(cfg.pp) + " dp" +
                                 std::to_string(groups.grid.dp) + (cfg.zero ? " zero1" : "") +
                                 (cfg.pp > 1 ? " " + cfg.schedule : "") +
                                 (cfg.virtual_stages > 1 ? " v" + std::to_string(cfg.virtual_stages) : "") +
                                 (cfg.sequence_parallel ? " sp" : "");
      const std::string label = o.label.empty() ? (o.preset.empty() ? "custom" : o.preset) : o.label;
      char memory_opts[256];  // the options that trade memory for time, and the speed options
      const std::string recompute =
          cfg.recompute + (cfg.recompute_num_layers >= 0
                               ? " (first " + std::to_string(cfg.recompute_num_layers) + " layers per chunk)"
                               : std::string());
      std::snprintf(memory_opts, sizeof(memory_opts), "recompute %s, loss chunk %g MiB%s%s", recompute.c_str(),
                    cfg.loss_chunk_mib, cfg.gemm_autotune ? ", GEMMs autotuned" : ", GEMMs heuristic",
                    cfg.optimizer_overlap_sms > 0
                        ? (", AdamW beside the forward on " + std::to_string(cfg.optimizer_overlap_sms) + " SMs" +
                           (cfg.overlap_gemm_limit < 1 ? ", GEMMs limited for " +
                                                             std::to_string(int(std::lround(100 * cfg.overlap_gemm_limit))) +
                                                             "% of the forward"
                                                       : std::string()))
                              .c_str()
                    : cfg.optimizer_overlap_sms < 0 ? ", AdamW beside the forward at low priority"
                                                    : "");
      std::printf("braid-bench %s | %s | %s %s attention, %s | B=%d x accum %d x dp %d, T=%d | %.0f tok/s (%.0f per GPU) | "
                  "ms/step median %.2f min %.2f max %.2f | MFU %.1f%% HFU %.1f%% per GPU | peak memory %.2f GiB "
                  "allocator, %.2f GiB device | loss %.3f\n",
                  label.c_str(), layout.c_str(), cfg.device.c_str(), cfg.attention.c_str(), memory_opts, cfg.micro_batch,
                  cfg.grad_accum, groups.grid.dp, m.seq_len, tps, tps / world, median * 1e3, sorted.front() * 1e3,
                  sorted.back() * 1e3, mfu * 100, hfu * 100, reserved / (1 << 30), used / (1 << 30), last_loss);
      std::printf("  MFU = tok/s x (6N + 12LTC) / (%d GPUs x %.0f TFLOP/s), N = %.1fM, L = %d, T = %d, C = %d; HFU uses "
                  "14LTC (attention backward recomputes QK^T); %d warm-up + %d timed steps\n",
                  world, o.peak_tflops, N / 1e6, m.n_layer, m.seq_len, m.n_embd, o.warmup, o.steps);
      if (o.profile > 0) {
        const double n = o.profile;
        std::printf("  profile, rank 0, mean of %d steps after the timed ones (%.2f ms/step wall): each op timed on "
                    "the %s from its first to its last work; idle = between ops (host launches and syncs, "
                    "copies on other streams)\n    %9s %7s %7s  %s\n",
                    o.profile, profiled_seconds / n * 1e3, cfg.device == "cuda" ? "compute stream" : "host clock",
                    "ms/step", "share", "calls", "op");
        for (const prof::Entry& e : profile.entries)
          std::printf("    %9.3f %6.1f%% %7.1f  %s\n", e.ms / n, 100 * e.ms / profile.span_ms, e.calls / n, e.name.c_str());
        std::printf("    %9.3f %6.1f%% %7s  idle (slowest rank %.3f ms/step)\n    %9.3f %6.1f%% %7s  span, first to last "
                    "mark\n",
                    profile.idle_ms / n, 100 * profile.idle_ms / profile.span_ms, "", idle_max,
                    profile.span_ms / n, 100.0, "");
      }
      std::fflush(stdout);
      if (!o.json.empty()) {
        nlohmann::json j;
        j["label"] = label;
        j["layout"] = layout;
        j["gpus"] = world;
        j["device"] = cfg.device;
        j["attention"] = cfg.attention;
        j["recompute"] = cfg.recompute;
        j["recompute_num_layers"] = cfg.recompute_num_layers;
        j["loss_chunk_mib"] = cfg.loss_chunk_mib;
        j["gemm_autotune"] = cfg.gemm_autotune;
        j["optimizer_overlap_sms"] = cfg.optimizer_overlap_sms;  // -1: all SMs at low priority
        j["optimizer_overlap_gemm_limit"] = cfg.overlap_gemm_limit;
        j["micro_batch"] = cfg.micro_batch;
        j["grad_accum"] = cfg.grad_accum;
        j["seq_len"] = m.seq_len;
        j["params"] = N;
        j["tokens_per_s"] = tps;
        j["tokens_per_s_per_gpu"] = tps / world;
        j["ms_median"] = median * 1e3;
        j["ms_min"] = sorted.front() * 1e3;
        j["ms_max"] = sorted.back() * 1e3;
        j["mfu"] = mfu;
        j["hfu"] = hfu;
        j["peak_allocator_gib"] = reserved / (1 << 30);
        j["peak_device_gib"] = used / (1 << 30);
        if (o.profile > 0) {
          nlohmann::json pj;
          for (const prof::Entry& e : profile.entries)
            pj.push_back({{"op", e.name}, {"ms_per_step", e.ms / o.profile}, {"calls_per_step", double(e.calls) / o.profile}});
          j["profile"] = pj;
          j["profile_idle_ms_per_step"] = profile.idle_ms / o.profile;
          j["profile_span_ms_per_step"] = profile.span_ms / o.profile;
        }
        std::ofstream(o.json, std::ios::app) << j.dump() << "\n";
      }
    }
    return 0;
  });
}
