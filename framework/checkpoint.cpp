#include "framework/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "parallel/mpi_check.h"

namespace fs = std::filesystem;

namespace braid {

namespace {
constexpr int64_t kFormatVersion = 1;
const char* kGroups[3] = {"params", "adam_m", "adam_v"};

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_text_atomic(const fs::path& p, const std::string& text) {
  fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    BRAID_CHECK(f.good(), "cannot write " << tmp);
    f << text;
    f.flush();
    BRAID_CHECK(f.good(), "write to " << tmp << " failed");
  }
  fsync_path(tmp);
  fs::rename(tmp, p);
  fsync_path(p.parent_path());
}

// Hyperslab selection of a parameter's real slice in its local storage (memory) and in
// the full dataset (file). Returns false when this rank holds none of it (padding shard).
bool select_slice(const ParamSpec& s, hid_t memspace, hid_t filespace) {
  const Shape local = s.local_shape();
  const int nd = int(local.size());
  std::vector<hsize_t> count(nd), zero(nd, 0), file_off(nd, 0);
  for (int d = 0; d < nd; ++d) count[d] = hsize_t(local[d]);
  if (s.shard_dim >= 0) {
    if (s.shard_count <= 0) return false;
    count[s.shard_dim] = hsize_t(s.shard_count);
    file_off[s.shard_dim] = hsize_t(s.shard_offset);
  }
  BRAID_CHECK_H5(H5Sselect_hyperslab(memspace, H5S_SELECT_SET, zero.data(), nullptr, count.data(), nullptr));
  BRAID_CHECK_H5(H5Sselect_hyperslab(filespace, H5S_SELECT_SET, file_off.data(), nullptr, count.data(), nullptr));
  return true;
}

hid_t make_space(const Shape& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return BRAID_CHECK_H5(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
}

void write_attr_i64(hid_t obj, const char* name, int64_t v) {
  hid_t sp = BRAID_CHECK_H5(H5Screate(H5S_SCALAR));
  hid_t a = BRAID_CHECK_H5(H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT));
  BRAID_CHECK_H5(H5Awrite(a, H5T_NATIVE_INT64, &v));
  H5Aclose(a);
  H5Sclose(sp);
}

void write_attr_str(hid_t obj, const char* name, const std::string& v) {
  hid_t t = BRAID_CHECK_H5(H5Tcopy(H5T_C_S1));
  BRAID_CHECK_H5(H5Tset_size(t, std::max<size_t>(1, v.size())));
  hid_t sp = BRAID_CHECK_H5(H5Screate(H5S_SCALAR));
  hid_t a = BRAID_CHECK_H5(H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT));
  BRAID_CHECK_H5(H5Awrite(a, t, v.empty() ? " " : v.c_str()));
  H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
}

// crc32 of every dataset of a closed checkpoint file, read serially.
std::map<std::string, uint32_t> dataset_checksums(const std::string& path,
                                                  const std::vector<std::pair<std::string, Shape>>& list,
                                                  std::string* error) {
  std::map<std::string, uint32_t> out;
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    *error = "cannot open " + path + " as HDF5";
    return out;
  }
  std::vector<float> buf;
  for (const char* g : kGroups)
    for (const auto& [name, shape] : list) {
      std::string ds = std::string("/") + g + "/" + name;
      hid_t d = H5Dopen2(f, ds.c_str(), H5P_DEFAULT);
      if (d < 0) {
        *error = path + " has no dataset " + ds;
        H5Fclose(f);
        return out;
      }
      buf.assign(size_t(shape_numel(shape)), 0.f);
      herr_t rc = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
      H5Dclose(d);
      if (rc < 0) {
        *error = "reading " + ds + " from " + path + " failed (file truncated or corrupt)";
        H5Fclose(f);
        return out;
      }
      uLong c = crc32(0L, Z_NULL, 0);
      c = crc32_z(c, reinterpret_cast<const Bytef*>(buf.data()), buf.size() * sizeof(float));
      out[ds] = uint32_t(c);
    }
  H5Fclose(f);
  return out;
}

// Runs fn on rank 0; every rank throws the same InputError if it failed there.
void rank0_collective(Communicator& world, const std::function<void()>& fn) {
  std::string err;
  if (world.rank() == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      err = e.what();
      if (err.empty()) err = "unknown error";
    }
  }
  broadcast_string(world, err, 0);
  if (!err.empty()) throw InputError(err);
}
}  // namespace

