// Dataset import: turns text files (or llm.c / nanoGPT token files) into the HDF5 token
// shards of dataset.h. The logic lives here, not in launch/braid_data.cpp, so that tests
// drive it directly.
//
// Text: each input file is split into documents (at lines equal to the separator, or one
// document per file); each document is tokenized and followed by the EOT token. Every
// k-th document (k = round(1 / val_fraction), the documents numbered across all inputs
// from 0; documents 0, k, 2k, ...) goes to the val split, so val is spread through the
// corpus and holds at least one document when val_fraction > 0.
// llmc / raw: token files are copied as they are. A file whose name contains "val" goes
// to val, the others to train; without any val file, the last val_fraction of the train
// tokens is held out. A document starts at each EOT token (llm.c puts EOT before every
// document) and at the start of each file.
//
// The output directory must not already hold shards; an import that fails removes the
// shards it wrote, so a directory holds either a whole dataset or none.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace braid {

enum class ImportFormat { kText, kLlmc, kRaw };

// "text", "llmc" or "raw"; InputError otherwise.
ImportFormat parse_import_format(const std::string& name);

struct ImportOptions {
  std::vector<std::string> inputs;
  std::string output_dir;
  ImportFormat format = ImportFormat::kText;
  std::string tokenizer = "gpt2";  // text: the tokenizer; llmc/raw: the label stored
  std::string vocab_dir = "vocab";
  double val_fraction = 0.05;      // in [0, 0.5]
  std::optional<std::string> doc_separator;  // text: a line equal to it ends a document
  int64_t vocab_size = 50257;      // llmc/raw only (text takes the tokenizer's)
  int64_t shard_tokens = 100'000'000;
};

struct SplitSummary {
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<std::string> files;
};

struct ImportSummary {
  std::string tokenizer;
  int64_t vocab_size = 0;
  SplitSummary train;
  SplitSummary val;
  double seconds = 0;
};

// Runs the import. InputError for a bad option, a missing or malformed input, or an
// output directory that already holds shards.
ImportSummary import_dataset(const ImportOptions& options);

void print_import_summary(std::ostream& os, const ImportSummary& summary);

// Token count of an llm.c .bin file (header: 256 x int32, magic 20240520, version 1 =
// uint16 tokens, [2] = token count; then the tokens), validating header and file size.
int64_t llmc_token_count(const std::string& path);

}  // namespace braid
