// GPT-2 architecture sizes and how they are split over a layout. The vocabulary is padded
// to a multiple of 64 (vocab_padded) for GEMM efficiency; the padded ids never reach the
// loss. Under tensor parallelism each rank owns ceil(vocab_padded / TP) rows of the
// embedding; rows past vocab_padded on the last shard are storage only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace braid {

struct ModelConfig {
  int64_t vocab_size = 50257;  // real vocabulary (tokens the data can hold)
  int n_layer = 12, n_head = 12, n_embd = 768, seq_len = 1024;

  int64_t vocab_padded() const { return (vocab_size + 63) / 64 * 64; }
  int head_size() const { return n_embd / n_head; }
  int64_t num_parameters() const;  // logical (unsharded, untied) parameter count
  std::string describe() const;
};

// How one rank holds the model: TP shard sizes and the pipeline chunk(s) of layers.
struct ModelLayout {
  int tp = 1, tp_rank = 0;
  int pp = 1, pp_rank = 0;
  int virtual_stages = 1;        // model chunks per stage (interleaved schedule)
  bool sequence_parallel = false;
  std::vector<int> chunk_layers;  // layers per global chunk (pp * virtual_stages entries)

  int total_chunks() const { return pp * virtual_stages; }
  int global_chunk(int local_chunk) const { return local_chunk * pp + pp_rank; }
  int first_layer_of(int global_chunk) const;
  // Attention heads per TP rank: ceil(heads / TP). When TP does not divide the heads, the
  // last rank(s) hold zero "padding" heads (zero weights, zero outputs, zero gradients,
  // never saved), as the vocabulary is padded: GPT-2 1.5B's 25 heads run on TP 2 as 13 +
  // (12 + 1 padding), on TP 8 as 4 x 6 + (1 + 3) + (0 + 4). The step time follows the
  // largest rank, so padding costs nothing beyond the imbalance. attn_local is their
  // width, the local rows of q, k and v.
  int heads_local(const ModelConfig& m) const { return int((int64_t(m.n_head) + tp - 1) / tp); }  // int64: untrusted flags
  int64_t attn_local(const ModelConfig& m) const { return int64_t(heads_local(m)) * m.head_size(); }
  int64_t mlp_local(const ModelConfig& m) const { return int64_t{4} * m.n_embd / tp; }
  int64_t vocab_per_rank(const ModelConfig& m) const { return (m.vocab_padded() + tp - 1) / tp; }
  int64_t vocab_start(const ModelConfig& m) const { return vocab_per_rank(m) * tp_rank; }
  int seq_local(const ModelConfig& m) const { return sequence_parallel ? m.seq_len / tp : m.seq_len; }
};

// Token rows [first_row, first_row + rows) of a [B, T] batch (flat row = b * T + t) as
// runs of consecutive positions, in row order: whole samples merged into one run, a
// partial sample at either end its own. Used to add position embeddings to a sequence-
// parallel block, which may start and end inside a sample.
struct PositionRun {
  int64_t row = 0;  // first row of the run, relative to first_row
  int samples = 0;  // samples in the run (> 1 only when whole)
  int len = 0;      // positions per sample
  int pos = 0;      // first position
};
std::vector<PositionRun> position_runs(int64_t first_row, int64_t rows, int T);

// Rows of the LM head and loss computed at once when the loss is chunked (--loss-chunk-mib):
// as many as keep one chunk's logits [rows, Vl] within budget_bytes (at least one row),
// rounded down to a multiple of 128 (GEMM tiles) when there are more than 128; 0 budget =
// all N rows at once. Identical on every TP rank (Vl is), so their collectives pair up.
int64_t loss_chunk_rows(int64_t budget_bytes, int64_t N, int64_t Vl, int elem_bytes);

// Validates the model against the layout (heads, width, layers, sequence for SP) and fills
// chunk_layers from an explicit split (pp_layers; empty = even). Throws InputError naming
// the flags on mismatch.
ModelLayout make_model_layout(const ModelConfig& m, int tp, int tp_rank, int pp, int pp_rank,
                              int virtual_stages, bool sequence_parallel,
                              const std::vector<int>& pp_layers);

}  // namespace braid
