// Dataset import (see text_import.h for the rules). Memory stays bounded by one input file
// plus one shard of tokens: documents are tokenized as they are read and shards are
// written as soon as they fill.
#include "framework/text_import.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <ostream>
#include <span>
#include <system_error>

#include "framework/dataset.h"
#include "framework/tokenizer.h"
#include "ops/check.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kLlmcMagic = 20240520;
constexpr int32_t kLlmcVersionUint16 = 1;
constexpr int64_t kLlmcHeaderInts = 256;
constexpr int64_t kLlmcHeaderBytes = kLlmcHeaderInts * 4;
// Tokens read from an llmc/raw file at a time.
constexpr int64_t kReadBlockTokens = int64_t{1} << 22;

// Accumulates one split's token stream and writes it as shards of shard_tokens tokens.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string split, int64_t vocab_size, std::string tokenizer,
              int64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), vocab_size_(vocab_size),
        tokenizer_(std::move(tokenizer)), shard_tokens_(shard_tokens) {}

  // The next appended token starts a document.
  void begin_document() {
    doc_offsets_.push_back(static_cast<int64_t>(buffer_.size()));
    ++summary_.documents;
  }

  void append(std::span<const uint32_t> tokens) {
    while (!tokens.empty()) {
      const size_t room = size_t(shard_tokens_) - buffer_.size();
      const size_t n = std::min(room, tokens.size());
      buffer_.insert(buffer_.end(), tokens.begin(), tokens.begin() + n);
      tokens = tokens.subspan(n);
      if (buffer_.size() == size_t(shard_tokens_)) flush();
    }
  }

  void finish() {
    if (!buffer_.empty()) flush();
  }

  const SplitSummary& summary() const { return summary_; }

 private:
  void flush() {
    char name[64];
    std::snprintf(name, sizeof(name), "%s_%06zu.h5", split_.c_str(), summary_.files.size());
    const std::string path = (fs::path(dir_) / name).string();
    write_token_shard(path, buffer_, doc_offsets_, vocab_size_, tokenizer_);
    summary_.files.push_back(path);
    summary_.tokens += static_cast<int64_t>(buffer_.size());
    buffer_.clear();
    doc_offsets_.clear();
  }

  std::string dir_, split_;
  int64_t vocab_size_;
  std::string tokenizer_;
  int64_t shard_tokens_;
  std::vector<uint32_t> buffer_;     // [< shard_tokens] tokens of the shard being filled
  std::vector<int64_t> doc_offsets_;  // document starts inside buffer_
  SplitSummary summary_;
};

std::string read_file(const std::string& path) {
  BRAID_REQUIRE(fs::is_regular_file(path), "input file " << path << " not found");
  std::ifstream in(path, std::ios::binary);
  BRAID_REQUIRE(in, "cannot open input file " << path);
  std::string data(fs::file_size(path), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  BRAID_REQUIRE(in.gcount() == std::streamsize(data.size()), "cannot read input file " << path);
  return data;
}

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

// Calls emit(document) for each non-blank document of a file's text. With a separator, a
// line equal to it (ignoring a trailing '\r') ends the current document; the separator
// line itself belongs to no document.
void split_documents(std::string_view text, const std::optional<std::string>& separator,
                     const std::function<void(std::string_view)>& emit) {
  if (!separator) {
    if (!is_blank(text)) emit(text);
    return;
  }
  size_t doc_begin = 0;
  for (size_t line_begin = 0; line_begin < text.size();) {
    size_t line_end = text.find('\n', line_begin);
    const size_t next = line_end == std::string_view::npos ? text.size() : line_end + 1;
    if (line_end == std::string_view::npos) line_end = text.size();
    std::string_view line = text.substr(line_begin, line_end - line_begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == *separator) {
      std::string_view doc = text.substr(doc_begin, line_begin - doc_begin);
      if (!is_blank(doc)) emit(doc);
      doc_begin = next;
    }
    line_begin = next;
  }
  std::string_view doc = text.substr(doc_begin);
  if (!is_blank(doc)) emit(doc);
}

int64_t raw_token_count(const std::string& path) {
  BRAID_REQUIRE(fs::is_regular_file(path), "input file " << path << " not found");
  const auto bytes = static_cast<int64_t>(fs::file_size(path));
  BRAID_REQUIRE(bytes % 2 == 0, "raw token file " << path << " has " << bytes << " bytes; "
                "expected an even number (headerless uint16 tokens)");
  return bytes / 2;
}

// Reads count uint16 tokens from path starting at byte offset, in blocks, calling
// emit(block, index of the block's first token).
void read_uint16_tokens(const std::string& path, int64_t offset_bytes, int64_t count,
                        const std::function<void(std::span<const uint16_t>, int64_t)>& emit) {
  std::ifstream in(path, std::ios::binary);
  BRAID_REQUIRE(in, "cannot open input file " << path);
  in.seekg(offset_bytes);
  std::vector<uint16_t> block;
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(kReadBlockTokens, count - done);
    block.resize(size_t(n));
    in.read(reinterpret_cast<char*>(block.data()), std::streamsize(n * 2));
    BRAID_REQUIRE(in.gcount() == std::streamsize(n * 2),
                  "input file " << path << " ended early (read " << done + in.gcount() / 2
                  << " of " << count << " tokens)");
    emit(block, done);
    done += n;
  }
}

