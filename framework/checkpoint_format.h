// The on-disk contract of a checkpoint and the validators that enforce it, free of MPI
// and HDF5 so that tests and fuzzers drive them from memory buffers.
//
// A checkpoint is untrusted input: a file may be truncated, bit-flipped, copied from
// another run or forged. Everything the loader relies on is checked here before anything
// is allocated or read: the manifest's types and ranges, the model it describes (bounded
// by the size of the file that must hold it), the `latest` pointer (a plain directory
// name, so a path can never leave the checkpoint directory), and each stored tensor's
// type, shape, storage and position in the file.
//
// Per-tensor checksum: the zlib crc32 of the tensor's float32 little-endian bytes at its
// full logical shape in row-major order, i.e. what
//     zlib.crc32(numpy.asarray(h5["params/wte"], "<f4").tobytes())
// gives. It is computed without ever holding the full tensor: a rank's slice is a set of
// contiguous runs of the row-major byte stream, and crc32 satisfies
//     crc(A || B) = shift(crc(A), |B|) xor crc(B),   shift(c, n) = crc32_combine(c, 0, n)
// so the crc of the whole stream is the XOR over all runs of shift(crc(run), bytes after
// the run). slice_crc32() returns one rank's share of that XOR; the shares of any set of
// slices that tile the tensor XOR to the same value, whatever the layout. Writers XOR-reduce
// their shares; every loader replica XOR-reduces the shares of what it read and compares.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/model_config.h"

namespace braid {

constexpr int64_t kCheckpointFormatVersion = 1;
// A manifest is a few KB per layer; anything beyond this is not a Braid manifest.
constexpr int64_t kMaxManifestBytes = int64_t{64} << 20;

using TensorShape = std::vector<int64_t>;

// Every parameter of the full model (name, logical shape), in a fixed order.
std::vector<std::pair<std::string, TensorShape>> full_param_list(const ModelConfig& m);
// The three groups of model.h5, in file order: parameters, AdamW first and second moments.
inline constexpr const char* kCheckpointGroups[3] = {"params", "adam_m", "adam_v"};

// The slice of a full tensor that one rank holds: all of it (shard_dim < 0), or indices
// [shard_offset, shard_offset + shard_count) along shard_dim, stored in local memory with
// storage_rows entries along that dimension (padding rows past shard_count are not data).
struct SliceGeometry {
  TensorShape full_shape;
  int shard_dim = -1;
  int64_t shard_offset = 0, shard_count = 0, storage_rows = 0;
};
// This slice's share of the tensor's crc32 (see the top of this file). `local` holds the
// slice in its local layout. The shares of slices that tile the tensor XOR to its crc32.
uint32_t slice_crc32(const float* local, const SliceGeometry& g);
// Number of elements of the full tensor that the slice covers.
int64_t slice_numel(const SliceGeometry& g);
// crc32 of a contiguous float32 buffer (the whole tensor).
uint32_t tensor_crc32(const float* data, int64_t numel);

// "step_00000042" <-> 42. A checkpoint directory name is "step_" and at least 8 digits.
std::string checkpoint_dir_name(int64_t step);
bool parse_checkpoint_dir_name(std::string_view name, int64_t* step);
// The content of OUT/checkpoints/latest: one directory name and an optional newline.
// Anything else (a path, "..", an absolute path, garbage) is an InputError naming `file`.
std::string parse_latest_pointer(std::string_view text, const std::string& file);

struct CheckpointManifest {
  int64_t format_version = 0;
  int64_t step = 0;
  int64_t data_position = 0;
  uint64_t seed = 0;
  int64_t optimizer_steps = 0;
  nlohmann::json config;                // the run's TrainConfig::to_json()
  ModelConfig model;                    // validated from config
  int tp = 1, pp = 1, dp = 1;           // the layout it was saved under (informational)
  std::map<std::string, uint32_t> crc32;  // "/params/wte" -> checksum
  nlohmann::json json;                  // the whole document
};
// Parses and validates a manifest.json text; InputError naming `file` and the key.
CheckpointManifest parse_checkpoint_manifest(std::string_view text, const std::string& file);
// The model a manifest describes must fit in the bytes of model.h5 (three float32 tensors
// per parameter); a forged manifest cannot make a reader allocate more than the file holds.
void check_model_fits_file(const ModelConfig& m, uint64_t file_bytes, const std::string& file);

// What model.h5 says about one expected dataset, read from its header only.
struct StoredTensor {
  bool found = false;
  bool float32_le = false;       // IEEE float, 4 bytes, little-endian
  std::vector<uint64_t> dims;
  bool contiguous = false;       // contiguous layout (how Braid writes)
  uint64_t storage_bytes = 0;    // bytes allocated for the data
  uint64_t file_offset = 0;      // address of the data in the file (contiguous only)
  bool has_crc = false;          // the dataset's "crc32" attribute
  int64_t crc = -1;
};
// Checks every dataset of `expected` (group-major order: kCheckpointGroups x params, the
// order of `found`) before anything is read: type, shape, contiguous storage of exactly
// the data's size inside the file, and a checksum that the manifest and the attribute
// agree on. Returns the expected crc32 of each dataset, in the same order.
std::vector<uint32_t> validate_stored_tensors(
    const std::vector<std::pair<std::string, TensorShape>>& expected,
    const std::vector<StoredTensor>& found, uint64_t file_bytes, const CheckpointManifest& man,
    const std::string& file);

}  // namespace braid
