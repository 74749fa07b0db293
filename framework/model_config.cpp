#include "framework/model_config.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "ops/check.h"

namespace braid {

int64_t ModelConfig::num_parameters() const {
  int64_t C = n_embd;
  int64_t per_layer = 12 * C * C + 13 * C;
  return vocab_padded() * C + int64_t(seq_len) * C + n_layer * per_layer + 2 * C;
}

std::string ModelConfig::describe() const {
  std::ostringstream os;
  os << "GPT-2 L=" << n_layer << " H=" << n_head << " C=" << n_embd << " T=" << seq_len
     << " V=" << vocab_size << " (padded " << vocab_padded() << "), "
     << double(num_parameters()) / 1e6 << "M parameters";
  return os.str();
}

int ModelLayout::first_layer_of(int g) const {
  return std::accumulate(chunk_layers.begin(), chunk_layers.begin() + g, 0);
}

ModelLayout make_model_layout(const ModelConfig& m, int tp, int tp_rank, int pp, int pp_rank,
                              int virtual_stages, bool sequence_parallel,
                              const std::vector<int>& pp_layers) {
  BRAID_REQUIRE(m.n_layer >= 1 && m.n_head >= 1 && m.n_embd >= 1 && m.seq_len >= 1,
                "--layers, --heads, --width and --seq-len must be positive");
  // The layout lists the layers of every pipeline chunk: an absurd count (fuzzing found
  // --layers 1073741824 --virtual-stages 1073741824) would build a billion-entry list.
  constexpr int kMaxLayers = 1 << 16;
  BRAID_REQUIRE(m.n_layer <= kMaxLayers, "--layers " << m.n_layer << " is more than the " << kMaxLayers
                                                     << " transformer blocks supported");
  BRAID_REQUIRE(m.n_embd % m.n_head == 0,
                "--width " << m.n_embd << " is not divisible by --heads " << m.n_head);
  // Heads need not divide by TP: each rank holds ceil(heads / TP), the last ones padded
  // with zero heads (ModelLayout::heads_local).
  BRAID_REQUIRE(m.n_head >= tp, "--tp " << tp << " is more than the " << m.n_head
                                        << " attention heads (--heads) it splits");
  BRAID_REQUIRE((int64_t{4} * m.n_embd) % tp == 0,  // int64: --width is untrusted (fuzzing found 4 x 2^30)
                "the MLP width 4 x --width = " << int64_t{4} * m.n_embd << " is not divisible by --tp " << tp);
  BRAID_REQUIRE(virtual_stages >= 1, "--virtual-stages must be >= 1");
  if (sequence_parallel)
    BRAID_REQUIRE(m.seq_len % tp == 0, "--sequence-parallel needs --seq-len " << m.seq_len
                                           << " divisible by --tp " << tp);
  ModelLayout l;
  l.tp = tp;
  l.tp_rank = tp_rank;
  l.pp = pp;
  l.pp_rank = pp_rank;
  l.virtual_stages = virtual_stages;
  l.sequence_parallel = sequence_parallel && tp > 1;
  const int64_t chunks = int64_t(pp) * virtual_stages;  // int64: the flags are untrusted
  if (pp_layers.empty()) {
    BRAID_REQUIRE(m.n_layer >= chunks, "--layers " << m.n_layer << " is fewer than --pp " << pp
                                                   << " x --virtual-stages " << virtual_stages
                                                   << " = " << chunks << " pipeline chunks");
    for (int g = 0; g < int(chunks); ++g)
      l.chunk_layers.push_back(m.n_layer / chunks + (g < m.n_layer % chunks ? 1 : 0));
  } else {
    BRAID_REQUIRE(int64_t(pp_layers.size()) == chunks,
                  "--pp-layers lists " << pp_layers.size() << " stages but --pp x --virtual-stages = "
                                       << chunks);
    int sum = 0;
    for (int n : pp_layers) {
      BRAID_REQUIRE(n >= 1, "--pp-layers entries must be >= 1");
      sum += n;
    }
    BRAID_REQUIRE(sum == m.n_layer, "--pp-layers sums to " << sum << " but --layers is " << m.n_layer);
    l.chunk_layers = pp_layers;
  }
  return l;
}

int64_t loss_chunk_rows(int64_t budget_bytes, int64_t N, int64_t Vl, int elem_bytes) {
  if (budget_bytes <= 0) return N;
  int64_t rows = std::max<int64_t>(1, budget_bytes / (Vl * elem_bytes));
  if (rows > 128) rows -= rows % 128;
  return std::min(rows, std::max<int64_t>(N, 1));
}

std::vector<PositionRun> position_runs(int64_t first_row, int64_t rows, int T) {
  std::vector<PositionRun> runs;
  int64_t r = first_row, local = 0;
  const int64_t end = first_row + rows;
  while (r < end) {
    const int t = int(r % T);
    PositionRun run;
    run.row = local;
    run.pos = t;
    if (t == 0 && end - r >= T) {  // whole samples
      run.samples = int((end - r) / T);
      run.len = T;
    } else {  // part of one sample
      run.samples = 1;
      run.len = int(std::min<int64_t>(T - t, end - r));
    }
    runs.push_back(run);
    r += int64_t(run.samples) * run.len;
    local += int64_t(run.samples) * run.len;
  }
  return runs;
}

}  // namespace braid
