// The checkpoint and token-shard validators on memory buffers, the layout-independent
// per-tensor crc32, and how --resume auto picks a checkpoint directory. Every forged or
// damaged field must give an InputError whose message names it.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include "framework/checkpoint.h"
#include "framework/checkpoint_format.h"
#include "framework/shard_header.h"

namespace fs = std::filesystem;

namespace braid {
namespace {

void expect_input_error(const std::function<void()>& fn, const std::vector<std::string>& parts,
                        const std::string& context = "") {
  try {
    fn();
    ADD_FAILURE() << context << ": no InputError (expected one naming '" << parts.front() << "')";
  } catch (const InputError& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << context << ": '" << e.what() << "' does not mention '" << p << "'";
  }
}

// crc32 straight from zlib over the bytes: the definition the checksum must meet.
uint32_t zlib_crc(const std::vector<float>& v) {
  return uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(v.data()), uInt(v.size() * sizeof(float))));
}

TEST(SliceCrc, SharesOfAnyTilingXorToTheFullTensorsCrc) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  const std::vector<std::vector<int64_t>> shapes = {{37}, {10, 6}, {3, 8, 5}, {64, 7}, {5, 1, 9}};
  int tilings = 0, expected_tilings = 0;
  for (const auto& shape : shapes) {
    expected_tilings += 1 + 4 * int(shape.size());  // whole, and 1..4 parts along each dim
    int64_t n = 1;
    for (int64_t x : shape) n *= x;
    std::vector<float> full(static_cast<size_t>(n));
    for (float& x : full) x = uni(rng);
    const uint32_t want = zlib_crc(full);
    EXPECT_EQ(tensor_crc32(full.data(), n), want);
    for (int dim = -1; dim < int(shape.size()); ++dim) {
      for (int64_t parts = 1; parts <= 4; ++parts) {
        if (dim < 0 && parts > 1) continue;
        const int64_t rows = dim < 0 ? 1 : shape[dim];
        const int64_t storage = (rows + parts - 1) / parts;  // padded like the vocab shards
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; ++d) outer *= shape[d];
        for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
        uint32_t x = 0, x_flipped = 0;
        int64_t covered = 0;
        for (int64_t p = 0; p < parts; ++p) {
          SliceGeometry g{shape, dim, 0, 0, 0};
          std::vector<float> local;
          if (dim < 0) {
            local = full;
          } else {
            g.shard_offset = p * storage;
            g.shard_count = std::clamp<int64_t>(rows - g.shard_offset, 0, storage);
            g.storage_rows = storage;
            // Padding rows hold garbage: it must not enter the checksum.
            local.assign(size_t(outer * storage * inner), 1e30f);
            for (int64_t o = 0; o < outer; ++o)
              for (int64_t r = 0; r < g.shard_count; ++r)
                for (int64_t i = 0; i < inner; ++i)
                  local[size_t((o * storage + r) * inner + i)] =
                      full[size_t((o * rows + g.shard_offset + r) * inner + i)];
          }
          x ^= slice_crc32(local.data(), g);
          covered += slice_numel(g);
          if (p == 0 && slice_numel(g) > 0) local[0] = std::nextafter(local[0], 2.f);  // one bit of one element
          x_flipped ^= slice_crc32(local.data(), g);
        }
        EXPECT_EQ(covered, n);
        EXPECT_EQ(x, want) << "shape rank " << shape.size() << " dim " << dim << " parts " << parts;
        EXPECT_NE(x_flipped, want) << "a changed element must change the checksum";
        ++tilings;
      }
    }
  }
  EXPECT_EQ(tilings, expected_tilings);
}