void require_no_shards(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard = (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0) &&
                       name.size() > 3 && name.substr(name.size() - 3) == ".h5";
    BRAID_REQUIRE(!shard, "output directory " << dir << " already holds shards (" << name
                  << "); a shard is written once: remove them or choose another directory");
  }
}

void import_text(const ImportOptions& options, SplitWriter& train, SplitWriter* val,
                 const Tokenizer& tokenizer) {
  // Every k-th document goes to val; k >= 2 because val_fraction <= 0.5.
  const int64_t k = val != nullptr ? std::max<int64_t>(2, std::llround(1.0 / options.val_fraction))
                                   : 0;
  const uint32_t eot = static_cast<uint32_t>(tokenizer.eot_token());
  int64_t doc_index = 0;
  std::vector<uint32_t> tokens;
  for (const std::string& path : options.inputs) {
    const std::string text = read_file(path);
    split_documents(text, options.doc_separator, [&](std::string_view doc) {
      const std::vector<int32_t> ids = tokenizer.encode(doc);
      tokens.assign(ids.begin(), ids.end());
      tokens.push_back(eot);
      SplitWriter& writer = (val != nullptr && doc_index % k == 0) ? *val : train;
      writer.begin_document();
      writer.append(tokens);
      ++doc_index;
    });
  }
}

struct TokenFileInput {
  std::string path;
  int64_t offset_bytes, tokens;
  bool is_val;
};

// Validates every llmc/raw input (header, size) before anything is written.
std::vector<TokenFileInput> scan_token_files(const ImportOptions& options) {
  std::vector<TokenFileInput> inputs;
  for (const std::string& path : options.inputs) {
    TokenFileInput input{path, 0, 0, false};
    if (options.format == ImportFormat::kLlmc) {
      input.offset_bytes = kLlmcHeaderBytes;
      input.tokens = llmc_token_count(path);
    } else {
      input.tokens = raw_token_count(path);
    }
    input.is_val = fs::path(path).filename().string().find("val") != std::string::npos;
    BRAID_REQUIRE(!input.is_val || options.val_fraction > 0, "input " << path << " is a val "
                  "file (its name contains 'val') but --val-fraction is 0; drop it or set a "
                  "fraction");
    inputs.push_back(input);
  }
  return inputs;
}

