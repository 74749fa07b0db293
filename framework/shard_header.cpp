#include "framework/shard_header.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <limits>

#include "ops/check.h"

namespace braid {

static_assert(std::endian::native == std::endian::little,
              "token checksums are defined on little-endian stored bytes");

namespace {
constexpr const char* kHint = " (expected a token shard written by braid-data)";
}

void validate_shard_header(const ShardHeader& h, const std::string& path) {
  BRAID_REQUIRE(h.format_version == 1 || h.format_version == 2,
                "shard " << path << " has format_version " << h.format_version
                         << "; this build of Braid reads versions 1 and " << kTokenShardFormatVersion);
  BRAID_REQUIRE(h.vocab_size >= 1 && h.vocab_size <= kMaxVocabSize,
                "shard " << path << " has vocab_size " << h.vocab_size << "; expected a value in [1, "
                         << kMaxVocabSize << "] (corrupt or forged header)");
  BRAID_REQUIRE(h.token_count >= 0, "shard " << path << " has token_count " << h.token_count
                                             << "; expected >= 0");
  BRAID_REQUIRE(h.tokens_unsigned_integer && (h.token_bytes == 2 || h.token_bytes == 4) && h.tokens_rank == 1,
                "shard " << path << ": /tokens should be a 1-D uint16 or uint32 dataset" << kHint);
  BRAID_REQUIRE(h.tokens_length == uint64_t(h.token_count),
                "shard " << path << ": /tokens holds " << h.tokens_length
                         << " tokens but the attribute token_count says " << h.token_count);
  BRAID_REQUIRE(h.token_bytes == 4 || h.vocab_size <= 65536,
                "shard " << path << " stores uint16 tokens but declares vocabulary " << h.vocab_size
                         << " (> 65536)");
  if (!h.tokens_filtered) {
    // Unwritten chunks read back as zeros: a forged extent without data is refused here,
    // before a buffer of its size is allocated. Compared by division: tokens_length x
    // token_bytes can exceed 2^64 in a forged header (a saturated product would let a
    // saturated storage size pass; found by fuzz_shard_header).
    BRAID_REQUIRE(h.tokens_storage_bytes / h.token_bytes >= h.tokens_length,
                  "shard " << path << ": /tokens claims " << h.token_count << " tokens of " << h.token_bytes
                           << " bytes but stores only " << h.tokens_storage_bytes << " bytes (truncated or forged)");
  }
  BRAID_REQUIRE(h.tokens_storage_bytes <= h.file_bytes,
                "shard " << path << ": /tokens has " << h.tokens_storage_bytes << " bytes of storage but the file has "
                         << h.file_bytes << " bytes (truncated)");
  if (h.format_version >= 2) {
    BRAID_REQUIRE(h.checksum_block_tokens >= 1 && h.checksum_block_tokens <= kMaxChecksumBlockTokens,
                  "shard " << path << " has checksum_block_tokens " << h.checksum_block_tokens
                           << "; expected a value in [1, " << kMaxChecksumBlockTokens << "]");
    const int64_t blocks = checksum_block_count(h.token_count, h.checksum_block_tokens);
    BRAID_REQUIRE(h.crcs_uint32 && h.crcs_rank == 1 && h.crcs_length == uint64_t(blocks),
                  "shard " << path << ": /tokens_crc32 should be a 1-D uint32 dataset of " << blocks
                           << " checksums (one per " << h.checksum_block_tokens << " tokens)" << kHint);
  }
}

int64_t checksum_block_count(int64_t token_count, int64_t block_tokens) {
  return token_count / block_tokens + (token_count % block_tokens != 0 ? 1 : 0);
}

std::vector<uint32_t> token_block_crcs(const void* tokens, int64_t token_count, uint64_t token_bytes,
                                       int64_t block_tokens) {
  std::vector<uint32_t> out;
  const auto* bytes = static_cast<const Bytef*>(tokens);
  for (int64_t start = 0; start < token_count; start += block_tokens) {
    const int64_t n = std::min(block_tokens, token_count - start);
    uLong c = crc32_z(0L, Z_NULL, 0);
    out.push_back(uint32_t(crc32_z(c, bytes + uint64_t(start) * token_bytes, uint64_t(n) * token_bytes)));
  }
  return out;
}

}  // namespace braid