std::vector<std::pair<std::string, Shape>> full_param_list(const ModelConfig& m) {
  const int64_t C = m.n_embd;
  std::vector<std::pair<std::string, Shape>> v;
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

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace braid

namespace braid {

std::string save_checkpoint(const std::string& out_dir, const CheckpointState& state,
                            ParamStore& store, Optimizer& opt, ProcessGroups& groups,
                            const ModelConfig& model, int64_t keep_last) {
  Communicator& world = *groups.world;
  const fs::path root = fs::path(out_dir) / "checkpoints";
  const std::string name = checkpoint_dir_name(state.step);
  const fs::path tmp = root / (name + ".tmp");
  const fs::path final_dir = root / name;
  rank0_collective(world, [&] {
    fs::create_directories(root);
    fs::remove_all(tmp);  // a stale partial save from a crash
    fs::create_directories(tmp);
  });

  // Collective: complete moments on every replica (ZeRO-1 all-gathers its shards).
  std::vector<float> m_flat, v_flat;
  opt.gather_moments(m_flat, v_flat);

  const auto list = full_param_list(model);
  const std::string file = (tmp / "model.h5").string();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t fapl = BRAID_CHECK_H5(H5Pcreate(H5P_FILE_ACCESS));
  BRAID_CHECK_H5(H5Pset_fapl_mpio(fapl, control_comm(world), MPI_INFO_NULL));
  hid_t f = BRAID_CHECK_H5(H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  H5Pclose(fapl);
  // Metadata (groups, datasets, attributes) is created collectively, identically on all ranks.
  write_attr_i64(f, "format_version", kFormatVersion);
  write_attr_i64(f, "step", state.step);
  write_attr_i64(f, "data_position", state.data_position);
  write_attr_i64(f, "seed", int64_t(state.seed));
  write_attr_i64(f, "optimizer_steps", state.optimizer_steps);
  write_attr_str(f, "config", state.config.dump());
  std::map<std::string, hid_t> dsets;
  for (const char* g : kGroups) {
    hid_t gid = BRAID_CHECK_H5(H5Gcreate2(f, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (const auto& [pname, shape] : list) {
      hid_t sp = make_space(shape);
      hid_t d = BRAID_CHECK_H5(H5Dcreate2(gid, pname.c_str(), H5T_IEEE_F32LE, sp, H5P_DEFAULT,
                                          H5P_DEFAULT, H5P_DEFAULT));
      H5Sclose(sp);
      dsets[std::string(g) + "/" + pname] = d;
    }
    H5Gclose(gid);
  }
  // Raw data: independent writes of the slices this rank owns.
  const RankGrid& grid = groups.grid;
  Tensor host = store.host_values();  // device parameters are written from a host copy
  if (grid.dp_rank == 0) {
    for (const Param& p : store.params()) {
      if (p.spec.tied_copy || (p.spec.tp_replicated() && grid.tp_rank != 0)) continue;
      const float* srcs[3] = {host.f32() + p.flat_offset, m_flat.data() + p.flat_offset,
                              v_flat.data() + p.flat_offset};
      for (int gi = 0; gi < 3; ++gi) {
        hid_t d = dsets.at(std::string(kGroups[gi]) + "/" + p.spec.name);
        hid_t mem = make_space(p.spec.local_shape());
        hid_t fsp = BRAID_CHECK_H5(H5Dget_space(d));
        if (select_slice(p.spec, mem, fsp))
          BRAID_CHECK_H5(H5Dwrite(d, H5T_NATIVE_FLOAT, mem, fsp, H5P_DEFAULT, srcs[gi]));
        H5Sclose(fsp);
        H5Sclose(mem);
      }
    }
  }
  for (auto& [k, d] : dsets) H5Dclose(d);
  BRAID_CHECK_H5(H5Fclose(f));  // collective; flushes every rank's writes

  rank0_collective(world, [&] {
    std::string err;
    auto sums = dataset_checksums(file, list, &err);
    BRAID_CHECK(err.empty(), "checkpoint verification after write: " << err);
    nlohmann::json man;
    man["format_version"] = kFormatVersion;
    man["step"] = state.step;
    man["data_position"] = state.data_position;
    man["seed"] = state.seed;
    man["optimizer_steps"] = state.optimizer_steps;
    man["config"] = state.config;
    man["world"] = {{"tp", grid.tp}, {"pp", grid.pp}, {"dp", grid.dp}};
    for (auto& [ds, c] : sums) man["crc32"][ds] = c;
    {
      std::ofstream mf(tmp / "manifest.json");
      mf << man.dump(1) << "\n";
      mf.flush();
      BRAID_CHECK(mf.good(), "writing " << (tmp / "manifest.json").string() << " failed");
    }
    fsync_path(tmp / "manifest.json");
    fsync_path(file);
    fsync_path(tmp);
    fs::remove_all(final_dir);  // re-saving the same step replaces it
    fs::rename(tmp, final_dir);
    fsync_path(root);
    write_text_atomic(root / "latest", name + "\n");
    // --keep-last: delete the oldest complete checkpoints beyond the limit.
    std::vector<std::string> all;
    for (auto& e : fs::directory_iterator(root)) {
      std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("step_", 0) == 0 && n.find(".tmp") == std::string::npos)
        all.push_back(n);
    }
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i)
      if (all[i] != name) fs::remove_all(root / all[i]);
  });
  return final_dir.string();
}

std::string find_latest_checkpoint(const std::string& out_dir) {
  fs::path latest = fs::path(out_dir) / "checkpoints" / "latest";
  if (!fs::exists(latest)) return "";
  std::ifstream f(latest);
  std::string name;
  std::getline(f, name);
  BRAID_REQUIRE(!name.empty(), latest.string() << " is empty: the latest-checkpoint pointer is corrupt");
  return (fs::path(out_dir) / "checkpoints" / name).string();
}

nlohmann::json read_checkpoint_manifest(const std::string& dir) {
  fs::path mp = fs::path(dir) / "manifest.json";
  BRAID_REQUIRE(fs::is_directory(dir), "checkpoint " << dir << " does not exist");
  BRAID_REQUIRE(fs::exists(mp), "checkpoint " << dir << " has no manifest.json (incomplete or not a Braid checkpoint)");
  std::ifstream f(mp);
  nlohmann::json man;
  try {
    man = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw InputError("checkpoint manifest " + mp.string() + " is corrupt: " + e.what());
  }
  BRAID_REQUIRE(man.value("format_version", int64_t(-1)) == kFormatVersion,
                "checkpoint " << dir << " has format_version " << man.value("format_version", int64_t(-1))
                              << ", this build reads " << kFormatVersion);
  return man;
}

CheckpointState load_checkpoint(const std::string& dir, ParamStore& store, Optimizer* opt,
                                ProcessGroups& groups, const ModelConfig& model) {
  Communicator& world = *groups.world;
  const auto list = full_param_list(model);
  const std::string file = (fs::path(dir) / "model.h5").string();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  // Rank 0 verifies the manifest, the model and every checksum; all ranks share the verdict.
  std::string man_text;
  rank0_collective(world, [&] {
    nlohmann::json man = read_checkpoint_manifest(dir);
    const nlohmann::json& c = man.at("config");
    auto expect = [&](const char* key, int64_t have, const char* flag) {
      int64_t saved = c.value(key, int64_t(-1));
      BRAID_REQUIRE(saved == have, "checkpoint " << dir << " was trained with " << flag << " " << saved
                                                 << " but this run has " << flag << " " << have
                                                 << " (the model must match to resume)");
    };
    expect("layers", model.n_layer, "--layers");
    expect("heads", model.n_head, "--heads");
    expect("width", model.n_embd, "--width");
    expect("seq_len", model.seq_len, "--seq-len");
    expect("vocab_size", model.vocab_size, "--vocab-size (the dataset vocabulary)");
    BRAID_REQUIRE(fs::exists(file), "checkpoint " << dir << " has no model.h5");
    std::string err;
    auto sums = dataset_checksums(file, list, &err);
    BRAID_REQUIRE(err.empty(), "checkpoint " << dir << " is corrupt: " << err);
    for (auto& [ds, crc] : sums) {
      BRAID_REQUIRE(man["crc32"].contains(ds), "checkpoint " << dir << ": manifest lacks a checksum for " << ds);
      BRAID_REQUIRE(man["crc32"][ds].get<uint32_t>() == crc,
                    "checkpoint " << dir << " is corrupt: dataset " << ds << " fails its crc32 check");
    }
    man_text = man.dump();
  });
  broadcast_string(world, man_text, 0);
  nlohmann::json man = nlohmann::json::parse(man_text);

  // Every rank reads its own slices (independent reads of a verified file).
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  BRAID_CHECK(f >= 0, "cannot open " << file);
  std::vector<float> m_flat(size_t(store.flat_size()), 0.f), v_flat(size_t(store.flat_size()), 0.f);
  Tensor host = store.host_values();
  for (Param& p : store.params()) {
    float* dsts[3] = {host.f32() + p.flat_offset, m_flat.data() + p.flat_offset, v_flat.data() + p.flat_offset};
    for (int gi = 0; gi < 3; ++gi) {
      std::string ds = std::string("/") + kGroups[gi] + "/" + p.spec.name;
      hid_t d = H5Dopen2(f, ds.c_str(), H5P_DEFAULT);
      BRAID_CHECK(d >= 0, "checkpoint " << file << " lacks " << ds);
      hid_t mem = make_space(p.spec.local_shape());
      hid_t fsp = BRAID_CHECK_H5(H5Dget_space(d));
      if (select_slice(p.spec, mem, fsp))
        BRAID_CHECK_H5(H5Dread(d, H5T_NATIVE_FLOAT, mem, fsp, H5P_DEFAULT, dsts[gi]));
      H5Sclose(fsp);
      H5Sclose(mem);
      H5Dclose(d);
    }
  }
  H5Fclose(f);
  store.set_values(host);
  CheckpointState st;
  st.step = man.at("step");
  st.data_position = man.at("data_position");
  st.seed = man.at("seed");
  st.optimizer_steps = man.at("optimizer_steps");
  st.config = man.at("config");
  if (opt) {
    opt->set_moments(m_flat, v_flat);
    opt->set_steps_taken(st.optimizer_steps);
  }
  world.barrier();
  return st;
}

}  // namespace braid