void import_token_files(const ImportOptions& options, const std::vector<TokenFileInput>& inputs,
                        SplitWriter& train, SplitWriter* val) {
  bool any_val = false;
  int64_t train_tokens = 0;
  for (const TokenFileInput& input : inputs) {
    any_val = any_val || input.is_val;
    if (!input.is_val) train_tokens += input.tokens;
  }
  // Without a val file, the last val_fraction of the train stream is held out.
  int64_t holdout_start = train_tokens;
  if (val != nullptr && !any_val) {
    const int64_t holdout = std::max<int64_t>(1, std::llround(options.val_fraction *
                                                              double(train_tokens)));
    BRAID_REQUIRE(holdout < train_tokens, "inputs hold " << train_tokens << " tokens: too few "
                  "to hold out a val split");
    holdout_start = train_tokens - holdout;
  }

  const int64_t eot = options.tokenizer == "gpt2" ? 50256 : options.tokenizer == "byte" ? 256 : -1;
  int64_t train_position = 0;  // tokens of the train stream seen so far (before hold-out)
  std::vector<uint32_t> wide;
  for (const TokenFileInput& input : inputs) {
    read_uint16_tokens(input.path, input.offset_bytes, input.tokens,
                       [&](std::span<const uint16_t> block, int64_t first) {
      // Route each token to its split, cutting the block where the destination changes.
      size_t begin = 0;
      SplitWriter* current = nullptr;
      const auto flush_to = [&](size_t end) {
        if (current != nullptr && end > begin) {
          current->append(std::span(wide).subspan(begin, end - begin));
        }
        begin = end;
      };
      wide.assign(block.begin(), block.end());
      for (size_t i = 0; i < block.size(); ++i) {
        const int64_t position = first + int64_t(i);
        BRAID_REQUIRE(block[i] < options.vocab_size, "token id " << block[i] << " at position "
                      << position << " of " << input.path << " is outside the vocabulary of "
                      << options.vocab_size << " tokens (set --vocab-size)");
        SplitWriter* dest = input.is_val ? val
                            : (train_position + int64_t(i) >= holdout_start ? val : &train);
        const bool starts_doc = block[i] == eot || position == 0 ||
                                (!input.is_val && train_position + int64_t(i) == holdout_start);
        if (dest != current || starts_doc) {
          flush_to(i);
          current = dest;
          if (starts_doc) current->begin_document();
        }
      }
      flush_to(block.size());
      if (!input.is_val) train_position += int64_t(block.size());
    });
  }
}

}  // namespace

ImportFormat parse_import_format(const std::string& name) {
  if (name == "text") return ImportFormat::kText;
  if (name == "llmc") return ImportFormat::kLlmc;
  if (name == "raw") return ImportFormat::kRaw;
  throw InputError("unknown input format '" + name + "'; expected text, llmc or raw");
}

int64_t llmc_token_count(const std::string& path) {
  BRAID_REQUIRE(fs::is_regular_file(path), "input file " << path << " not found");
  const auto bytes = static_cast<int64_t>(fs::file_size(path));
  BRAID_REQUIRE(bytes >= kLlmcHeaderBytes, "llm.c token file " << path << " has " << bytes
                << " bytes, less than its 1024-byte header");
  std::array<int32_t, kLlmcHeaderInts> header{};
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(header.data()), kLlmcHeaderBytes);
  BRAID_REQUIRE(in.gcount() == kLlmcHeaderBytes, "cannot read the header of " << path);
  BRAID_REQUIRE(header[0] == kLlmcMagic, "file " << path << " is not an llm.c token file: "
                "magic number " << header[0] << ", expected " << kLlmcMagic);
  BRAID_REQUIRE(header[1] == kLlmcVersionUint16, "llm.c token file " << path << " has version "
                << header[1] << "; only version 1 (uint16 GPT-2 tokens) is supported");
  const int64_t tokens = header[2];
  BRAID_REQUIRE(tokens >= 0 && bytes == kLlmcHeaderBytes + 2 * tokens,
                "llm.c token file " << path << " declares " << tokens << " tokens, so it "
                "should have " << kLlmcHeaderBytes + 2 * tokens << " bytes, but it has "
                << bytes << " (truncated?)");
  return tokens;
}

