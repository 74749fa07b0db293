// Dataset tests: HDF5 token shards written and read back exactly (uint16 and uint32
// storage, resident and on-demand reading, reads across shard boundaries), every kind of
// bad input reported as an InputError naming the file, the data loader's determinism
// (same seed same order, each sample once per epoch, windows equal to the token stream,
// exact resume from a global index), and the text / llm.c / raw importers.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../test_util.h"
#include "framework/data_loader.h"
#include "framework/dataset.h"
#include "framework/text_import.h"
#include "ops/check.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

// A fresh directory, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/braid_test_dataset_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::vector<uint32_t> random_tokens(size_t n, uint32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> id(0, vocab - 1);
  std::vector<uint32_t> tokens(n);
  for (auto& t : tokens) t = id(rng);
  return tokens;
}

// Writes `tokens` as shards of the given sizes; returns nothing, files are split_NNNNNN.h5.
void write_split(const TempDir& dir, const std::string& split, const std::vector<uint32_t>& tokens,
                 const std::vector<size_t>& shard_sizes, int64_t vocab,
                 const std::string& tokenizer = "gpt2") {
  size_t start = 0;
  for (size_t s = 0; s < shard_sizes.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "%s_%06zu.h5", split.c_str(), s);
    const std::vector<int64_t> doc_offsets = {0};
    write_token_shard(dir.file(name), std::span(tokens).subspan(start, shard_sizes[s]),
                      doc_offsets, vocab, tokenizer);
    start += shard_sizes[s];
  }
  ASSERT_EQ(start, tokens.size());
}

std::vector<uint32_t> read_all(const TokenDataset& ds) {
  std::vector<int32_t> out(ds.num_tokens());
  ds.read(0, ds.num_tokens(), out.data());
  return std::vector<uint32_t>(out.begin(), out.end());
}

// Expects `fn` to throw InputError whose message contains every string of `parts`.
template <typename Fn>
void expect_input_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const auto& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << msg;
  }
}

size_t stored_token_bytes(const std::string& path) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t dset = H5Dopen2(file, "tokens", H5P_DEFAULT);
  hid_t type = H5Dget_type(dset);
  const size_t bytes = H5Tget_size(type);
  H5Tclose(type);
  H5Dclose(dset);
  H5Fclose(file);
  return bytes;
}

TEST(TokenShards, Uint16RoundTripAcrossShards) {
  TempDir dir;
  const std::vector<uint32_t> tokens = random_tokens(3501, 50257, 1);
  write_split(dir, "train", tokens, {1000, 1, 2500}, 50257);
  EXPECT_EQ(stored_token_bytes(dir.file("train_000000.h5")), 2u);
  EXPECT_FALSE(fs::exists(dir.file("train_000000.h5.tmp")));
  for (int64_t max_resident_bytes : {int64_t{1} << 30, int64_t{0}}) {
    TokenDataset ds(dir.path(), "train", max_resident_bytes);
    EXPECT_EQ(ds.resident(), max_resident_bytes > 0);
    EXPECT_EQ(ds.vocab_size(), 50257);
    EXPECT_EQ(ds.tokenizer(), "gpt2");
    EXPECT_EQ(ds.num_tokens(), 3501);
    EXPECT_EQ(ds.num_shards(), 3);
    EXPECT_EQ(read_all(ds), tokens);
    // A read spanning all three shards, and reads ending/starting at boundaries.
    for (auto [start, count] : {std::pair<int64_t, int64_t>{995, 10}, {999, 2}, {1000, 1},
                                {1001, 2500}, {0, 1}, {3500, 1}}) {
      std::vector<int32_t> out(count);
      ds.read(start, count, out.data());
      for (int64_t i = 0; i < count; ++i) ASSERT_EQ(uint32_t(out[i]), tokens[start + i]) << start;
    }
  }
}

TEST(TokenShards, Uint32ForLargeVocabularies) {
  TempDir dir;
  const std::vector<uint32_t> tokens = random_tokens(777, 100000, 2);
  write_split(dir, "val", tokens, {500, 277}, 100000, "big");
  EXPECT_EQ(stored_token_bytes(dir.file("val_000000.h5")), 4u);
  for (int64_t max_resident_bytes : {int64_t{1} << 30, int64_t{0}}) {
    TokenDataset ds(dir.path(), "val", max_resident_bytes);
    EXPECT_EQ(ds.vocab_size(), 100000);
    EXPECT_EQ(ds.tokenizer(), "big");
    EXPECT_EQ(read_all(ds), tokens);
  }
}

