// Checkpoint integrity on real ranks: the per-tensor crc32 that sharded writers combine
// equals zlib's crc32 of the full tensor read back serially; a damaged tensor is named
// when the checkpoint is loaded under another layout; forged headers and mismatched
// files are refused before any data is read; partial saves are never resumed from and are
// removed by the next save.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.h"

namespace fs = std::filesystem;

namespace braid {
namespace {

using test::world_size;
using test::world_rank;

TrainConfig make_config(const std::string& data, const std::string& out, int tp, int pp, int64_t steps) {
  TrainConfig c;
  c.data_dir = data;
  c.out_dir = out;
  c.resume = "auto";
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 32;
  c.model.seq_len = 16;
  c.model.vocab_size = 96;
  c.steps = steps;
  c.micro_batch = 2;
  c.grad_accum = 2;
  c.lr = 3e-3f;
  c.seed = 5;
  c.quiet = true;
  c.tp = tp;
  c.pp = pp;
  c.bucket_mb = 0.01;
  return c;
}

// The largest (tp, pp) layout of this world, at most TP2 x PP2.
std::pair<int, int> save_layout() {
  const int w = world_size();
  return {w >= 2 ? 2 : 1, w >= 4 ? 2 : 1};
}

// A checkpoint saved at step 2 under save_layout(), copied to a fresh run directory by
// rank 0 (so each test damages its own copy). Returns the copied checkpoint directory.
std::string fresh_checkpoint(const std::string& name) {
  static std::string saved;
  if (saved.empty()) {
    auto data = test::make_token_dataset("ckpt_integrity", 96, 2048, 512);
    auto [tp, pp] = save_layout();
    saved = test::run_on_ranks(make_config(data, test::temp_dir("ckpt_integrity_run"), tp, pp, 2), tp * pp).checkpoint;
  }
  const std::string out = test::temp_dir("ckpt_" + name);
  const std::string dir = out + "/checkpoints/" + fs::path(saved).filename().string();
  if (world_rank() == 0) {
    fs::create_directories(out + "/checkpoints");
    fs::copy(saved, dir, fs::copy_options::recursive);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

// Loads `dir` under TP x DP over the whole world (a layout other than the one it was
// saved under); returns the error message ("" when it loaded).
std::string load_error(const std::string& dir, int tp) {
  TrainConfig c = make_config(test::make_token_dataset("ckpt_integrity", 96, 2048, 512),
                              test::temp_dir("ckpt_load"), tp, 1, 4);
  c.resume = dir;
  c.stop_after = 2;  // load, then stop without a step
  try {
    test::run_on_ranks(c, world_size() / tp * tp);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

uint32_t read_crc_attribute(const std::string& file, const std::string& ds) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, ds.c_str(), H5P_DEFAULT);
  hid_t a = H5Aopen(d, "crc32", H5P_DEFAULT);
  uint32_t v = 0;
  H5Aread(a, H5T_NATIVE_UINT32, &v);
  H5Aclose(a);
  H5Dclose(d);
  H5Fclose(f);
  return v;
}

TEST(CheckpointChecksums, ShardedWritersStoreTheFullTensorsCrc32) {
  const std::string dir = fresh_checkpoint("crc");
  if (world_rank() != 0) return;  // no collectives below
  std::ifstream mf(dir + "/manifest.json");
  const nlohmann::json man = nlohmann::json::parse(mf);
  ModelConfig m = make_config("", "", 1, 1, 1).model;
  int checked = 0;
  for (const char* group : kCheckpointGroups)
    for (const auto& [name, shape] : full_param_list(m)) {
      const std::vector<float> full = test::read_checkpoint_tensor(dir, group, name);
      ASSERT_EQ(int64_t(full.size()), shape_numel(shape));
      const uint32_t want = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(full.data()), uInt(full.size() * 4)));
      const std::string ds = std::string("/") + group + "/" + name;
      EXPECT_EQ(read_crc_attribute(dir + "/model.h5", ds), want) << ds;
      EXPECT_EQ(man["crc32"][ds].get<uint32_t>(), want) << ds;
      ++checked;
    }
  EXPECT_EQ(checked, 3 * int(full_param_list(m).size()));
}

TEST(CheckpointChecksums, ADamagedTensorIsNamedUnderAnotherLayout) {
  const std::string dir = fresh_checkpoint("damaged");
  EXPECT_EQ(load_error(dir, 1), "") << "the undamaged copy must load";
  if (world_rank() == 0) {
    // One element of one moment changes by one ulp; HDF5's own structures stay valid.
    hid_t f = H5Fopen((dir + "/model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/adam_m/h.1.mlp.proj.w", H5P_DEFAULT);
    hid_t fsp = H5Dget_space(d);
    const hsize_t at[2] = {3, 17}, one[2] = {1, 1};
    H5Sselect_hyperslab(fsp, H5S_SELECT_SET, at, nullptr, one, nullptr);
    hid_t ms = H5Screate_simple(2, one, nullptr);
    float v = 0;
    H5Dread(d, H5T_NATIVE_FLOAT, ms, fsp, H5P_DEFAULT, &v);
    v = std::nextafter(v, 1.f);
    H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fsp, H5P_DEFAULT, &v);
    H5Sclose(ms);
    H5Sclose(fsp);
    H5Dclose(d);
    H5Fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (int tp : {1, 2}) {  // replicated and sharded readers of the damaged tensor
    if (tp > world_size()) continue;
    const std::string err = load_error(dir, tp);
    EXPECT_NE(err.find("/adam_m/h.1.mlp.proj.w"), std::string::npos) << err;
    EXPECT_NE(err.find("fails its crc32 check"), std::string::npos) << err;
  }
}

TEST(CheckpointValidation, AForgedShapeIsRefusedBeforeAnyRead) {
  const std::string dir = fresh_checkpoint("forged");
  if (world_rank() == 0) {
    // /params/wpe replaced by a dataset claiming 2^30 rows and holding none of them.
    hid_t f = H5Fopen((dir + "/model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/params/wpe", H5P_DEFAULT);
    const hsize_t dims[2] = {hsize_t{1} << 30, 32};
    hid_t sp = H5Screate_simple(2, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE);
    hid_t d = H5Dcreate2(f, "/params/wpe", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string err = load_error(dir, 1);
  EXPECT_NE(err.find("/params/wpe has shape [1073741824, 32] but the model needs [16, 32]"), std::string::npos) << err;
}

TEST(CheckpointValidation, AManifestFromAnotherCheckpointIsRefused) {
  const std::string dir = fresh_checkpoint("mixed");
  if (world_rank() == 0) {
    std::ifstream in(dir + "/manifest.json");
    nlohmann::json man = nlohmann::json::parse(in);
    in.close();
    man["step"] = 1;  // as if copied from step 1's checkpoint
    man["optimizer_steps"] = 1;
    std::ofstream(dir + "/manifest.json") << man.dump();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string err = load_error(dir, 1);
  EXPECT_NE(err.find("model.h5 has step 2 but manifest.json has step 1"), std::string::npos) << err;
}

TEST(CheckpointSave, PartialSavesAreNeverResumedAndAreRemoved) {
  const std::string dir = fresh_checkpoint("partial");
  const fs::path root = fs::path(dir).parent_path();
  if (world_rank() == 0) {
    fs::create_directories(root / "step_00000003.tmp");  // a save killed mid-way
    std::ofstream(root / "step_00000003.tmp" / "model.h5") << "partial";
    std::ofstream(root / "latest.tmp") << "step_00000003";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_EQ(find_latest_checkpoint(root.parent_path().string()), dir);
  auto [tp, pp] = save_layout();
  TrainConfig c = make_config(test::make_token_dataset("ckpt_integrity", 96, 2048, 512), root.parent_path().string(),
                              tp, pp, 3);
  auto r = test::run_on_ranks(c, tp * pp);
  EXPECT_EQ(r.losses.size(), 1u) << "resumed at step 2, ran step 3";
  EXPECT_EQ(fs::path(r.checkpoint).filename(), "step_00000003");
  if (world_rank() == 0) {
    EXPECT_FALSE(fs::exists(root / "step_00000003.tmp"));
    EXPECT_FALSE(fs::exists(root / "latest.tmp"));
  }
}

}  // namespace
}  // namespace braid