ImportSummary import_dataset(const ImportOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  BRAID_REQUIRE(!options.inputs.empty(), "no input files (--input)");
  BRAID_REQUIRE(!options.output_dir.empty(), "no output directory (--output)");
  BRAID_REQUIRE(options.val_fraction >= 0 && options.val_fraction <= 0.5,
                "--val-fraction " << options.val_fraction << " should be in [0, 0.5]");
  BRAID_REQUIRE(options.shard_tokens >= 1, "--shard-tokens " << options.shard_tokens
                << " should be >= 1");

  for (const std::string& path : options.inputs) {
    BRAID_REQUIRE(fs::is_regular_file(path), "input file " << path << " not found");
  }
  std::vector<TokenFileInput> token_files;
  if (options.format != ImportFormat::kText) token_files = scan_token_files(options);

  std::unique_ptr<Tokenizer> tokenizer;
  ImportSummary summary;
  if (options.format == ImportFormat::kText) {
    tokenizer = make_tokenizer(options.tokenizer, options.vocab_dir);
    summary.tokenizer = tokenizer->name();
    summary.vocab_size = tokenizer->vocab_size();
  } else {
    BRAID_REQUIRE(options.vocab_size >= 1 && options.vocab_size <= 65536,
                  "--vocab-size " << options.vocab_size << " should be in [1, 65536] for "
                  "uint16 token files");
    summary.tokenizer = options.tokenizer;
    summary.vocab_size = options.vocab_size;
  }

  std::error_code ec;
  fs::create_directories(options.output_dir, ec);
  BRAID_REQUIRE(fs::is_directory(options.output_dir), "cannot create output directory "
                << options.output_dir << (ec ? ": " + ec.message() : std::string()));
  require_no_shards(options.output_dir);

  SplitWriter train(options.output_dir, "train", summary.vocab_size, summary.tokenizer,
                    options.shard_tokens);
  std::optional<SplitWriter> val;
  if (options.val_fraction > 0) {
    val.emplace(options.output_dir, "val", summary.vocab_size, summary.tokenizer,
                options.shard_tokens);
  }
  SplitWriter* val_writer = val ? &*val : nullptr;
  try {
    if (options.format == ImportFormat::kText) {
      import_text(options, train, val_writer, *tokenizer);
    } else {
      import_token_files(options, token_files, train, val_writer);
    }
    train.finish();
    if (val) val->finish();
    BRAID_REQUIRE(train.summary().tokens > 0, "the inputs give no training tokens ("
                  << train.summary().documents << " train and "
                  << (val ? val->summary().documents : 0) << " val documents)");
  } catch (...) {
    // Leave no partial dataset behind.
    std::error_code ignored;
    for (const auto& f : train.summary().files) fs::remove(f, ignored);
    if (val) for (const auto& f : val->summary().files) fs::remove(f, ignored);
    throw;
  }
  summary.train = train.summary();
  if (val) summary.val = val->summary();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

void print_import_summary(std::ostream& os, const ImportSummary& summary) {
  const auto split_line = [&](const char* name, const SplitSummary& s) {
    os << "  " << std::left << std::setw(6) << name << std::right << std::setw(10) << s.documents
       << " documents " << std::setw(13) << s.tokens << " tokens " << std::setw(4)
       << s.files.size() << " shard file(s)\n";
  };
  os << "braid-data: tokenizer " << summary.tokenizer << " (vocabulary " << summary.vocab_size
     << ")\n";
  split_line("train", summary.train);
  split_line("val", summary.val);
  for (const auto& f : summary.train.files) os << "  wrote " << f << "\n";
  for (const auto& f : summary.val.files) os << "  wrote " << f << "\n";
  const int64_t total = summary.train.tokens + summary.val.tokens;
  os << "  " << total << " tokens in " << std::fixed << std::setprecision(2) << summary.seconds
     << " s (" << std::setprecision(0) << (summary.seconds > 0 ? total / summary.seconds : 0)
     << " tokens/s)\n" << std::defaultfloat;
}

}  // namespace braid