nlohmann::json good_manifest() {
  nlohmann::json m;
  m["format_version"] = 1;
  m["step"] = 4;
  m["data_position"] = 32;
  m["seed"] = 7;
  m["optimizer_steps"] = 4;
  m["config"] = {{"layers", 2}, {"heads", 4}, {"width", 32}, {"seq_len", 16}, {"vocab_size", 257},
                 {"tokenizer", "byte"}};
  m["world"] = {{"tp", 2}, {"pp", 1}, {"dp", 1}};
  m["crc32"] = {{"/params/wte", 123456u}};
  return m;
}

TEST(Manifest, AValidManifestParses) {
  CheckpointManifest m = parse_checkpoint_manifest(good_manifest().dump(), "m.json");
  EXPECT_EQ(m.step, 4);
  EXPECT_EQ(m.data_position, 32);
  EXPECT_EQ(m.seed, 7u);
  EXPECT_EQ(m.model.n_layer, 2);
  EXPECT_EQ(m.model.vocab_size, 257);
  EXPECT_EQ(m.tp, 2);
  EXPECT_EQ(m.crc32.at("/params/wte"), 123456u);
}

TEST(Manifest, EveryForgedOrDamagedFieldIsNamed) {
  using Edit = std::function<void(nlohmann::json&)>;
  const std::vector<std::pair<Edit, std::string>> cases = {
      {[](auto& j) { j.erase("step"); }, "'step'"},
      {[](auto& j) { j["step"] = -1; }, "'step'"},
      {[](auto& j) { j["step"] = "4"; }, "'step'"},
      {[](auto& j) { j["step"] = 1e30; }, "'step'"},
      {[](auto& j) { j["data_position"] = -5; }, "'data_position'"},
      {[](auto& j) { j["optimizer_steps"] = 5; }, "'optimizer_steps'"},
      {[](auto& j) { j["seed"] = -1; }, "'seed'"},
      {[](auto& j) { j["format_version"] = 2; }, "format_version 2"},
      {[](auto& j) { j.erase("format_version"); }, "format_version (missing)"},
      {[](auto& j) { j["config"] = nlohmann::json::array(); }, "'config'"},
      {[](auto& j) { j["config"]["layers"] = int64_t{1} << 40; }, "'layers'"},
      {[](auto& j) { j["config"]["heads"] = 0; }, "'heads'"},
      {[](auto& j) { j["config"]["width"] = 30; }, "not divisible"},
      {[](auto& j) { j["config"]["vocab_size"] = 0; }, "'vocab_size'"},
      {[](auto& j) { j["config"]["seq_len"] = nullptr; }, "'seq_len'"},
      {[](auto& j) { j["world"]["tp"] = 0; }, "'tp'"},
      {[](auto& j) { j["crc32"] = nlohmann::json::array(); }, "'crc32'"},
      {[](auto& j) { j["crc32"]["/params/wte"] = int64_t{1} << 33; }, "crc32 of '/params/wte'"},
      {[](auto& j) { j["crc32"]["/params/wte"] = -1; }, "crc32 of '/params/wte'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    nlohmann::json j = good_manifest();
    cases[i].first(j);
    expect_input_error([&] { parse_checkpoint_manifest(j.dump(), "ck/manifest.json"); },
                       {"ck/manifest.json", cases[i].second}, "case " + std::to_string(i));
  }
  for (std::string text : {"", "{", "[]", "null", "{\"step\":", "\x01\x02"})
    expect_input_error([&] { parse_checkpoint_manifest(text, "ck/manifest.json"); }, {"ck/manifest.json"},
                       "text '" + text + "'");
  const std::string huge(size_t(kMaxManifestBytes) + 1, ' ');
  expect_input_error([&] { parse_checkpoint_manifest(huge, "ck/manifest.json"); }, {"not a Braid manifest"});
}

TEST(LatestPointer, OnlyAPlainCheckpointNameIsAccepted) {
  EXPECT_EQ(parse_latest_pointer("step_00000012\n", "latest"), "step_00000012");
  EXPECT_EQ(parse_latest_pointer("step_123456789", "latest"), "step_123456789");
  for (std::string bad : {"../step_00000001", "/tmp/step_00000001", "step_0000001\n", "step_00000001/../../x",
                          "step_00000001\n\n", "", "step_0000000a", " step_00000001", ".."})
    expect_input_error([&] { parse_latest_pointer(bad, "run/checkpoints/latest"); },
                       {"run/checkpoints/latest", "step_NNNNNNNN"}, "pointer '" + bad + "'");
  expect_input_error([&] { parse_latest_pointer(std::string("step_00000001\0x", 15), "latest"); }, {"\\x00"});
}

TEST(ModelFitsFile, AManifestCannotClaimMoreThanTheFileHolds) {
  ModelConfig m;
  m.n_layer = 2, m.n_head = 4, m.n_embd = 32, m.seq_len = 16, m.vocab_size = 257;
  const uint64_t need = uint64_t(m.num_parameters()) * 3 * sizeof(float);
  EXPECT_NO_THROW(check_model_fits_file(m, need, "model.h5"));
  expect_input_error([&] { check_model_fits_file(m, need - 1, "model.h5"); }, {"model.h5", "forged"});
  m.n_embd = std::numeric_limits<int32_t>::max();  // would overflow int64 arithmetic
  m.n_head = 1;
  expect_input_error([&] { check_model_fits_file(m, uint64_t{1} << 40, "model.h5"); }, {"model.h5", "forged"});
}

struct TensorFixture {
  ModelConfig model;
  std::vector<std::pair<std::string, TensorShape>> list;
  CheckpointManifest man;
  std::vector<StoredTensor> found;
  uint64_t file_bytes = 0;
  TensorFixture() {
    model.n_layer = 1, model.n_head = 2, model.n_embd = 8, model.seq_len = 4, model.vocab_size = 50;
    list = full_param_list(model);
    uint64_t offset = 4096;  // data after the file's metadata
    uint32_t crc = 1;
    for (const char* g : kCheckpointGroups)
      for (const auto& [name, shape] : list) {
        StoredTensor t;
        t.found = true;
        t.float32_le = true;
        t.contiguous = true;
        t.dims.assign(shape.begin(), shape.end());
        t.storage_bytes = uint64_t(shape_numel(shape)) * 4;
        t.file_offset = offset;
        offset += t.storage_bytes;
        t.has_crc = true;
        t.crc = crc;
        man.crc32[std::string("/") + g + "/" + name] = crc++;
        found.push_back(t);
      }
    file_bytes = offset;
  }
  std::vector<uint32_t> validate() const { return validate_stored_tensors(list, found, file_bytes, man, "ck/model.h5"); }
};

TEST(StoredTensors, EveryBadHeaderIsRefusedBeforeReading) {
  {
    TensorFixture f;
    const auto crcs = f.validate();
    ASSERT_EQ(crcs.size(), f.found.size());
    EXPECT_EQ(crcs[0], f.man.crc32.at("/params/wte"));
  }
  // adam_m's "h.0.attn.qkv.w" (group 1, fifth parameter) is the victim of each forgery.
  const size_t k = TensorFixture().list.size() + 4;
  using Edit = std::function<void(TensorFixture&)>;
  const std::vector<std::pair<Edit, std::string>> cases = {
      {[&](auto& f) { f.found[k].found = false; }, "has no dataset /adam_m/h.0.attn.qkv.w"},
      {[&](auto& f) { f.found[k].float32_le = false; }, "float32"},
      {[&](auto& f) { f.found[k].dims = {3, 8, uint64_t{1} << 40}; }, "has shape [3, 8, 1099511627776]"},
      {[&](auto& f) { f.found[k].dims = {3, 8}; }, "has shape [3, 8] but the model needs [3, 8, 8]"},
      {[&](auto& f) { f.found[k].contiguous = false; }, "contiguous"},
      {[&](auto& f) { f.found[k].storage_bytes = 0; }, "0 bytes of storage"},
      {[&](auto& f) { f.found[k].file_offset = f.file_bytes - 10; }, "truncated"},
      {[&](auto& f) { f.found[k].file_offset = ~uint64_t(0); }, "truncated"},
      {[&](auto& f) { f.found[k].crc = 99999; }, "but the manifest says"},
      {[&](auto& f) { f.man.crc32.erase("/adam_m/h.0.attn.qkv.w"); }, "lacks a checksum"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    TensorFixture f;
    cases[i].first(f);
    expect_input_error([&] { f.validate(); }, {"ck/model.h5", "/adam_m/h.0.attn.qkv.w", cases[i].second},
                       "case " + std::to_string(i));
  }
  TensorFixture f;  // an old checkpoint without attributes is still verified by the manifest
  for (auto& t : f.found) t.has_crc = false, t.crc = -1;
  EXPECT_NO_THROW(f.validate());
}

ShardHeader good_shard() {
  ShardHeader h;
  h.format_version = 2;
  h.vocab_size = 257;
  h.token_count = 1000;
  h.tokenizer = "byte";
  h.tokens_unsigned_integer = true;
  h.token_bytes = 2;
  h.tokens_rank = 1;
  h.tokens_length = 1000;
  h.tokens_storage_bytes = 2000;
  h.checksum_block_tokens = 256;
  h.crcs_uint32 = true;
  h.crcs_rank = 1;
  h.crcs_length = 4;
  h.file_bytes = 10000;
  return h;
}

TEST(ShardHeaderValidation, ForgedShapesAndAttributesAreRefused) {
  EXPECT_NO_THROW(validate_shard_header(good_shard(), "d/train_000000.h5"));
  using Edit = std::function<void(ShardHeader&)>;
  const std::vector<std::pair<Edit, std::string>> cases = {
      {[](auto& h) { h.format_version = 3; }, "format_version 3"},
      {[](auto& h) { h.vocab_size = kMaxVocabSize + 1; }, "vocab_size"},
      {[](auto& h) { h.vocab_size = 0; }, "vocab_size"},
      {[](auto& h) { h.token_count = -1; }, "token_count"},
      {[](auto& h) { h.tokens_rank = 2; }, "1-D uint16 or uint32"},
      {[](auto& h) { h.token_bytes = 8; }, "1-D uint16 or uint32"},
      {[](auto& h) { h.tokens_unsigned_integer = false; }, "1-D uint16 or uint32"},
      {[](auto& h) { h.tokens_length = 999; }, "token_count says 1000"},
      {[](auto& h) { h.vocab_size = 70000; }, "stores uint16 tokens"},
      // A forged extent without data: refused before a buffer of its size exists.
      {[](auto& h) { h.token_count = h.tokens_length = int64_t{1} << 28, h.crcs_length = 1 << 20; },
       "stores only 2000 bytes"},
      {[](auto& h) { h.tokens_storage_bytes = 20000; }, "the file has 10000 bytes"},
      // Found by fuzz_shard_header: a count whose byte size exceeds 2^64 next to a storage
      // size of 2^64-1 must not pass as "stored in full".
      {[](auto& h) {
         h.token_count = h.tokens_length = int64_t{8434752815095611392};
         h.token_bytes = 4, h.tokens_storage_bytes = h.file_bytes = UINT64_MAX, h.format_version = 1;
       },
       "stores only 18446744073709551615 bytes"},
      {[](auto& h) { h.checksum_block_tokens = 0; }, "checksum_block_tokens"},
      {[](auto& h) { h.crcs_length = 5; }, "/tokens_crc32"},
      {[](auto& h) { h.crcs_uint32 = false; }, "/tokens_crc32"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    ShardHeader h = good_shard();
    cases[i].first(h);
    expect_input_error([&] { validate_shard_header(h, "d/train_000000.h5"); }, {"d/train_000000.h5", cases[i].second},
                       "case " + std::to_string(i));
  }
  ShardHeader compressed = good_shard();  // storage of filtered data is not comparable
  compressed.tokens_filtered = true;
  compressed.tokens_storage_bytes = 100;
  EXPECT_NO_THROW(validate_shard_header(compressed, "d/train_000000.h5"));
  ShardHeader v1 = good_shard();  // version 1 has no checksums
  v1.format_version = 1;
  v1.crcs_length = 0, v1.crcs_uint32 = false, v1.checksum_block_tokens = 0;
  EXPECT_NO_THROW(validate_shard_header(v1, "d/train_000000.h5"));
}

TEST(ShardHeaderValidation, BlockChecksumsCoverEveryToken) {
  std::vector<uint16_t> tokens(1000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t(i * 7);
  const auto crcs = token_block_crcs(tokens.data(), 1000, 2, 256);
  ASSERT_EQ(int64_t(crcs.size()), checksum_block_count(1000, 256));
  EXPECT_EQ(crcs.size(), 4u);
  EXPECT_EQ(crcs[3], uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(tokens.data() + 768), 232 * 2)));
  tokens[999] ^= 1;
  EXPECT_NE(token_block_crcs(tokens.data(), 1000, 2, 256)[3], crcs[3]);
}

// --- which directory --resume auto takes --------------------------------------------------

struct CheckpointRoot {
  fs::path out = fs::temp_directory_path() / ("braid_test_ckdir_" + std::to_string(::getpid()));
  fs::path root = out / "checkpoints";
  CheckpointRoot() {
    fs::remove_all(out);
    fs::create_directories(root);
  }
  ~CheckpointRoot() { fs::remove_all(out); }
  void complete(const std::string& name) {
    fs::create_directories(root / name);
    std::ofstream(root / name / "manifest.json") << "{}";
  }
  void pointer(const std::string& text) { std::ofstream(root / "latest") << text; }
  std::string latest() { return find_latest_checkpoint(out.string()); }
};

TEST(FindLatest, TheNewestCompleteCheckpointAndNothingElse) {
  CheckpointRoot c;
  EXPECT_EQ(c.latest(), "");
  c.complete("step_00000002");
  EXPECT_EQ(c.latest(), (c.root / "step_00000002").string());  // no pointer yet
  c.pointer("step_00000002\n");
  c.complete("step_00000004");  // a crash after its rename, before the pointer update
  EXPECT_EQ(c.latest(), (c.root / "step_00000004").string());
  c.pointer("step_00000004\n");
  c.complete("step_00000006.tmp");                    // a partial save, even with a manifest
  fs::create_directories(c.root / "step_00000008");   // no manifest: not complete
  fs::create_directory_symlink(fs::temp_directory_path(), c.root / "step_00000010");
  EXPECT_EQ(c.latest(), (c.root / "step_00000004").string());
  fs::remove_all(c.out);
  EXPECT_EQ(find_latest_checkpoint(c.out.string()), "");
}

TEST(FindLatest, APointerCannotLeaveTheCheckpointDirectory) {
  CheckpointRoot c;
  c.complete("step_00000002");
  const std::string latest = (c.root / "latest").string();
  for (std::string bad : {"../../etc\n", "/etc\n", "step_00000002/..\n", "garbage"}) {
    c.pointer(bad);
    expect_input_error([&] { c.latest(); }, {latest, "step_NNNNNNNN"}, bad);
  }
  c.pointer("step_00000009\n");  // names nothing
  expect_input_error([&] { c.latest(); }, {latest, "step_00000009", "not a checkpoint directory"});
  fs::create_directory_symlink(fs::temp_directory_path(), c.root / "step_00000012");
  c.pointer("step_00000012\n");  // a link out of the directory
  expect_input_error([&] { c.latest(); }, {latest, "step_00000012"});
  std::ofstream(c.root / "latest") << std::string(1000, 's');
  expect_input_error([&] { c.latest(); }, {latest, "corrupt"});
}

}  // namespace
}  // namespace braid
