// HDF5 token shards: writer (braid-data) and reader (training). See dataset.h for the
// layout. The reader treats every file as untrusted user input: each property it relies
// on is checked once at open, and a violation becomes an InputError naming the file and
// what was expected, never an HDF5 error stack or a silent wrong answer.
#include "framework/dataset.h"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>

#include "ops/check.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

// Tokens per HDF5 chunk: 256 Ki tokens (512 KiB as uint16) fit HDF5's default 1 MiB chunk
// cache, so on-demand reads of a training window touch at most two cached chunks.
constexpr hsize_t kChunkTokens = hsize_t{1} << 18;

// Owner of one HDF5 identifier; closes it with the matching H5?close.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(H5Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      closer_ = other.closer_;
      other.id_ = -1;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);  // errors while closing are not actionable
    id_ = -1;
  }
  hid_t get() const { return id_; }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// HDF5 prints its error stack to stderr on every failed call. While probing user files
// the failures are expected and reported by us, so printing is off inside this scope (and
// restored after, for other code in the process).
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

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
  H5Handle file(BRAID_CHECK_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)),
                H5Fclose);
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
    } else {
      BRAID_CHECK_H5(H5Dwrite(dset.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                              tokens.data()));
    }
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
};

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens,
                       std::span<const int64_t> doc_offsets, int64_t vocab_size,
                       const std::string& tokenizer_name) {
  BRAID_REQUIRE(vocab_size > 0 && vocab_size <= std::numeric_limits<int32_t>::max(),
                "shard " << path << ": vocabulary size " << vocab_size
                << " should be in [1, 2^31)");
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
    BRAID_REQUIRE(shard->file.get() >= 0, "cannot open HDF5 file " << path << kShardHint);
    const hid_t file = shard->file.get();

    const int64_t version = read_int64_attribute(file, path, "format_version");
    BRAID_REQUIRE(version == kTokenShardFormatVersion,
                  "shard " << path << " has format_version " << version << "; this build of "
                  "Braid reads version " << kTokenShardFormatVersion);
    const int64_t vocab_size = read_int64_attribute(file, path, "vocab_size");
    const std::string tokenizer = read_string_attribute(file, path, "tokenizer");
    shard->token_count = read_int64_attribute(file, path, "token_count");
    BRAID_REQUIRE(vocab_size > 0 && vocab_size <= std::numeric_limits<int32_t>::max(),
                  "shard " << path << " has vocab_size " << vocab_size
                  << "; expected a value in [1, 2^31)");
    BRAID_REQUIRE(shard->token_count >= 0, "shard " << path << " has token_count "
                  << shard->token_count << "; expected >= 0");
    if (shard_starts_.size() == 1) {
      vocab_size_ = vocab_size;
      tokenizer_ = tokenizer;
    }
    BRAID_REQUIRE(vocab_size == vocab_size_ && tokenizer == tokenizer_,
                  "shard " << path << " has vocabulary " << vocab_size << " (tokenizer '"
                  << tokenizer << "') but " << paths.front() << " has vocabulary "
                  << vocab_size_ << " (tokenizer '" << tokenizer_ << "'); all shards of a "
                  "split must share one tokenizer");

    BRAID_REQUIRE(H5Lexists(file, "tokens", H5P_DEFAULT) > 0 &&
                      H5Lexists(file, "doc_offsets", H5P_DEFAULT) > 0,
                  "shard " << path << " lacks the dataset /tokens or /doc_offsets" << kShardHint);
    shard->tokens = H5Handle(H5Dopen2(file, "tokens", H5P_DEFAULT), H5Dclose);
    H5Handle type(shard->tokens.get() >= 0 ? H5Dget_type(shard->tokens.get()) : -1, H5Tclose);
    H5Handle space(shard->tokens.get() >= 0 ? H5Dget_space(shard->tokens.get()) : -1, H5Sclose);
    hsize_t dims[1] = {0};
    BRAID_REQUIRE(type.get() >= 0 && space.get() >= 0 &&
                      H5Tget_class(type.get()) == H5T_INTEGER &&
                      H5Tget_sign(type.get()) == H5T_SGN_NONE &&
                      (H5Tget_size(type.get()) == 2 || H5Tget_size(type.get()) == 4) &&
                      H5Sget_simple_extent_ndims(space.get()) == 1 &&
                      H5Sget_simple_extent_dims(space.get(), dims, nullptr) == 1,
                  "shard " << path << ": /tokens should be a 1-D uint16 or uint32 dataset"
                  << kShardHint);
    shard->element_bytes = H5Tget_size(type.get());
    BRAID_REQUIRE(int64_t(dims[0]) == shard->token_count,
                  "shard " << path << ": /tokens holds " << dims[0] << " tokens but the "
                  "attribute token_count says " << shard->token_count);
    BRAID_REQUIRE(shard->element_bytes == 4 || vocab_size_ <= 65536,
                  "shard " << path << " stores uint16 tokens but declares vocabulary "
                  << vocab_size_ << " (> 65536)");
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
    if (shard->element_bytes == 2) {
      shard->tokens_u16.resize(shard->token_count);
      status = H5Dread(shard->tokens.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       shard->tokens_u16.data());
    } else {
      shard->tokens_u32.resize(shard->token_count);
      status = H5Dread(shard->tokens.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       shard->tokens_u32.data());
    }
    BRAID_REQUIRE(status >= 0, "cannot read /tokens of shard " << shard->path
                  << " (file truncated or corrupt?)");
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
      const hsize_t offset[1] = {hsize_t(local)}, extent[1] = {hsize_t(n)};
      H5Handle file_space(BRAID_CHECK_H5(H5Dget_space(shard.tokens.get())), H5Sclose);
      BRAID_CHECK_H5(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset, nullptr,
                                         extent, nullptr));
      H5Handle mem_space(BRAID_CHECK_H5(H5Screate_simple(1, extent, nullptr)), H5Sclose);
      BRAID_CHECK_H5(H5Dread(shard.tokens.get(), H5T_NATIVE_INT32, mem_space.get(),
                             file_space.get(), H5P_DEFAULT, out));
      for (int64_t i = 0; i < n; ++i) {
        BRAID_REQUIRE(out[i] >= 0 && out[i] < vocab_size_,
                      "shard " << shard.path << " holds token id " << uint32_t(out[i])
                      << " at position " << local + i << ", outside its vocabulary of "
                      << vocab_size_);
      }
    }
    out += n;
    start += n;
    count -= n;
    ++s;
  }
}

}  // namespace braid
