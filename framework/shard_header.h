// What a token shard's header must satisfy before any token is allocated or read, as a
// pure function of the facts read from the file (no HDF5 here, so tests and fuzzers drive
// it from memory). dataset.cpp gathers the facts; see dataset.h for the layout.
//
// Format versions: 1 (tokens and attributes) and 2 (adds /tokens_crc32: the zlib crc32 of
// the stored little-endian bytes of every block of checksum_block_tokens tokens, so a
// flipped bit in the token data is an error instead of a different token).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace braid {

constexpr int64_t kTokenShardFormatVersion = 2;  // written; versions 1 and 2 are read
// A vocabulary larger than this is a corrupt or forged header: 64x the largest tokenizers
// in use (256 K), and the model's embedding would be sized from it.
constexpr int64_t kMaxVocabSize = int64_t{1} << 24;
// Bound of checksum_block_tokens (blocks are read whole when verified).
constexpr int64_t kMaxChecksumBlockTokens = int64_t{1} << 26;

struct ShardHeader {
  int64_t format_version = 0;
  int64_t vocab_size = 0;
  int64_t token_count = -1;
  std::string tokenizer;
  // /tokens
  bool tokens_unsigned_integer = false;
  uint64_t token_bytes = 0;        // bytes per stored token
  int tokens_rank = -1;
  uint64_t tokens_length = 0;      // extent of the 1-D dataset
  bool tokens_filtered = false;    // compressed or otherwise filtered (storage size unknown)
  uint64_t tokens_storage_bytes = 0;
  // /tokens_crc32 (format 2)
  int64_t checksum_block_tokens = 0;
  bool crcs_uint32 = false;
  int crcs_rank = -1;
  uint64_t crcs_length = 0;
  uint64_t file_bytes = 0;
};

// InputError naming `path` and the violated property, else returns.
void validate_shard_header(const ShardHeader& h, const std::string& path);

// Number of checksum blocks of a shard of `token_count` tokens.
int64_t checksum_block_count(int64_t token_count, int64_t block_tokens);
// crc32 of each block of `block_tokens` stored tokens (little-endian, `token_bytes` each).
std::vector<uint32_t> token_block_crcs(const void* tokens, int64_t token_count, uint64_t token_bytes,
                                       int64_t block_tokens);

}  // namespace braid
