// HDF5 token shards: writer (braid-data) and reader (training). See dataset.h for the
// layout. The reader treats every file as untrusted user input: each property it relies
// on is checked once at open, and a violation becomes an InputError naming the file and
// what was expected, never an HDF5 error stack or a silent wrong answer.
#include "framework/dataset.h"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <system_error>

#include "framework/hdf5_util.h"
#include "framework/shard_header.h"
#include "ops/check.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

// Tokens per HDF5 chunk: 256 Ki tokens (512 KiB as uint16) fit HDF5's default 1 MiB chunk
// cache, so on-demand reads of a training window touch at most two cached chunks.
constexpr hsize_t kChunkTokens = hsize_t{1} << 18;
// Checksum blocks coincide with chunks: verifying a block reads what HDF5 reads anyway.
constexpr hsize_t kChecksumBlockTokens = kChunkTokens;

constexpr const char* kShardHint = " (expected a token shard written by braid-data)";

// --- writing -----------------------------------------------------------------------------

void write_int64_attribute(hid_t file, const char* name, int64_t value) {
  H5Handle space(BRAID_CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Handle attr(BRAID_CHECK_H5(H5Acreate2(file, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                          H5P_DEFAULT)),
                H5Aclose);
  BRAID_CHECK_H5(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value));
}

