// Tokenizers: text <-> token ids, for braid-data (import) and sampling (decode).
//
// Why two: ByteTokenizer needs no files and makes every byte string representable, which
// is what tests and tiny experiments want; Gpt2Tokenizer reproduces OpenAI's GPT-2
// byte-level BPE so that datasets and checkpoints interoperate with llm.c / nanoGPT
// (same ids for the same text). Both are lossless on arbitrary bytes:
// decode(encode(x)) == x, invalid UTF-8 included.
//
// Neither encoder treats "<|endoftext|>" in the text as special: it is encoded as ordinary
// text, and the importer appends eot_token() after each document itself. That keeps user
// text from forging document boundaries.
#pragma once
#include <cstdint>
#include <filesystem>
#include <istream>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace braid {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // InputError on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t eot_token() const = 0;
  virtual std::string name() const = 0;
};

// One token per byte (0..255) plus the end-of-text token 256. decode() writes EOT as
// "<|endoftext|>", like GPT-2, so that sampled text shows document boundaries.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return 257; }
  int32_t eot_token() const override { return 256; }
  std::string name() const override { return "byte"; }
};

// GPT-2 byte-level BPE (vocab 50257, EOT 50256 "<|endoftext|>").
// Files: vocab_dir/encoder.json (token string -> id, in the bytes-to-unicode alphabet) and
// vocab_dir/vocab.bpe (the 50000 merges in rank order); launch/fetch_gpt2_vocab.sh gets them.
//
// Pre-tokenization follows GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// implemented by hand on UTF-8 code points. \s is exactly Unicode White_Space; \p{L} and
// \p{N} are exact for ASCII and approximated by tables of the main letter/number blocks
// elsewhere (see tokenizer.cpp), so rare scripts may split differently from OpenAI's
// encoder (the ids stay valid and the round trip exact). Invalid UTF-8 bytes are
// treated as single punctuation-like characters.
//
// encode() keeps a cache of word encodings: it is const but not thread-safe.
class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::string& vocab_dir);
  // The same from the two files' contents (tests, fuzzing); the names appear in messages.
  Gpt2Tokenizer(std::istream& encoder_json, std::istream& merges_bpe, const std::string& encoder_name,
                const std::string& merges_name);
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_bytes_.size()); }
  int32_t eot_token() const override { return eot_token_; }
  std::string name() const override { return "gpt2"; }

 private:
  // Reads and validates encoder.json and vocab.bpe (InputError naming the file and line).
  void load(std::istream& encoder_json, std::istream& merges_bpe, const std::filesystem::path& encoder_path,
            const std::filesystem::path& merges_path);
  // BPE of one pre-token (raw bytes) appended to ids; uses and fills the cache.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  std::vector<std::string> id_to_bytes_;           // [V] token id -> raw bytes
  int32_t byte_to_id_[256];                         // single-byte tokens
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> merge
  int32_t eot_token_ = -1;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// name: "byte" or "gpt2". vocab_dir is only read for "gpt2". InputError for an unknown
// name or a missing/corrupt vocabulary file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir);

}  // namespace braid
