// Token shards as untrusted files: flipped bits in the token data, token ids beyond the
// declared vocabulary, forged extents and vocabularies, truncated files. At open (the
// collective check) each is an InputError naming the shard; found later, during training,
// by an on-demand read, it is a braid::Error that stops the job (never a wrong token).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "../test_util.h"
#include "framework/dataset.h"
#include "ops/check.h"

namespace fs = std::filesystem;

namespace braid {
namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("braid_test_integrity_" + std::to_string(::getpid()));
  TempDir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Runs fn, which must throw exactly E (InputError, or an Error that is not an InputError)
// with every part in its message.
template <bool kInput>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error (expected one naming '" << parts.front() << "')";
  } catch (const Error& e) {
    EXPECT_EQ(dynamic_cast<const InputError*>(&e) != nullptr, kInput) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << e.what() << "' lacks '" << p << "'";
  }
}

const std::vector<int64_t> kDocs = {0};

std::vector<uint32_t> tokens_below(size_t n, uint32_t vocab) {
  std::mt19937 rng(11);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = rng() % vocab;
  return t;
}

// File offset of the first chunk of /tokens (where the token bytes are).
uint64_t token_data_offset(const std::string& path) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t dset = H5Dopen2(file, "tokens", H5P_DEFAULT);
  hsize_t offset[1] = {0};
  unsigned mask = 0;
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  hid_t space = H5Dget_space(dset);
  EXPECT_GE(H5Dget_chunk_info(dset, space, 0, offset, &mask, &addr, &size), 0);
  H5Sclose(space);
  H5Dclose(dset);
  H5Fclose(file);
  return uint64_t(addr);
}

void flip_byte(const std::string& path, uint64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(at));
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x01);
  f.seekp(std::streamoff(at));
  f.write(&c, 1);
}

void read_everything(const TokenDataset& ds) {
  std::vector<int32_t> out(size_t(ds.num_tokens()));
  ds.read(0, ds.num_tokens(), out.data());
}

TEST(ShardIntegrity, AFlippedTokenBitIsNamedAtOpenAndOnDemand) {
  TempDir dir;
  const std::string shard = dir.file("train_000000.h5");
  write_token_shard(shard, tokens_below(5000, 200), kDocs, 257, "byte");
  EXPECT_NO_THROW(read_everything(TokenDataset(dir.path.string(), "train")));
  flip_byte(shard, token_data_offset(shard) + 2 * 1234);  // token 1234: 2 bytes per token
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); },
                     {shard, "tokens [0, 5000) fail their crc32 check"});
  // Streaming (not resident): opening succeeds, the first read of the block stops the job.
  TokenDataset streaming(dir.path.string(), "train", /*max_resident_bytes=*/0);
  std::vector<int32_t> out(10);
  expect_error<false>([&] { streaming.read(4000, 10, out.data()); }, {shard, "fail their crc32 check"});
}

TEST(ShardIntegrity, TokenIdsBeyondTheDeclaredVocabularyAreErrorsNotIndices) {
  TempDir dir;
  const std::string shard = dir.file("train_000000.h5");
  std::vector<uint32_t> tokens = tokens_below(300, 100);
  tokens[77] = 250;
  write_token_shard(shard, tokens, kDocs, 257, "byte");
  test::set_int64_attribute(shard, "vocab_size", 100);  // a forged header: ids up to 250 inside
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); },
                     {shard, "token id 250 at position 77", "vocabulary of 100"});
  TokenDataset streaming(dir.path.string(), "train", 0);
  expect_error<false>([&] { read_everything(streaming); }, {shard, "token id 250 at position 77"});
}

TEST(ShardIntegrity, ForgedHeadersAreRefusedBeforeAllocation) {
  TempDir dir;
  const std::string shard = dir.file("train_000000.h5");
  write_token_shard(shard, tokens_below(300, 257), kDocs, 257, "byte");
  test::set_int64_attribute(shard, "vocab_size", int64_t{1} << 40);
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); }, {shard, "vocab_size 1099511627776"});
  fs::remove(shard);

  // /tokens claims 2^28 tokens (512 MiB, which the split would load whole) and stores none.
  {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t file = H5Fcreate(shard.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    const hsize_t dims[1] = {hsize_t{1} << 28}, chunk[1] = {1 << 18}, none[1] = {0};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    hid_t sp = H5Screate_simple(1, dims, nullptr);
    H5Dclose(H5Dcreate2(file, "tokens", H5T_STD_U16LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    hid_t sp0 = H5Screate_simple(1, none, nullptr);
    H5Dclose(H5Dcreate2(file, "doc_offsets", H5T_STD_I64LE, sp0, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hid_t scalar = H5Screate(H5S_SCALAR);
    const std::pair<const char*, int64_t> ints[] = {
        {"vocab_size", 257}, {"token_count", int64_t{1} << 28}, {"format_version", 1}};
    for (auto [name, v] : ints) {
      hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(a, H5T_NATIVE_INT64, &v);
      H5Aclose(a);
    }
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 4);
    hid_t a = H5Acreate2(file, "tokenizer", st, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, "byte");
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(scalar);
    H5Sclose(sp0);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Pclose(fapl);
    H5Fclose(file);
  }
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); },
                     {shard, "claims 268435456 tokens", "stores only 0 bytes"});
}

TEST(ShardIntegrity, TruncatedAndDamagedFilesAreNamed) {
  TempDir dir;
  const std::string shard = dir.file("train_000000.h5");
  write_token_shard(shard, tokens_below(5000, 257), kDocs, 257, "byte");
  const uint64_t size = fs::file_size(shard);
  fs::resize_file(shard, size / 2);
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); }, {shard, "truncated"});
  fs::remove(shard);
  // A flipped bit in the superblock (after its signature): HDF5's metadata checksum.
  write_token_shard(shard, tokens_below(5000, 257), kDocs, 257, "byte");
  flip_byte(shard, 12);
  expect_error<true>([&] { TokenDataset(dir.path.string(), "train"); }, {shard});
}

}  // namespace
}  // namespace braid
