#include "framework/sampler.h"

#include <algorithm>
#include <cmath>

#include "framework/checkpoint.h"
#include "framework/gpt.h"
#include "framework/philox.h"

namespace braid {

std::vector<int32_t> sample_from_checkpoint(const std::string& dir, const std::vector<int32_t>& prompt,
                                            const SampleOptions& opts, ModelConfig* model_out) {
  nlohmann::json man = read_checkpoint_manifest(dir);
  ModelConfig cfg = TrainConfig::from_json(man.at("config")).model;
  if (model_out) *model_out = cfg;
  BRAID_REQUIRE(!prompt.empty(), "the prompt must hold at least one token");
  for (int32_t t : prompt)
    BRAID_REQUIRE(t >= 0 && t < cfg.vocab_size, "prompt token " << t << " is outside the model's vocabulary "
                                                                << cfg.vocab_size);
  ProcessGroups groups = make_process_groups(MPI_COMM_SELF, 1, 1);
  ModelLayout layout = make_model_layout(cfg, 1, 0, 1, 0, 1, false, {});
  auto backend = make_cpu_backend();
  Gpt model(cfg, layout, *groups.tp, 1, *backend);
  ParamStore store;
  model.register_params(store, false);
  store.finalize(int64_t(1) << 24, 1);
  model.bind_backend();
  load_checkpoint(dir, store, nullptr, groups, cfg);

  const int T = cfg.seq_len;
  const int64_t Vp = cfg.vocab_padded(), V = cfg.vocab_size;
  std::vector<int32_t> seq = prompt, out;
  std::vector<std::pair<float, int32_t>> cand(static_cast<size_t>(V));
  for (int i = 0; i < opts.tokens; ++i) {
    const int start = std::max(0, int(seq.size()) - T);
    const int len = int(seq.size()) - start;
    ChunkActivations acts;
    acts.tokens.assign(size_t(T), 0);  // positions >= len are padding the causal mask ignores
    std::copy(seq.begin() + start, seq.end(), acts.tokens.begin());
    model.forward(0, acts, nullptr, false, 0.f);
    std::vector<float> row = backend->row_to_host(acts.logits, len - 1, Vp);
    const float* logits = row.data();
    int32_t next = 0;
    if (opts.temperature <= 0) {
      next = int32_t(std::max_element(logits, logits + V) - logits);
    } else {
      for (int64_t v = 0; v < V; ++v) cand[size_t(v)] = {logits[v] / opts.temperature, int32_t(v)};
      int k = opts.top_k > 0 ? std::min<int>(opts.top_k, int(V)) : int(V);
      std::partial_sort(cand.begin(), cand.begin() + k, cand.end(),
                        [](auto& a, auto& b) { return a.first > b.first; });
      double mx = cand[0].first, z = 0;
      for (int j = 0; j < k; ++j) z += std::exp(cand[size_t(j)].first - mx);
      double u = philox_uniform(opts.seed, 0x5A3F1E, uint64_t(i)) * z, acc = 0;
      next = cand[size_t(k - 1)].second;
      for (int j = 0; j < k; ++j) {
        acc += std::exp(cand[size_t(j)].first - mx);
        if (u < acc) {
          next = cand[size_t(j)].second;
          break;
        }
      }
    }
    seq.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace braid
