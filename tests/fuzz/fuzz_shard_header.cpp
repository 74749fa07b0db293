// libFuzzer target: the checks of a token shard's header (validate_shard_header), with
// every fact that dataset.cpp reads from the file forgeable. Accepted headers must keep
// the promises the reader relies on before it allocates: the claimed tokens are stored in
// full inside the file, the vocabulary is bounded, the checksum table has one entry per
// block.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>

#include "framework/shard_header.h"
#include "ops/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  braid::ShardHeader h;
  // Mostly plausible values, sometimes anything: both halves of the space get explored.
  auto int_or_any = [&](int64_t lo, int64_t hi) {
    return p.ConsumeBool() ? p.ConsumeIntegralInRange<int64_t>(lo, hi) : p.ConsumeIntegral<int64_t>();
  };
  h.format_version = int_or_any(0, 3);
  h.vocab_size = int_or_any(0, 70000);
  h.token_count = int_or_any(-1, 5000);
  h.tokens_unsigned_integer = p.ConsumeBool();
  h.token_bytes = p.ConsumeIntegralInRange<uint64_t>(0, 8);
  h.tokens_rank = p.ConsumeIntegralInRange(-1, 3);
  h.tokens_length = p.ConsumeBool() ? uint64_t(h.token_count) : p.ConsumeIntegral<uint64_t>();
  h.tokens_filtered = p.ConsumeBool();
  h.tokens_storage_bytes = p.ConsumeIntegral<uint64_t>();
  h.checksum_block_tokens = int_or_any(0, 300);
  h.crcs_uint32 = p.ConsumeBool();
  h.crcs_rank = p.ConsumeIntegralInRange(-1, 2);
  h.crcs_length = p.ConsumeBool() && h.checksum_block_tokens > 0 && h.token_count >= 0
                      ? uint64_t(braid::checksum_block_count(h.token_count, h.checksum_block_tokens))
                      : p.ConsumeIntegral<uint64_t>();
  h.file_bytes = p.ConsumeIntegral<uint64_t>();
  try {
    braid::validate_shard_header(h, "train_000000.h5");
    if (h.vocab_size < 1 || h.vocab_size > braid::kMaxVocabSize || h.token_count < 0) __builtin_trap();
    if (h.tokens_length != uint64_t(h.token_count) || (h.token_bytes != 2 && h.token_bytes != 4)) __builtin_trap();
    if (h.token_bytes == 2 && h.vocab_size > 65536) __builtin_trap();
    if (!h.tokens_filtered && h.tokens_storage_bytes / h.token_bytes < h.tokens_length) __builtin_trap();
    if (h.tokens_storage_bytes > h.file_bytes) __builtin_trap();
    if (h.format_version == 2 &&
        h.crcs_length != uint64_t(braid::checksum_block_count(h.token_count, h.checksum_block_tokens)))
      __builtin_trap();
  } catch (const braid::InputError&) {
  }
  // Block checksums of whatever bytes remain, read as tokens.
  const std::vector<uint8_t> rest = p.ConsumeRemainingBytes<uint8_t>();
  const int64_t tokens = int64_t(rest.size() / 2);
  if (tokens > 0) {
    const int64_t block = 1 + int64_t(rest.size() % 7);
    if (int64_t(braid::token_block_crcs(rest.data(), tokens, 2, block).size()) !=
        braid::checksum_block_count(tokens, block))
      __builtin_trap();
  }
  return 0;
}