void write_string_attribute(hid_t file, const char* name, const std::string& value) {
  // Variable-length UTF-8: what h5py writes for str, so Python tools read it as str.
  H5Handle type(BRAID_CHECK_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
  BRAID_CHECK_H5(H5Tset_size(type.get(), H5T_VARIABLE));
  BRAID_CHECK_H5(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  H5Handle space(BRAID_CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Handle attr(BRAID_CHECK_H5(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT,
                                          H5P_DEFAULT)),
                H5Aclose);
  const char* text = value.c_str();
  BRAID_CHECK_H5(H5Awrite(attr.get(), type.get(), &text));
}

void write_shard_file(const std::string& path, std::span<const uint32_t> tokens,
                      std::span<const int64_t> doc_offsets, int64_t vocab_size,
                      const std::string& tokenizer_name) {
  H5Handle fapl(make_checksummed_fapl(), H5Pclose);
  H5Handle file(BRAID_CHECK_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get())),
                H5Fclose);
  std::vector<uint32_t> block_crcs;
  {
    const hsize_t dims[1] = {tokens.size()};
    const hsize_t chunk[1] = {std::min<hsize_t>(tokens.size(), kChunkTokens)};
    H5Handle space(BRAID_CHECK_H5(H5Screate_simple(1, dims, nullptr)), H5Sclose);
    H5Handle dcpl(BRAID_CHECK_H5(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    BRAID_CHECK_H5(H5Pset_chunk(dcpl.get(), 1, chunk));
    const bool narrow = vocab_size <= 65536;
    H5Handle dset(BRAID_CHECK_H5(H5Dcreate2(file.get(), "tokens",
                                            narrow ? H5T_STD_U16LE : H5T_STD_U32LE, space.get(),
                                            H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)),
                  H5Dclose);
    if (narrow) {
      // Narrow in memory ourselves (values were checked < vocab_size <= 65536) rather than
      // relying on HDF5's conversion, which would clip silently.
      std::vector<uint16_t> narrow_tokens(tokens.begin(), tokens.end());
      BRAID_CHECK_H5(H5Dwrite(dset.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                              narrow_tokens.data()));
      block_crcs = token_block_crcs(narrow_tokens.data(), int64_t(tokens.size()), 2, kChecksumBlockTokens);
    } else {
      BRAID_CHECK_H5(H5Dwrite(dset.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                              tokens.data()));
      block_crcs = token_block_crcs(tokens.data(), int64_t(tokens.size()), 4, kChecksumBlockTokens);
    }
  }
  {
    const hsize_t dims[1] = {block_crcs.size()};
    H5Handle space(BRAID_CHECK_H5(H5Screate_simple(1, dims, nullptr)), H5Sclose);
    H5Handle dset(BRAID_CHECK_H5(H5Dcreate2(file.get(), "tokens_crc32", H5T_STD_U32LE, space.get(),
                                            H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                  H5Dclose);
    BRAID_CHECK_H5(H5Dwrite(dset.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            block_crcs.data()));
  }
  {
    const hsize_t dims[1] = {doc_offsets.size()};
    H5Handle space(BRAID_CHECK_H5(H5Screate_simple(1, dims, nullptr)), H5Sclose);
    H5Handle dset(BRAID_CHECK_H5(H5Dcreate2(file.get(), "doc_offsets", H5T_STD_I64LE,
                                            space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                  H5Dclose);
    if (!doc_offsets.empty()) {
      BRAID_CHECK_H5(H5Dwrite(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                              doc_offsets.data()));
    }
  }
  write_int64_attribute(file.get(), "vocab_size", vocab_size);
  write_string_attribute(file.get(), "tokenizer", tokenizer_name);
  write_int64_attribute(file.get(), "token_count", static_cast<int64_t>(tokens.size()));
  write_int64_attribute(file.get(), "format_version", kTokenShardFormatVersion);
  write_int64_attribute(file.get(), "checksum_block_tokens", int64_t(kChecksumBlockTokens));
  BRAID_CHECK_H5(H5Fflush(file.get(), H5F_SCOPE_GLOBAL));
}

// --- reading -----------------------------------------------------------------------------

int64_t read_int64_attribute(hid_t file, const std::string& path, const char* name) {
  BRAID_REQUIRE(H5Aexists(file, name) > 0,
                "shard " << path << " has no attribute '" << name << "'" << kShardHint);
  H5Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  H5Handle type(attr.get() >= 0 ? H5Aget_type(attr.get()) : -1, H5Tclose);
  H5Handle space(attr.get() >= 0 ? H5Aget_space(attr.get()) : -1, H5Sclose);
  int64_t value = 0;
  BRAID_REQUIRE(type.get() >= 0 && space.get() >= 0 &&
                    H5Tget_class(type.get()) == H5T_INTEGER &&
                    H5Sget_simple_extent_npoints(space.get()) == 1 &&
                    H5Aread(attr.get(), H5T_NATIVE_INT64, &value) >= 0,
                "shard " << path << ": attribute '" << name << "' should be one integer"
                << kShardHint);
  return value;
}

std::string read_string_attribute(hid_t file, const std::string& path, const char* name) {
  BRAID_REQUIRE(H5Aexists(file, name) > 0,
                "shard " << path << " has no attribute '" << name << "'" << kShardHint);
  H5Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  H5Handle type(attr.get() >= 0 ? H5Aget_type(attr.get()) : -1, H5Tclose);
  BRAID_REQUIRE(type.get() >= 0 && H5Tget_class(type.get()) == H5T_STRING,
                "shard " << path << ": attribute '" << name << "' should be a string"
                << kShardHint);
  std::string value;
  bool ok = false;
  if (H5Tis_variable_str(type.get()) > 0) {
    char* text = nullptr;
    ok = H5Aread(attr.get(), type.get(), &text) >= 0 && text != nullptr;
    if (ok) value = text;
    if (text != nullptr) H5free_memory(text);
  } else {
    std::vector<char> buffer(H5Tget_size(type.get()) + 1, '\0');
    ok = H5Aread(attr.get(), type.get(), buffer.data()) >= 0;
    value = buffer.data();  // stops at the first NUL (null-terminated or null-padded)
  }
  BRAID_REQUIRE(ok, "shard " << path << ": cannot read string attribute '" << name << "'");
  return value;
}

// Shard files of `split` in `directory`, in stream order; gaps in the numbering are errors.
std::vector<std::string> list_shards(const std::string& directory, const std::string& split) {
  BRAID_REQUIRE(fs::is_directory(directory),
                "dataset directory " << directory << " not found (expected a directory of "
                "token shards written by braid-data)");
  const std::string prefix = split + "_";
  std::vector<std::pair<int64_t, std::string>> found;
  for (const auto& entry : fs::directory_iterator(directory)) {
    const std::string file = entry.path().filename().string();
    if (file.size() <= prefix.size() + 3 || file.rfind(prefix, 0) != 0 ||
        file.substr(file.size() - 3) != ".h5")
      continue;
    const std::string digits = file.substr(prefix.size(), file.size() - prefix.size() - 3);
    if (digits.size() > 12 || !std::all_of(digits.begin(), digits.end(),
                                           [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    found.emplace_back(std::stoll(digits), entry.path().string());
  }
  std::sort(found.begin(), found.end());
  BRAID_REQUIRE(!found.empty(), "dataset directory " << directory << " has no shards for split '"
                << split << "' (expected files " << split << "_000000.h5, " << split
                << "_000001.h5, ... written by braid-data)");
  std::vector<std::string> paths;
  for (size_t i = 0; i < found.size(); ++i) {
    BRAID_REQUIRE(found[i].first == int64_t(i),
                  "dataset directory " << directory << ": split '" << split << "' should have "
                  "shards numbered from 0 without gaps, but shard " << i << " is missing (next "
                  "file is " << found[i].second << ")");
    paths.push_back(found[i].second);
  }
  return paths;
}

}  // namespace

struct TokenDataset::Shard {
  std::string path;
  int64_t token_count = 0;
  size_t element_bytes = 0;          // 2 (uint16) or 4 (uint32) in the file
  std::vector<uint16_t> tokens_u16;  // [token_count] when resident and element_bytes == 2
  std::vector<uint32_t> tokens_u32;  // [token_count] when resident and element_bytes == 4
  H5Handle file, tokens;             // open when not resident
  // Format 2: crc32 of each block of block_tokens tokens; a block is verified once, when
  // the shard is loaded (resident) or when a read first touches it (on demand).
  int64_t block_tokens = 0;
  std::vector<uint32_t> block_crcs;
  mutable std::vector<bool> verified;
};

namespace {
// A data error found during training, on one rank and outside any collective check: the
// run must stop everywhere (the entry point aborts the job) instead of waiting for the
// others, so it is not an InputError (those are raised collectively).
[[noreturn]] void training_data_error(const std::string& msg) { throw Error("data", 1, msg); }

std::string block_error(const std::string& path, int64_t block, int64_t block_tokens, int64_t token_count) {
  const int64_t first = block * block_tokens;
  return "shard " + path + " is corrupt: tokens [" + std::to_string(first) + ", " +
         std::to_string(std::min(first + block_tokens, token_count)) +
         ") fail their crc32 check (the file changed after braid-data wrote it)";
}
}  // namespace

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens,
                       std::span<const int64_t> doc_offsets, int64_t vocab_size,
                       const std::string& tokenizer_name) {
  BRAID_REQUIRE(vocab_size > 0 && vocab_size <= kMaxVocabSize,
                "shard " << path << ": vocabulary size " << vocab_size
                << " should be in [1, " << kMaxVocabSize << "]");
  BRAID_CHECK(!tokens.empty(), "shard " << path << " would hold no tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    BRAID_REQUIRE(tokens[i] < uint64_t(vocab_size),
                  "token id " << tokens[i] << " at position " << i << " of shard " << path
                  << " is outside the vocabulary of " << vocab_size << " tokens");
  }
  for (size_t i = 0; i < doc_offsets.size(); ++i) {
    BRAID_CHECK(doc_offsets[i] >= 0 && doc_offsets[i] < int64_t(tokens.size()) &&
                    (i == 0 || doc_offsets[i] > doc_offsets[i - 1]),
                "document offsets of shard " << path << " should ascend inside the shard");
  }
  const std::string tmp_path = path + ".tmp";
  try {
    write_shard_file(tmp_path, tokens, doc_offsets, vocab_size, tokenizer_name);
    fs::rename(tmp_path, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp_path, ignored);
    throw;
  }
}

TokenDataset::TokenDataset(const std::string& directory, const std::string& split,
                           int64_t max_resident_bytes)
    : directory_(directory), split_(split) {
  const std::vector<std::string> paths = list_shards(directory, split);
  QuietHdf5Errors quiet;
  int64_t stored_bytes = 0;
  shard_starts_.push_back(0);
  for (const std::string& path : paths) {
    auto shard = std::make_unique<Shard>();
    shard->path = path;
    BRAID_REQUIRE(H5Fis_hdf5(path.c_str()) > 0, "file " << path << " is not an HDF5 file"
                  << kShardHint);
    shard->file = H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    BRAID_REQUIRE(shard->file.valid(), "cannot open HDF5 file " << path << " ("
                  << hdf5_error_detail() << "; truncated or corrupt?)" << kShardHint);
    const hid_t file = shard->file.get();

    // Gather the header, then validate it as a whole before anything is allocated.
    ShardHeader h;
    h.file_bytes = fs::file_size(path);
    h.format_version = read_int64_attribute(file, path, "format_version");
    BRAID_REQUIRE(h.format_version == 1 || h.format_version == 2,
                  "shard " << path << " has format_version " << h.format_version << "; this build "
                  "of Braid reads versions 1 and " << kTokenShardFormatVersion);
    h.vocab_size = read_int64_attribute(file, path, "vocab_size");
    h.tokenizer = read_string_attribute(file, path, "tokenizer");
    h.token_count = read_int64_attribute(file, path, "token_count");
    BRAID_REQUIRE(H5Lexists(file, "tokens", H5P_DEFAULT) > 0 &&
                      H5Lexists(file, "doc_offsets", H5P_DEFAULT) > 0,
                  "shard " << path << " lacks the dataset /tokens or /doc_offsets" << kShardHint);
    shard->tokens = H5Handle(H5Dopen2(file, "tokens", H5P_DEFAULT), H5Dclose);
    BRAID_REQUIRE(shard->tokens.valid(), "shard " << path << ": cannot open /tokens ("
                  << hdf5_error_detail() << ")" << kShardHint);
    {
      const hid_t d = shard->tokens.get();
      H5Handle type(H5Dget_type(d), H5Tclose), space(H5Dget_space(d), H5Sclose),
          dcpl(H5Dget_create_plist(d), H5Pclose);
      h.tokens_unsigned_integer = type.valid() && H5Tget_class(type.get()) == H5T_INTEGER &&
                                  H5Tget_sign(type.get()) == H5T_SGN_NONE;
      h.token_bytes = type.valid() ? H5Tget_size(type.get()) : 0;
      hsize_t dims[H5S_MAX_RANK] = {0};
      h.tokens_rank = space.valid() ? H5Sget_simple_extent_dims(space.get(), dims, nullptr) : -1;
      h.tokens_length = dims[0];
      h.tokens_filtered = !dcpl.valid() || H5Pget_nfilters(dcpl.get()) != 0;
      h.tokens_storage_bytes = H5Dget_storage_size(d);
    }
    H5Handle crcs;
    if (h.format_version >= 2) {
      h.checksum_block_tokens = read_int64_attribute(file, path, "checksum_block_tokens");
      BRAID_REQUIRE(H5Lexists(file, "tokens_crc32", H5P_DEFAULT) > 0,
                    "shard " << path << " (format 2) lacks the dataset /tokens_crc32" << kShardHint);
      crcs = H5Handle(H5Dopen2(file, "tokens_crc32", H5P_DEFAULT), H5Dclose);
      H5Handle type(crcs.valid() ? H5Dget_type(crcs.get()) : -1, H5Tclose);
      H5Handle space(crcs.valid() ? H5Dget_space(crcs.get()) : -1, H5Sclose);
      h.crcs_uint32 = type.valid() && H5Tget_class(type.get()) == H5T_INTEGER &&
                      H5Tget_sign(type.get()) == H5T_SGN_NONE && H5Tget_size(type.get()) == 4;
      hsize_t dims[H5S_MAX_RANK] = {0};
      h.crcs_rank = space.valid() ? H5Sget_simple_extent_dims(space.get(), dims, nullptr) : -1;
      h.crcs_length = dims[0];
    }
    validate_shard_header(h, path);
    if (crcs.valid()) {
      shard->block_tokens = h.checksum_block_tokens;
      shard->block_crcs.resize(h.crcs_length);
      BRAID_REQUIRE(H5Dread(crcs.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            shard->block_crcs.data()) >= 0,
                    "cannot read /tokens_crc32 of shard " << path << " (" << hdf5_error_detail()
                    << "; truncated or corrupt?)");
      shard->verified.assign(h.crcs_length, false);
    }
    shard->token_count = h.token_count;
    shard->element_bytes = h.token_bytes;
    if (shard_starts_.size() == 1) {
      vocab_size_ = h.vocab_size;
      tokenizer_ = h.tokenizer;
    }
    BRAID_REQUIRE(h.vocab_size == vocab_size_ && h.tokenizer == tokenizer_,
                  "shard " << path << " has vocabulary " << h.vocab_size << " (tokenizer '"
                  << h.tokenizer << "') but " << paths.front() << " has vocabulary "
                  << vocab_size_ << " (tokenizer '" << tokenizer_ << "'); all shards of a "
                  "split must share one tokenizer");
    stored_bytes += shard->token_count * int64_t(shard->element_bytes);
    shard_starts_.push_back(shard_starts_.back() + shard->token_count);
    shards_.push_back(std::move(shard));
  }
  num_tokens_ = shard_starts_.back();

  // Load small splits whole: training then never touches the file system.
  resident_ = stored_bytes < max_resident_bytes;
  if (!resident_) return;
  for (auto& shard : shards_) {
    herr_t status;
    const void* data;
    if (shard->element_bytes == 2) {
      shard->tokens_u16.resize(shard->token_count);
      status = H5Dread(shard->tokens.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       shard->tokens_u16.data());
      data = shard->tokens_u16.data();
    } else {
      shard->tokens_u32.resize(shard->token_count);
      status = H5Dread(shard->tokens.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       shard->tokens_u32.data());
      data = shard->tokens_u32.data();
    }
    BRAID_REQUIRE(status >= 0, "cannot read /tokens of shard " << shard->path << " ("
                  << hdf5_error_detail() << "; file truncated or corrupt?)");
    if (!shard->block_crcs.empty()) {
      const std::vector<uint32_t> crcs = token_block_crcs(data, shard->token_count,
                                                          shard->element_bytes, shard->block_tokens);
      for (size_t b = 0; b < crcs.size(); ++b)
        BRAID_REQUIRE(crcs[b] == shard->block_crcs[b],
                      block_error(shard->path, int64_t(b), shard->block_tokens, shard->token_count));
    }
    const auto check = [&](const auto& tokens) {
      auto bad = std::find_if(tokens.begin(), tokens.end(),
                              [&](uint32_t t) { return int64_t(t) >= vocab_size_; });
      BRAID_REQUIRE(bad == tokens.end(), "shard " << shard->path << " holds token id "
                    << (bad == tokens.end() ? 0 : *bad) << " at position "
                    << (bad - tokens.begin()) << ", outside its vocabulary of " << vocab_size_);
    };
    if (shard->element_bytes == 2) check(shard->tokens_u16);
    else check(shard->tokens_u32);
    shard->tokens.reset();
    shard->file.reset();
  }
}

TokenDataset::~TokenDataset() = default;

const std::string& TokenDataset::shard_path(int64_t shard) const {
  BRAID_CHECK(shard >= 0 && shard < num_shards(), "shard " << shard << " of " << num_shards());
  return shards_[shard]->path;
}

void TokenDataset::verify_blocks(const Shard& shard, int64_t local, int64_t count) const {
  if (shard.block_crcs.empty() || count <= 0) return;
  std::vector<uint8_t> block;
  for (int64_t b = local / shard.block_tokens; b <= (local + count - 1) / shard.block_tokens; ++b) {
    if (shard.verified[size_t(b)]) continue;
    const int64_t first = b * shard.block_tokens;
    const hsize_t offset[1] = {hsize_t(first)};
    const hsize_t extent[1] = {hsize_t(std::min(shard.block_tokens, shard.token_count - first))};
    block.resize(size_t(extent[0]) * shard.element_bytes);
    H5Handle file_space(BRAID_CHECK_H5(H5Dget_space(shard.tokens.get())), H5Sclose);
    BRAID_CHECK_H5(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset, nullptr, extent, nullptr));
    H5Handle mem_space(BRAID_CHECK_H5(H5Screate_simple(1, extent, nullptr)), H5Sclose);
    if (H5Dread(shard.tokens.get(), shard.element_bytes == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32,
                mem_space.get(), file_space.get(), H5P_DEFAULT, block.data()) < 0)
      training_data_error("cannot read tokens of shard " + shard.path + " (" + hdf5_error_detail() +
                          "; truncated or corrupt?)");
    if (token_block_crcs(block.data(), int64_t(extent[0]), shard.element_bytes, shard.block_tokens)[0] !=
        shard.block_crcs[size_t(b)])
      training_data_error(block_error(shard.path, b, shard.block_tokens, shard.token_count));
    shard.verified[size_t(b)] = true;
  }
}

void TokenDataset::read(int64_t start, int64_t count, int32_t* out) const {
  BRAID_CHECK(start >= 0 && count >= 0 && start + count <= num_tokens_,
              "token range [" << start << ", " << start + count << ") outside the "
              << num_tokens_ << " tokens of split '" << split_ << "' in " << directory_);
  // First shard whose range contains `start`: the last shard start <= start.
  size_t s = std::upper_bound(shard_starts_.begin(), shard_starts_.end(), start) -
             shard_starts_.begin() - 1;
  while (count > 0) {
    const Shard& shard = *shards_[s];
    const int64_t local = start - shard_starts_[s];
    const int64_t n = std::min(count, shard.token_count - local);
    if (n <= 0) {  // empty shard
      ++s;
      continue;
    }
    if (resident_) {
      if (shard.element_bytes == 2) {
        std::copy_n(shard.tokens_u16.begin() + local, n, out);
      } else {
        std::copy_n(shard.tokens_u32.begin() + local, n, out);
      }
    } else {
      verify_blocks(shard, local, n);
      const hsize_t offset[1] = {hsize_t(local)}, extent[1] = {hsize_t(n)};
      H5Handle file_space(BRAID_CHECK_H5(H5Dget_space(shard.tokens.get())), H5Sclose);
      BRAID_CHECK_H5(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset, nullptr,
                                         extent, nullptr));
      H5Handle mem_space(BRAID_CHECK_H5(H5Screate_simple(1, extent, nullptr)), H5Sclose);
      BRAID_CHECK_H5(H5Dread(shard.tokens.get(), H5T_NATIVE_INT32, mem_space.get(),
                             file_space.get(), H5P_DEFAULT, out));
      for (int64_t i = 0; i < n; ++i) {
        if (out[i] < 0 || out[i] >= vocab_size_)
          training_data_error("shard " + shard.path + " holds token id " + std::to_string(uint32_t(out[i])) +
                              " at position " + std::to_string(local + i) +
                              ", outside its vocabulary of " + std::to_string(vocab_size_));
      }
    }
    out += n;
    start += n;
    count -= n;
    ++s;
  }
}

}  // namespace braid