TEST(TokenShards, AttributesAndDocumentOffsets) {
  TempDir dir;
  const std::vector<uint32_t> tokens = random_tokens(10, 257, 3);
  const std::vector<int64_t> doc_offsets = {0, 4, 9};
  const std::string path = dir.file("train_000000.h5");
  write_token_shard(path, tokens, doc_offsets, 257, "byte");
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  for (auto [name, expected] : {std::pair<const char*, int64_t>{"vocab_size", 257},
                                {"token_count", 10}, {"format_version", 2},
                                {"checksum_block_tokens", 1 << 18}}) {
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    int64_t value = -1;
    H5Aread(attr, H5T_NATIVE_INT64, &value);
    H5Aclose(attr);
    EXPECT_EQ(value, expected) << name;
  }
  hid_t dset = H5Dopen2(file, "doc_offsets", H5P_DEFAULT);
  std::vector<int64_t> offsets(3, -1);
  H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data());
  H5Dclose(dset);
  H5Fclose(file);
  EXPECT_EQ(offsets, doc_offsets);
}

TEST(TokenShards, WriterRejectsOutOfVocabularyTokens) {
  TempDir dir;
  const std::vector<uint32_t> tokens = {1, 2, 257};
  const std::string path = dir.file("train_000000.h5");
  expect_input_error([&] { write_token_shard(path, tokens, {}, 257, "byte"); }, {path, "257"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(TokenShards, BadInputsAreInputErrorsNamingTheFile) {
  TempDir dir;
  const std::string missing = dir.file("no_such_dir");
  expect_input_error([&] { TokenDataset(missing, "train"); }, {missing});
  expect_input_error([&] { TokenDataset(dir.path(), "train"); }, {dir.path(), "train_000000.h5"});

  // Not an HDF5 file.
  const std::string garbage = dir.file("train_000000.h5");
  std::ofstream(garbage) << "this is not HDF5\n";
  expect_input_error([&] { TokenDataset(dir.path(), "train"); }, {garbage, "not an HDF5 file"});
  fs::remove(garbage);

  // Shards that disagree on the vocabulary.
  write_split(dir, "train", random_tokens(100, 257, 4), {100}, 257, "byte");
  const std::vector<uint32_t> more = random_tokens(100, 50257, 5);
  write_token_shard(dir.file("train_000001.h5"), more, {}, 50257, "gpt2");
  expect_input_error([&] { TokenDataset(dir.path(), "train"); },
                     {dir.file("train_000001.h5"), "50257", "257"});
  fs::remove(dir.file("train_000001.h5"));

  // A gap in the numbering.
  write_token_shard(dir.file("train_000002.h5"), random_tokens(5, 257, 6), {}, 257, "byte");
  expect_input_error([&] { TokenDataset(dir.path(), "train"); },
                     {"shard 1 is missing", dir.file("train_000002.h5")});
  fs::remove(dir.file("train_000002.h5"));

  // An unknown format version, then a missing attribute.
  const std::string shard = dir.file("train_000000.h5");
  test::set_int64_attribute(shard, "format_version", 3);
  expect_input_error([&] { TokenDataset(dir.path(), "train"); }, {shard, "format_version 3"});
  test::set_int64_attribute(shard, "format_version", 1);  // version 1: the same shard without checksums
  EXPECT_NO_THROW(TokenDataset(dir.path(), "train"));
  test::set_int64_attribute(shard, "format_version", 2);
  EXPECT_NO_THROW(TokenDataset(dir.path(), "train"));
  hid_t file = H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Adelete(file, "tokenizer");
  H5Fclose(file);
  expect_input_error([&] { TokenDataset(dir.path(), "train"); }, {shard, "'tokenizer'"});
}

// --- DataLoader ----------------------------------------------------------------------------

// A split whose tokens are their own positions (mod vocab), spread over uneven shards.
struct CountingDataset {
  TempDir dir;
  std::vector<uint32_t> tokens;
  CountingDataset(size_t n, std::vector<size_t> shard_sizes) : tokens(n) {
    std::iota(tokens.begin(), tokens.end(), 0u);
    write_split(dir, "train", tokens, shard_sizes, 100000, "count");
  }
};

TEST(DataLoader, EachSampleOncePerEpochAndWindowsMatchTheStream) {
  constexpr int T = 8;
  CountingDataset data(T * 50 + 5, {101, 200, 104});
  TokenDataset ds(data.dir.path(), "train");
  DataLoader loader(ds, T, /*seed=*/42);
  ASSERT_EQ(loader.num_samples(), (ds.num_tokens() - 1) / T);
  const int64_t n = loader.num_samples();
  std::vector<int32_t> inputs(T), targets(T);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    for (int64_t p = 0; p < n; ++p) {
      const int64_t g = epoch * n + p;
      loader.get(g, inputs.data(), targets.data());
      const int64_t sample = loader.sample_of(g);
      seen.insert(sample);
      for (int t = 0; t < T; ++t) {
        ASSERT_EQ(uint32_t(inputs[t]), data.tokens[sample * T + t]);
        ASSERT_EQ(uint32_t(targets[t]), data.tokens[sample * T + t + 1]);
      }
    }
    EXPECT_EQ(int64_t(seen.size()), n) << "epoch " << epoch;
  }
}

TEST(DataLoader, OrderIsAPureFunctionOfSeedAndGlobalIndex) {
  constexpr int T = 4;
  CountingDataset data(T * 200 + 1, {333, 468});
  TokenDataset ds(data.dir.path(), "train");
  DataLoader a(ds, T, 7), b(ds, T, 7), other(ds, T, 8);
  const int64_t n = a.num_samples();
  std::vector<int64_t> order_a, order_b, order_other;
  for (int64_t g = 0; g < 3 * n; ++g) {
    order_a.push_back(a.sample_of(g));
    order_other.push_back(other.sample_of(g));
  }
  // b visits the indices backwards (cache misses each epoch change) and still agrees.
  for (int64_t g = 3 * n - 1; g >= 0; --g) order_b.insert(order_b.begin(), b.sample_of(g));
  EXPECT_EQ(order_a, order_b);
  EXPECT_NE(order_a, order_other);
  // Epochs are reshuffled, and the order is not the identity.
  EXPECT_FALSE(std::equal(order_a.begin(), order_a.begin() + n, order_a.begin() + n));
  std::vector<int64_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_FALSE(std::equal(identity.begin(), identity.end(), order_a.begin()));

  // Resume from a recorded global index with 3 data-parallel ranks: rank r of step s reads
  // g = (s * 3 + r) * 2 + row, exactly the samples the single loader gave.
  constexpr int64_t kDp = 3, kRows = 2;
  for (int64_t r = 0; r < kDp; ++r) {
    DataLoader resumed(ds, T, 7);
    for (int64_t s = 5; s < 40; ++s)
      for (int64_t row = 0; row < kRows; ++row) {
        const int64_t g = (s * kDp + r) * kRows + row;
        ASSERT_EQ(resumed.sample_of(g), order_a[g % (3 * n)]);
      }
  }
}

TEST(DataLoader, EpochPermutationIsAPermutation) {
  for (int64_t n : {1, 2, 3, 1000}) {
    std::vector<int64_t> perm = epoch_permutation(n, 123, 4);
    EXPECT_EQ(perm, epoch_permutation(n, 123, 4));
    std::sort(perm.begin(), perm.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(perm[i], i);
  }
}

TEST(DataLoader, TooFewTokensAndVocabularyMismatchAreInputErrors) {
  TempDir dir;
  write_split(dir, "val", random_tokens(8, 50257, 9), {8}, 50257, "gpt2");
  TokenDataset ds(dir.path(), "val");
  expect_input_error([&] { DataLoader(ds, 8, 1); }, {"'val'", dir.path(), "at least 9 tokens"});
  DataLoader loader(ds, 7, 1);
  EXPECT_EQ(loader.num_samples(), 1);
  EXPECT_NO_THROW(loader.check_vocab(50304));
  expect_input_error([&] { loader.check_vocab(1000); },
                     {"dataset " + dir.path() + " has vocabulary 50257 (tokenizer gpt2) but the "
                      "model's vocabulary is 1000"});
}

// --- Import --------------------------------------------------------------------------------

void write_llmc_file(const std::string& path, const std::vector<uint16_t>& tokens,
                     int32_t magic = 20240520, int32_t version = 1) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 2));
}

