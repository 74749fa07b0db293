// Checkpoint validators and the layout-independent per-tensor crc32: see
// checkpoint_format.h for the contract. No MPI and no HDF5 here (tests and fuzzers call
// these functions on memory buffers).
#include "framework/checkpoint_format.h"

#include <zlib.h>

#include <bit>
#include <cstdio>
#include <limits>
#include <sstream>

#include "ops/check.h"

namespace braid {
namespace {

static_assert(std::endian::native == std::endian::little,
              "checkpoint checksums are defined on little-endian float32 bytes");

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
// Steps, sample positions: far beyond any run, small enough that sums cannot overflow.
constexpr int64_t kMaxCounter = int64_t{1} << 62;

uint32_t crc_of_bytes(const void* data, size_t bytes) {
  uLong c = crc32_z(0L, Z_NULL, 0);
  return uint32_t(crc32_z(c, static_cast<const Bytef*>(data), bytes));
}

// What crc(A) contributes to crc(A || B) when |B| = n: crc(A || B) = shift(crc(A), n) xor
// crc(B), and zlib's crc32_combine(c, 0, n) is exactly shift(c, n).
uint32_t crc_shift(uint32_t c, uint64_t n_bytes) {
  return uint32_t(crc32_combine(c, 0, z_off_t(n_bytes)));
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

std::string dims_text(const std::vector<uint64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

std::string hex32(uint64_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08llx", static_cast<unsigned long long>(v));
  return buf;
}

// Up to 60 characters of untrusted text, control bytes escaped, for error messages.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 60) out += "...";
  return out;
}

// An integer member of a JSON object within [lo, hi], or an InputError naming it.
int64_t json_int(const nlohmann::json& obj, const char* key, int64_t lo, int64_t hi,
                 const std::string& where) {
  auto it = obj.find(key);
  bool ok = it != obj.end() && it->is_number_integer();
  int64_t v = 0;
  if (ok) {
    if (it->is_number_unsigned()) {
      uint64_t u = it->get<uint64_t>();
      ok = u <= uint64_t(std::numeric_limits<int64_t>::max());
      v = int64_t(u);
    } else {
      v = it->get<int64_t>();
    }
  }
  BRAID_REQUIRE(ok && v >= lo && v <= hi,
                where << ": '" << key << "' should be an integer in [" << lo << ", " << hi << "]"
                      << (it == obj.end() ? " but is missing" : ", got " + printable(it->dump())));
  return v;
}

ModelConfig model_from_config(const nlohmann::json& c, const std::string& where) {
  ModelConfig m;
  m.n_layer = int(json_int(c, "layers", 1, kMaxInt32, where));
  m.n_head = int(json_int(c, "heads", 1, kMaxInt32, where));
  m.n_embd = int(json_int(c, "width", 1, kMaxInt32, where));
  m.seq_len = int(json_int(c, "seq_len", 1, kMaxInt32, where));
  m.vocab_size = json_int(c, "vocab_size", 1, kMaxInt32, where);
  BRAID_REQUIRE(m.n_embd % m.n_head == 0, where << ": width " << m.n_embd
                                                << " is not divisible by heads " << m.n_head);
  return m;
}

}  // namespace

std::vector<std::pair<std::string, TensorShape>> full_param_list(const ModelConfig& m) {
  const int64_t C = m.n_embd;
  std::vector<std::pair<std::string, TensorShape>> v;
  v.push_back({"wte", {m.vocab_padded(), C}});
  v.push_back({"wpe", {m.seq_len, C}});
  for (int l = 0; l < m.n_layer; ++l) {
    std::string p = "h." + std::to_string(l) + ".";
    v.push_back({p + "ln1.w", {C}});
    v.push_back({p + "ln1.b", {C}});
    v.push_back({p + "attn.qkv.w", {3, C, C}});
    v.push_back({p + "attn.qkv.b", {3, C}});
    v.push_back({p + "attn.proj.w", {C, C}});
    v.push_back({p + "attn.proj.b", {C}});
    v.push_back({p + "ln2.w", {C}});
    v.push_back({p + "ln2.b", {C}});
    v.push_back({p + "mlp.fc.w", {4 * C, C}});
    v.push_back({p + "mlp.fc.b", {4 * C}});
    v.push_back({p + "mlp.proj.w", {C, 4 * C}});
    v.push_back({p + "mlp.proj.b", {C}});
  }
  v.push_back({"lnf.w", {C}});
  v.push_back({"lnf.b", {C}});
  return v;
}

int64_t slice_numel(const SliceGeometry& g) {
  int64_t n = 1;
  for (size_t d = 0; d < g.full_shape.size(); ++d)
    n *= int(d) == g.shard_dim ? std::max<int64_t>(0, g.shard_count) : g.full_shape[d];
  return n;
}

uint32_t tensor_crc32(const float* data, int64_t numel) {
  return crc_of_bytes(data, size_t(numel) * sizeof(float));
}

uint32_t slice_crc32(const float* local, const SliceGeometry& g) {
  const TensorShape& s = g.full_shape;
  int64_t numel = 1;
  for (int64_t x : s) numel *= x;
  if (g.shard_dim < 0) return tensor_crc32(local, numel);
  if (g.shard_count <= 0) return 0;
  const int d = g.shard_dim;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= s[i];
  for (size_t i = d + 1; i < s.size(); ++i) inner *= s[i];
  // Run o (o < outer) covers full-tensor elements [(o*s[d] + offset)*inner, + count*inner)
  // and sits at local element o*storage_rows*inner. Runs are evenly spaced in the full
  // tensor (stride s[d]*inner elements), so Horner's rule folds them with one precomputed
  // shift per run: acc = shift(acc, stride) xor crc(run).
  const size_t run_bytes = size_t(g.shard_count * inner) * sizeof(float);
  const uLong stride_op = crc32_combine_gen(z_off_t(s[d] * inner * int64_t(sizeof(float))));
  uint32_t acc = 0;
  for (int64_t o = 0; o < outer; ++o) {
    const uint32_t c = crc_of_bytes(local + o * g.storage_rows * inner, run_bytes);
    acc = o == 0 ? c : uint32_t(crc32_combine_op(acc, c, stride_op));
  }
  // Bytes of the full tensor after the end of the last run.
  const int64_t last_end = ((outer - 1) * s[d] + g.shard_offset + g.shard_count) * inner;
  return crc_shift(acc, uint64_t(numel - last_end) * sizeof(float));
}

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

bool parse_checkpoint_dir_name(std::string_view name, int64_t* step) {
  constexpr std::string_view prefix = "step_";
  if (name.size() < prefix.size() + 8 || name.size() > prefix.size() + 18 ||
      name.substr(0, prefix.size()) != prefix)
    return false;
  int64_t v = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (step) *step = v;
  return true;
}

std::string parse_latest_pointer(std::string_view text, const std::string& file) {
  std::string_view name = text;
  if (!name.empty() && name.back() == '\n') name.remove_suffix(1);
  BRAID_REQUIRE(parse_checkpoint_dir_name(name, nullptr),
                file << " should hold the name of a checkpoint directory next to it "
                        "(step_NNNNNNNN), but holds '" << printable(text)
                     << "'; it is corrupt or was edited (remove it to resume from the newest "
                        "complete checkpoint)");
  return std::string(name);
}

CheckpointManifest parse_checkpoint_manifest(std::string_view text, const std::string& file) {
  const std::string where = "checkpoint manifest " + file;
  BRAID_REQUIRE(int64_t(text.size()) <= kMaxManifestBytes,
                where << " has " << text.size() << " bytes; a manifest is at most "
                      << kMaxManifestBytes << " (not a Braid manifest)");
  CheckpointManifest m;
  try {
    m.json = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + " is not valid JSON (corrupt or truncated): " + e.what());
  }
  const nlohmann::json& j = m.json;
  BRAID_REQUIRE(j.is_object(), where << " should be a JSON object");
  auto fv = j.find("format_version");
  BRAID_REQUIRE(fv != j.end() && fv->is_number_integer() && fv->get<int64_t>() == kCheckpointFormatVersion,
                "checkpoint " << file << " has format_version "
                              << (fv == j.end() ? std::string("(missing)") : printable(fv->dump()))
                              << ", this build reads " << kCheckpointFormatVersion);
  m.format_version = kCheckpointFormatVersion;
  m.step = json_int(j, "step", 0, kMaxCounter, where);
  m.data_position = json_int(j, "data_position", 0, kMaxCounter, where);
  m.optimizer_steps = json_int(j, "optimizer_steps", 0, m.step, where);
  auto seed = j.find("seed");
  BRAID_REQUIRE(seed != j.end() && seed->is_number_integer() &&
                    (seed->is_number_unsigned() || seed->get<int64_t>() >= 0),
                where << ": 'seed' should be a non-negative integer");
  m.seed = seed->get<uint64_t>();
  auto config = j.find("config");
  BRAID_REQUIRE(config != j.end() && config->is_object(), where << ": 'config' should be an object");
  m.config = *config;
  m.model = model_from_config(m.config, where + " config");
  auto world = j.find("world");
  if (world != j.end()) {
    BRAID_REQUIRE(world->is_object(), where << ": 'world' should be an object");
    m.tp = int(json_int(*world, "tp", 1, kMaxInt32, where + " world"));
    m.pp = int(json_int(*world, "pp", 1, kMaxInt32, where + " world"));
    m.dp = int(json_int(*world, "dp", 1, kMaxInt32, where + " world"));
  }
  auto crcs = j.find("crc32");
  BRAID_REQUIRE(crcs != j.end() && crcs->is_object(), where << ": 'crc32' should be an object");
  for (auto it = crcs->begin(); it != crcs->end(); ++it) {
    BRAID_REQUIRE(it->is_number_unsigned() && it->get<uint64_t>() <= 0xffffffffull,
                  where << ": crc32 of '" << printable(it.key()) << "' should be an integer in [0, 2^32)");
    m.crc32[it.key()] = uint32_t(it->get<uint64_t>());
  }
  return m;
}

void check_model_fits_file(const ModelConfig& m, uint64_t file_bytes, const std::string& file) {
  // In long double: a forged width of 2^31 would overflow int64 in num_parameters().
  const long double C = m.n_embd, L = m.n_layer, T = m.seq_len;
  const long double V = (static_cast<long double>(m.vocab_size) + 63) / 64 * 64;
  const long double params = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
  const long double need = params * 3 * sizeof(float);
  BRAID_REQUIRE(need <= static_cast<long double>(file_bytes),
                "checkpoint " << file << " has " << file_bytes << " bytes but the model its "
                "manifest describes (layers " << m.n_layer << ", width " << m.n_embd << ", seq_len "
                << m.seq_len << ", vocab " << m.vocab_size << ") needs " << double(need)
                << " bytes of tensors: the file is truncated or the manifest is forged");
}

std::vector<uint32_t> validate_stored_tensors(
    const std::vector<std::pair<std::string, TensorShape>>& expected,
    const std::vector<StoredTensor>& found, uint64_t file_bytes, const CheckpointManifest& man,
    const std::string& file) {
  BRAID_CHECK(found.size() == 3 * expected.size(), "one StoredTensor per expected dataset");
  std::vector<uint32_t> crcs;
  crcs.reserve(found.size());
  size_t k = 0;
  for (const char* group : kCheckpointGroups) {
    for (const auto& [name, shape] : expected) {
      const StoredTensor& t = found[k++];
      const std::string ds = std::string("/") + group + "/" + name;
      const std::string what = "checkpoint file " + file + ": dataset " + ds;
      BRAID_REQUIRE(t.found, "checkpoint file " << file << " has no dataset " << ds
                                                << " (expected float32 " << shape_text(shape) << ")");
      BRAID_REQUIRE(t.float32_le, what << " should hold little-endian float32 values");
      bool same = t.dims.size() == shape.size();
      for (size_t d = 0; same && d < shape.size(); ++d) same = t.dims[d] == uint64_t(shape[d]);
      BRAID_REQUIRE(same, what << " has shape " << dims_text(t.dims) << " but the model needs "
                               << shape_text(shape));
      uint64_t bytes = sizeof(float);
      for (int64_t x : shape) bytes *= uint64_t(x);
      BRAID_REQUIRE(t.contiguous, what << " is not stored contiguously (not written by Braid)");
      BRAID_REQUIRE(t.storage_bytes == bytes,
                    what << " has " << t.storage_bytes << " bytes of storage for " << bytes
                         << " bytes of data (truncated or forged)");
      BRAID_REQUIRE(t.file_offset <= file_bytes && bytes <= file_bytes - t.file_offset,
                    what << " lies at bytes [" << t.file_offset << ", " << t.file_offset + bytes
                         << ") but the file has " << file_bytes << " bytes (truncated)");
      auto mc = man.crc32.find(ds);
      BRAID_REQUIRE(mc != man.crc32.end(),
                    "checkpoint " << file << ": the manifest lacks a checksum for " << ds);
      if (t.has_crc) {
        BRAID_REQUIRE(t.crc >= 0 && uint64_t(t.crc) == mc->second,
                      what << " carries crc32 " << hex32(uint64_t(t.crc)) << " but the manifest says "
                           << hex32(mc->second) << " (the files do not belong together)");
      }
      crcs.push_back(mc->second);
    }
  }
  return crcs;
}

}  // namespace braid
