// Token datasets on disk: HDF5 shard files, written once by braid-data, read by training.
//
// Why HDF5 shards (DESIGN.md "Files on disk"): a self-describing file carries the vocab
// size, tokenizer and format version next to the tokens, so a dataset made for another
// model is refused with a clear message instead of training on wrong ids; fixed-size
// shards keep single files manageable and let a corpus grow by adding files.
//
// Layout of one shard <split>_NNNNNN.h5 (NNNNNN = 000000, 000001, ... without gaps):
//   /tokens       1-D chunked, uint16 when vocab_size <= 65536 else uint32  [token_count]
//   /doc_offsets  1-D int64: start of each document that begins in this shard, relative
//                 to the shard's first token (a document may continue into the next shard)
//   /tokens_crc32 1-D uint32: crc32 of the stored bytes of each block of
//                 checksum_block_tokens tokens (format 2)
//   root attributes: vocab_size (int64), tokenizer (string), token_count (int64),
//                    format_version (int64: 2 is written, 1 and 2 are read),
//                    checksum_block_tokens (int64, format 2)
// Every header fact is validated (shard_header.h) before a token is allocated or read, and
// every token block is checked against its crc32 once, when first read.
// The shards of a split, concatenated in order, are one token stream.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "framework/shard_header.h"

namespace braid {

// Writes one shard to `path` (via path + ".tmp" and a rename, so a shard is either complete
// or absent). tokens must be < vocab_size and non-empty; doc_offsets ascending in
// [0, tokens.size()). InputError on a bad token id; Error on an I/O failure.
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens,
                       std::span<const int64_t> doc_offsets, int64_t vocab_size,
                       const std::string& tokenizer_name);

// The token stream of one split ("train" or "val") of a dataset directory.
// Splits of fewer than max_resident_bytes bytes of stored tokens (1 GiB by default) are
// loaded into memory at open; larger ones are read from the files on demand (hyperslabs).
// Every inconsistency is an InputError naming the file and what was expected.
// Not thread-safe (HDF5 is built without thread safety).
class TokenDataset {
 public:
  TokenDataset(const std::string& directory, const std::string& split,
               int64_t max_resident_bytes = int64_t{1} << 30);
  ~TokenDataset();
  TokenDataset(const TokenDataset&) = delete;
  TokenDataset& operator=(const TokenDataset&) = delete;

  const std::string& directory() const { return directory_; }
  const std::string& split() const { return split_; }
  int64_t vocab_size() const { return vocab_size_; }
  const std::string& tokenizer() const { return tokenizer_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }
  const std::string& shard_path(int64_t shard) const;
  bool resident() const { return resident_; }

  // Copies tokens [start, start + count) of the stream into out[count], across shard
  // boundaries. The range must lie inside [0, num_tokens()). Corrupt data found here (on
  // demand, outside the collective checks at open) is a braid::Error, which stops the job.
  void read(int64_t start, int64_t count, int32_t* out) const;

 private:
  struct Shard;
  void verify_blocks(const Shard& shard, int64_t local, int64_t count) const;
  std::string directory_;
  std::string split_;
  int64_t vocab_size_ = 0;
  std::string tokenizer_;
  int64_t num_tokens_ = 0;
  bool resident_ = false;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> shard_starts_;  // [num_shards + 1] first token of each shard, then total
};

}  // namespace braid