std::vector<uint16_t> counting_u16(size_t n, uint16_t first) {
  std::vector<uint16_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(Import, LlmcFilesWithAndWithoutAValFile) {
  TempDir in;
  const std::vector<uint16_t> train_tokens = counting_u16(1000, 7);
  write_llmc_file(in.file("shard_train_000001.bin"), train_tokens);
  EXPECT_EQ(llmc_token_count(in.file("shard_train_000001.bin")), 1000);
  {
    // No val file: the last 10% of the tokens are held out.
    TempDir out;
    ImportOptions opt;
    opt.inputs = {in.file("shard_train_000001.bin")};
    opt.output_dir = out.path();
    opt.format = ImportFormat::kLlmc;
    opt.val_fraction = 0.1;
    opt.shard_tokens = 300;
    const ImportSummary summary = import_dataset(opt);
    EXPECT_EQ(summary.train.tokens, 900);
    EXPECT_EQ(summary.val.tokens, 100);
    EXPECT_EQ(summary.train.files.size(), 3u);
    TokenDataset train(out.path(), "train"), val(out.path(), "val");
    EXPECT_EQ(train.tokenizer(), "gpt2");
    EXPECT_EQ(train.vocab_size(), 50257);
    std::vector<uint32_t> all = read_all(train), tail = read_all(val);
    all.insert(all.end(), tail.begin(), tail.end());
    EXPECT_EQ(all, std::vector<uint32_t>(train_tokens.begin(), train_tokens.end()));
  }
  {
    // A file named *val* becomes the val split.
    const std::vector<uint16_t> val_tokens = counting_u16(50, 3000);
    write_llmc_file(in.file("shard_val_000000.bin"), val_tokens);
    TempDir out;
    ImportOptions opt;
    opt.inputs = {in.file("shard_val_000000.bin"), in.file("shard_train_000001.bin")};
    opt.output_dir = out.path();
    opt.format = ImportFormat::kLlmc;
    import_dataset(opt);
    TokenDataset train(out.path(), "train"), val(out.path(), "val");
    EXPECT_EQ(read_all(train), std::vector<uint32_t>(train_tokens.begin(), train_tokens.end()));
    EXPECT_EQ(read_all(val), std::vector<uint32_t>(val_tokens.begin(), val_tokens.end()));
    // A second import into the same directory is refused.
    expect_input_error([&] { import_dataset(opt); }, {out.path(), "already holds shards"});
  }
}

TEST(Import, MalformedTokenFilesAreInputErrors) {
  TempDir in, out;
  ImportOptions opt;
  opt.output_dir = out.path();
  opt.format = ImportFormat::kLlmc;
  const std::string bad_magic = in.file("bad_magic.bin");
  write_llmc_file(bad_magic, counting_u16(10, 0), 1234);
  opt.inputs = {bad_magic};
  expect_input_error([&] { import_dataset(opt); }, {bad_magic, "magic", "20240520"});
  const std::string bad_version = in.file("bad_version.bin");
  write_llmc_file(bad_version, counting_u16(10, 0), 20240520, 2);
  opt.inputs = {bad_version};
  expect_input_error([&] { import_dataset(opt); }, {bad_version, "version 2"});
  const std::string truncated = in.file("truncated.bin");
  write_llmc_file(truncated, counting_u16(10, 0));
  fs::resize_file(truncated, 1024 + 2 * 9);
  opt.inputs = {truncated};
  expect_input_error([&] { import_dataset(opt); }, {truncated, "10 tokens"});

  // raw: a token outside --vocab-size; nothing is left behind.
  const std::string raw = in.file("data.bin");
  const std::vector<uint16_t> tokens = {1, 2, 300, 4};
  std::ofstream(raw, std::ios::binary).write(reinterpret_cast<const char*>(tokens.data()), 8);
  opt.inputs = {raw};
  opt.format = ImportFormat::kRaw;
  opt.vocab_size = 257;
  opt.val_fraction = 0;
  expect_input_error([&] { import_dataset(opt); }, {raw, "300", "--vocab-size"});
  EXPECT_TRUE(fs::is_empty(out.path()));
  opt.vocab_size = 301;
  EXPECT_EQ(import_dataset(opt).train.tokens, 4);
}

TEST(Import, TextDocumentsAreSplitEveryKthToVal) {
  TempDir in, out;
  // Six documents separated by "%" lines (fortune format), one of them blank.
  std::ofstream(in.file("fortunes")) << "one\n%\ntwo\nlines\n%\n\n%\nthree\n%\nfour\n%\nfive\r\n"
                                        "%\r\nsix";
  ImportOptions opt;
  opt.inputs = {in.file("fortunes")};
  opt.output_dir = out.path();
  opt.tokenizer = "byte";
  opt.doc_separator = "%";
  opt.val_fraction = 0.25;  // every 4th document: 0 and 4
  const ImportSummary summary = import_dataset(opt);
  EXPECT_EQ(summary.train.documents, 4);
  EXPECT_EQ(summary.val.documents, 2);
  const auto stream = [](const std::vector<std::string>& docs) {
    std::vector<uint32_t> t;
    for (const auto& d : docs) {
      t.insert(t.end(), d.begin(), d.end());
      t.push_back(256);
    }
    return t;
  };
  TokenDataset train(out.path(), "train"), val(out.path(), "val");
  EXPECT_EQ(train.tokenizer(), "byte");
  EXPECT_EQ(train.vocab_size(), 257);
  EXPECT_EQ(read_all(train), stream({"two\nlines\n", "three\n", "four\n", "six"}));
  EXPECT_EQ(read_all(val), stream({"one\n", "five\r\n"}));
}

}  // namespace
}  // namespace braid
