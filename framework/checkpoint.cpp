// Saving and loading checkpoints (layout in checkpoint.h, validators and the checksum in
// checkpoint_format.h).
//
// Failure handling. Every step that can fail on some ranks only (a write hitting a full
// disk, a read of a damaged file) records its error locally; the ranks then agree on the
// lowest failing rank's message before the next collective call, so no rank waits in a
// collective for another that gave up, and every rank reports the same message. HDF5's
// collective calls (create, metadata, flush, close) are made by every rank in the same
// order whatever happened in between.
#include "framework/checkpoint.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "framework/hdf5_util.h"
#include "parallel/collective_check.h"
#include "parallel/ledger_communicator.h"
#include "parallel/mpi_check.h"

namespace fs = std::filesystem;

namespace braid {

namespace {

std::string errno_text(int err) { return err != 0 ? std::strerror(err) : "I/O error"; }

// fsync of a file we wrote: a failure (EIO, or ENOSPC reported late by NFS) means the
// data may not be on disk, so the checkpoint must not be published.
void fsync_file(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  BRAID_REQUIRE(fd >= 0, "cannot open " << p.string() << " to flush it: " << errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  BRAID_REQUIRE(rc == 0, "flushing " << p.string() << " to disk failed: " << errno_text(err));
}

// Makes a rename in the directory durable. Some file systems refuse to fsync a directory
// (EINVAL); that is harmless, so the result is not checked.
void fsync_dir(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

int64_t free_bytes(const fs::path& p) {
  struct statvfs s;
  if (::statvfs(p.c_str(), &s) != 0) return -1;
  return int64_t(s.f_bavail) * int64_t(s.f_frsize);
}

void write_text_file(const fs::path& p, const std::string& text) {
  errno = 0;
  std::ofstream f(p, std::ios::trunc | std::ios::binary);
  BRAID_REQUIRE(f.good(), "cannot create " << p.string() << ": " << errno_text(errno));
  f << text;
  f.close();
  BRAID_REQUIRE(!f.fail(), "writing " << p.string() << " failed: " << errno_text(errno));
  fsync_file(p);
}

void write_text_atomic(const fs::path& p, const std::string& text) {
  fs::path tmp = p.string() + ".tmp";
  write_text_file(tmp, text);
  fs::rename(tmp, p);
  fsync_dir(p.parent_path());
}

// A small untrusted file, read whole after checking its size.
std::string read_small_file(const fs::path& p, int64_t max_bytes, const std::string& what) {
  std::error_code ec;
  const auto size = fs::file_size(p, ec);
  BRAID_REQUIRE(!ec, "cannot read " << what << " " << p.string() << ": " << ec.message());
  BRAID_REQUIRE(int64_t(size) <= max_bytes, what << " " << p.string() << " has " << size
                                                 << " bytes, more than the " << max_bytes
                                                 << " it can have: it is corrupt");
  std::ifstream f(p, std::ios::binary);
  std::string text(size_t(size), '\0');
  f.read(text.data(), std::streamsize(size));
  BRAID_REQUIRE(f.gcount() == std::streamsize(size), "cannot read " << what << " " << p.string());
  return text;
}

bool is_real_directory(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(fs::symlink_status(p, ec));
}

SliceGeometry slice_geometry(const ParamSpec& s) {
  return {s.full_shape, s.shard_dim, s.shard_offset, s.shard_count, s.storage_rows};
}

// The ranks whose slices of a parameter tile it once per replica: TP-replicated tensors
// count on TP rank 0 only, the second holder of the tied embedding not at all.
bool holds_canonical_slice(const ParamSpec& s, const RankGrid& g) {
  return !s.tied_copy && !(s.tp_replicated() && g.tp_rank != 0);
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

H5Handle make_space(const Shape& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return H5Handle(BRAID_CHECK_H5(H5Screate_simple(int(dims.size()), dims.data(), nullptr)), H5Sclose);
}

void write_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, const void* value) {
  H5Handle sp(BRAID_CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Handle a(BRAID_CHECK_H5(H5Acreate2(obj, name, file_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  BRAID_CHECK_H5(H5Awrite(a.get(), mem_type, value));
}

void write_attr_str(hid_t obj, const char* name, const std::string& v) {
  H5Handle t(BRAID_CHECK_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
  BRAID_CHECK_H5(H5Tset_size(t.get(), std::max<size_t>(1, v.size())));
  write_attr(obj, name, t.get(), t.get(), v.empty() ? " " : v.c_str());
}

// An integer attribute, or -1 when it is absent or not a scalar integer.
int64_t read_attr_i64(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return -1;
  H5Handle a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!a.valid()) return -1;
  H5Handle t(H5Aget_type(a.get()), H5Tclose), sp(H5Aget_space(a.get()), H5Sclose);
  int64_t v = -1;
  if (!t.valid() || !sp.valid() || H5Tget_class(t.get()) != H5T_INTEGER ||
      H5Sget_simple_extent_npoints(sp.get()) != 1 || H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0)
    return -1;
  return v;
}

std::string dataset_path(int group, const std::string& name) {
  return std::string("/") + kCheckpointGroups[group] + "/" + name;
}

// Lowest failing rank's message on every rank ("" when no rank failed). Collective.
std::string first_error(Communicator& world, const std::string& local) {
  int64_t key = local.empty() ? -int64_t(world.size()) : -int64_t(world.rank());
  all_reduce_int64(world, &key, 1, ReduceOp::Max);
  const int first = int(-key);
  if (first == world.size()) return "";
  std::string msg = local;
  broadcast_string(world, msg, first);
  return msg;
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

// Test hooks (crash consistency and full disks):
//   BRAID_FAULT_KILL_DURING_SAVE=STEP[:RANK[:open]]  every rank (or world rank RANK only)
//                                      SIGKILLs itself while writing that step's
//                                      checkpoint, after its raw data and before the close
//                                      (the others then wait in one of our collectives), or
//                                      with ":open" just before the collective file create
//                                      (the others then wait inside parallel HDF5);
//   BRAID_TEST_SKIP_SPACE_CHECK=1      no free-space check before a save, so that a full
//                                      disk makes a write fail mid-way.
void maybe_die_during_save(int64_t step, bool at_open) {
  const char* v = std::getenv("BRAID_FAULT_KILL_DURING_SAVE");
  if (v == nullptr || std::atoll(v) != step) return;
  const char* colon = std::strchr(v, ':');
  if (colon != nullptr) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (std::atoi(colon + 1) != rank) return;
  }
  const bool want_open = colon != nullptr && std::strstr(colon + 1, ":open") != nullptr;
  if (want_open == at_open) std::raise(SIGKILL);
}

// Directories and pointer files that an interrupted save left behind.
void remove_partial_checkpoints(const fs::path& root) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n == "latest.tmp" ||
        (n.size() > 4 && n.ends_with(".tmp") && parse_checkpoint_dir_name(n.substr(0, n.size() - 4), nullptr))) {
      std::error_code ignored;
      fs::remove_all(it->path(), ignored);
    }
  }
}

// Writes model.h5 collectively and returns the agreed error ("" on success). Every rank
// makes the same collective HDF5 calls whatever its own writes did: errors are agreed on
// before the collective flush and again before the close.
std::string write_model_file(const std::string& file, const CheckpointState& state,
                             const std::vector<std::pair<std::string, Shape>>& list,
                             const std::vector<uint32_t>& crc, ParamStore& store, const float* values,
                             const float* m_flat, const float* v_flat, const RankGrid& grid,
                             Communicator& world, const fs::path& reserve) {
  QuietHdf5Errors quiet;
  H5Handle fapl(make_checksummed_fapl(), H5Pclose);
  BRAID_CHECK_H5(H5Pset_fapl_mpio(fapl.get(), control_comm(world), MPI_INFO_NULL));
  maybe_die_during_save(state.step, /*at_open=*/true);
  const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  std::string err = f < 0 ? "cannot create " + file + ": " + hdf5_error_detail() : "";
  std::map<std::string, H5Handle> dsets;
  if (f >= 0) {
    try {
      // Metadata (attributes, groups, datasets) is created identically on every rank.
      const int64_t ints[5] = {kCheckpointFormatVersion, state.step, state.data_position,
                               int64_t(state.seed), state.optimizer_steps};
      const char* int_names[5] = {"format_version", "step", "data_position", "seed", "optimizer_steps"};
      for (int i = 0; i < 5; ++i) write_attr(f, int_names[i], H5T_STD_I64LE, H5T_NATIVE_INT64, &ints[i]);
      write_attr_str(f, "config", state.config.dump());
      const size_t n = list.size();
      for (int g = 0; g < 3; ++g) {
        H5Handle gid(BRAID_CHECK_H5(H5Gcreate2(f, kCheckpointGroups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                     H5Gclose);
        for (size_t i = 0; i < n; ++i) {
          H5Handle sp = make_space(list[i].second);
          H5Handle d(BRAID_CHECK_H5(H5Dcreate2(gid.get(), list[i].first.c_str(), H5T_IEEE_F32LE, sp.get(),
                                               H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                     H5Dclose);
          write_attr(d.get(), "crc32", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc[g * n + i]);
          dsets[dataset_path(g, list[i].first)] = std::move(d);
        }
      }
    } catch (const std::exception& e) {
      err = "creating the datasets of " + file + " failed: " + e.what();
    }
  }
  // The metadata goes to disk before any raw data, into the room reserved for it at the
  // start of the save (released just now): a write that fails later (disk full, quota)
  // then leaves HDF5 only metadata to rewrite in place when the file is closed. (A close
  // that fails for want of space leaves HDF5 1.10 half torn down: it crashes at exit, and
  // a metadata write failing on one rank can stall the others inside HDF5.)
  if (world.rank() == 0) ::unlink(reserve.c_str());
  err = first_error(world, err);
  if (f >= 0 && err.empty() && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
    err = "writing the metadata of " + file + " failed: " + hdf5_error_detail();
  err = first_error(world, err);
  if (f >= 0 && err.empty()) {
    // Raw data: independent writes of the slices this rank owns.
    try {
      for (const Param& p : store.params()) {
        if (!err.empty() || grid.dp_rank != 0) break;
        if (!holds_canonical_slice(p.spec, grid)) continue;
        const float* srcs[3] = {values + p.flat_offset, m_flat + p.flat_offset, v_flat + p.flat_offset};
        for (int g = 0; g < 3 && err.empty(); ++g) {
          const std::string ds = dataset_path(g, p.spec.name);
          hid_t d = dsets.at(ds).get();
          H5Handle mem = make_space(p.spec.local_shape());
          H5Handle fsp(BRAID_CHECK_H5(H5Dget_space(d)), H5Sclose);
          if (select_slice(p.spec, mem.get(), fsp.get()) &&
              H5Dwrite(d, H5T_NATIVE_FLOAT, mem.get(), fsp.get(), H5P_DEFAULT, srcs[g]) < 0)
            err = "writing " + ds + " to " + file + " failed: " + hdf5_error_detail();
        }
      }
    } catch (const std::exception& e) {
      err = "writing " + file + " failed: " + e.what();
    }
  }
  maybe_die_during_save(state.step, /*at_open=*/false);
  dsets.clear();
  err = first_error(world, err);
  // Flush: MPI_File_sync on every rank, so every node's writes reach the disk.
  if (f >= 0 && err.empty() && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
    err = "flushing " + file + " failed: " + hdf5_error_detail();
  err = first_error(world, err);
  if (f >= 0 && H5Fclose(f) < 0 && err.empty()) err = "closing " + file + " failed: " + hdf5_error_detail();
  return err;
}

// The message every rank reports when a save fails; removes the partial directory (rank 0).
std::string save_failure(const fs::path& root, const fs::path& tmp, const std::string& name,
                         const std::string& error, int64_t checkpoint_bytes) {
  const int64_t free = free_bytes(root);  // before the partial checkpoint is removed
  const bool partial = fs::exists(tmp);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  std::string msg = "saving checkpoint " + name + " in " + root.string() + " failed: " + error;
  if (free >= 0) {
    msg += " (" + std::to_string(free) + " bytes free on that file system";
    if (free < checkpoint_bytes)
      msg += ", the checkpoint needs about " + std::to_string(checkpoint_bytes) + ": the disk is full or the quota is exhausted";
    msg += ")";
  }
  std::string previous;
  std::ifstream latest(root / "latest");
  std::getline(latest, previous);
  if (partial)
    msg += ec ? "; the partial checkpoint " + tmp.string() + " could not be removed" : "; the partial checkpoint was removed";
  msg += previous.empty() ? ", and there is no earlier checkpoint" : "; the previous checkpoint (" + previous + ") is intact";
  return msg;
}

}  // namespace

std::string save_checkpoint(const std::string& out_dir, const CheckpointState& state,
                            ParamStore& store, Optimizer& opt, ProcessGroups& groups,
                            const ModelConfig& model, int64_t keep_last) {
  Communicator& world = *groups.world;
  const RankGrid& grid = groups.grid;
  const fs::path root = fs::path(out_dir) / "checkpoints";
  const std::string name = checkpoint_dir_name(state.step);
  const fs::path tmp = root / (name + ".tmp");
  const fs::path final_dir = root / name;
  const auto list = full_param_list(model);
  const size_t n = list.size();
  // The whole save is one blocking call in the ledger: parallel HDF5 synchronises the ranks
  // inside (file close is a barrier), so a rank lost during a save would otherwise hang the
  // others where no communicator of ours could see it; the watchdog times this call out.
  auto ledger_call = record_host_call(world, "checkpoint_save", int64_t(n), "tensors");
  // A generous bound of HDF5's metadata (about 400 bytes per dataset are written).
  const int64_t metadata_bytes = (int64_t{64} << 10) + 3 * int64_t(n) * 1024;
  int64_t checkpoint_bytes = metadata_bytes;
  for (const auto& [pname, shape] : list) checkpoint_bytes += 3 * shape_numel(shape) * int64_t(sizeof(float));
  const fs::path reserve = tmp / ".metadata_reserve";
  std::string space_error;
  rank0_collective(world, [&] {
    fs::create_directories(root);
    remove_partial_checkpoints(root);  // what a crash in an earlier save left
    // Refuse before writing when the disk cannot hold the checkpoint (quotas are not
    // visible here: a write that fails later is handled in write_model_file).
    const int64_t free = free_bytes(root);
    if (free >= 0 && free < checkpoint_bytes && std::getenv("BRAID_TEST_SKIP_SPACE_CHECK") == nullptr) {
      space_error = save_failure(root, tmp, name, "not enough free space, nothing was written", checkpoint_bytes);
      return;
    }
    fs::create_directories(tmp);
    // Room for the metadata, allocated now (quotas count it) and released just before the
    // metadata is written. File systems without fallocate get no reservation.
    const int fd = ::open(reserve.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int rc = fd >= 0 ? ::posix_fallocate(fd, 0, metadata_bytes) : errno;
    if (fd >= 0) ::close(fd);
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL && rc != ENOSYS)
      space_error = save_failure(root, tmp, name, "cannot reserve room for the metadata (" + errno_text(rc) +
                                                      "), nothing was written", checkpoint_bytes);
  });
  broadcast_string(world, space_error, 0);
  if (!space_error.empty()) throw InputError(space_error);

  // Collective: complete moments on every replica (ZeRO-1 all-gathers its shards).
  std::vector<float> m_flat, v_flat;
  opt.gather_moments(m_flat, v_flat);
  Tensor host = store.host_values();  // device parameters are written from a host copy

  // Checksums: each writer's share of every tensor's crc32, XOR-combined over the world.
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < n; ++i) index[list[i].first] = i;
  std::vector<uint32_t> crc(3 * n, 0);
  std::vector<int64_t> covered(3 * n, 0);
  if (grid.dp_rank == 0) {
    for (const Param& p : store.params()) {
      if (!holds_canonical_slice(p.spec, grid)) continue;
      const float* srcs[3] = {host.f32() + p.flat_offset, m_flat.data() + p.flat_offset,
                              v_flat.data() + p.flat_offset};
      const SliceGeometry geo = slice_geometry(p.spec);
      const size_t i = index.at(p.spec.name);
      for (int g = 0; g < 3; ++g) {
        crc[g * n + i] ^= slice_crc32(srcs[g], geo);
        covered[g * n + i] += slice_numel(geo);
      }
    }
  }
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, crc.data(), int(crc.size()), MPI_UINT32_T, MPI_BXOR,
                                control_comm(world)));
  all_reduce_int64(world, covered.data(), int(covered.size()));
  for (size_t k = 0; k < 3 * n; ++k) {
    // The XOR combination is the tensor's crc32 only if the written slices tile it.
    BRAID_CHECK(covered[k] == shape_numel(list[k % n].second),
                "the saved slices of " << list[k % n].first << " cover " << covered[k] << " of "
                                       << shape_numel(list[k % n].second) << " elements");
  }

  const std::string file = (tmp / "model.h5").string();
  std::string err;
  try {
    err = write_model_file(file, state, list, crc, store, host.f32(), m_flat.data(), v_flat.data(), grid, world,
                           reserve);
  } catch (const std::exception& e) {
    err = e.what();
  }
  err = first_error(world, err);
  if (!err.empty()) {
    std::string msg;
    if (world.rank() == 0) msg = save_failure(root, tmp, name, err, checkpoint_bytes);
    broadcast_string(world, msg, 0);
    throw InputError(msg);
  }

  // Publish (rank 0): manifest, flush, rename, latest pointer, --keep-last.
  std::string publish_error;
  if (world.rank() == 0) {
    try {
      nlohmann::json man;
      man["format_version"] = kCheckpointFormatVersion;
      man["step"] = state.step;
      man["data_position"] = state.data_position;
      man["seed"] = state.seed;
      man["optimizer_steps"] = state.optimizer_steps;
      man["config"] = state.config;
      man["world"] = {{"tp", grid.tp}, {"pp", grid.pp}, {"dp", grid.dp}};
      for (int g = 0; g < 3; ++g)
        for (size_t i = 0; i < n; ++i) man["crc32"][dataset_path(g, list[i].first)] = crc[g * n + i];
      write_text_file(tmp / "manifest.json", man.dump(1) + "\n");
      fsync_file(file);
      fsync_dir(tmp);
      std::error_code ec;
      fs::remove_all(final_dir, ec);  // re-saving the same step replaces it
      fs::rename(tmp, final_dir);
      fsync_dir(root);
    } catch (const std::exception& e) {
      publish_error = save_failure(root, tmp, name, e.what(), checkpoint_bytes);
    }
    if (publish_error.empty()) {
      try {
        write_text_atomic(root / "latest", name + "\n");
      } catch (const std::exception& e) {
        // The checkpoint is complete: --resume auto finds it without the pointer.
        publish_error = "checkpoint " + final_dir.string() + " was saved but updating " +
                        (root / "latest").string() + " failed: " + e.what();
      }
    }
    if (publish_error.empty()) {
      // --keep-last: delete the oldest complete checkpoints beyond the limit.
      std::vector<std::string> all;
      for (auto& e : fs::directory_iterator(root)) {
        const std::string d = e.path().filename().string();
        if (parse_checkpoint_dir_name(d, nullptr) && is_real_directory(e.path())) all.push_back(d);
      }
      std::sort(all.begin(), all.end());
      for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i) {
        std::error_code ec;
        if (all[i] != name) fs::remove_all(root / all[i], ec);
      }
    }
  }
  broadcast_string(world, publish_error, 0);
  if (!publish_error.empty()) throw InputError(publish_error);
  return final_dir.string();
}

std::string find_latest_checkpoint(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::is_directory(root)) return "";
  // Complete checkpoints: renamed into place only after their data and manifest were flushed.
  int64_t newest = -1;
  std::string newest_name;
  for (auto& e : fs::directory_iterator(root)) {
    const std::string d = e.path().filename().string();
    int64_t step = 0;
    if (parse_checkpoint_dir_name(d, &step) && is_real_directory(e.path()) &&
        fs::exists(e.path() / "manifest.json") && step > newest) {
      newest = step;
      newest_name = d;
    }
  }
  const fs::path latest = root / "latest";
  if (!fs::exists(fs::symlink_status(latest))) return newest < 0 ? "" : (root / newest_name).string();
  BRAID_REQUIRE(fs::is_regular_file(fs::symlink_status(latest)),
                latest.string() << " should be a regular file naming the newest checkpoint");
  const std::string name = parse_latest_pointer(read_small_file(latest, 256, "checkpoint pointer"), latest.string());
  const fs::path dir = root / name;  // a plain name: stays inside the checkpoint directory
  BRAID_REQUIRE(is_real_directory(dir),
                latest.string() << " names " << name << ", which is not a checkpoint directory in "
                                << root.string() << " (remove the pointer to resume from the newest "
                                   "complete checkpoint)");
  int64_t step = 0;
  parse_checkpoint_dir_name(name, &step);
  // A crash between a checkpoint's rename and the pointer update leaves a newer complete one.
  return (newest > step ? root / newest_name : dir).string();
}

namespace {
CheckpointManifest read_manifest(const std::string& dir) {
  const fs::path mp = fs::path(dir) / "manifest.json";
  BRAID_REQUIRE(fs::is_directory(dir), "checkpoint " << dir << " does not exist");
  BRAID_REQUIRE(fs::exists(mp), "checkpoint " << dir << " has no manifest.json (incomplete or not a Braid checkpoint)");
  return parse_checkpoint_manifest(read_small_file(mp, kMaxManifestBytes, "checkpoint manifest"), mp.string());
}

// Header facts of every expected dataset of model.h5, without reading data.
std::vector<StoredTensor> inspect_model_file(hid_t f, const std::vector<std::pair<std::string, Shape>>& list) {
  std::vector<StoredTensor> out;
  for (int g = 0; g < 3; ++g) {
    const bool group_ok = H5Lexists(f, kCheckpointGroups[g], H5P_DEFAULT) > 0;
    for (const auto& [name, shape] : list) {
      StoredTensor t;
      const std::string ds = dataset_path(g, name);
      if (group_ok && H5Lexists(f, ds.c_str(), H5P_DEFAULT) > 0) {
        H5Handle d(H5Dopen2(f, ds.c_str(), H5P_DEFAULT), H5Dclose);
        if (d.valid()) {
          t.found = true;
          H5Handle type(H5Dget_type(d.get()), H5Tclose), space(H5Dget_space(d.get()), H5Sclose),
              dcpl(H5Dget_create_plist(d.get()), H5Pclose);
          t.float32_le = type.valid() && H5Tequal(type.get(), H5T_IEEE_F32LE) > 0;
          const int nd = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
          if (nd >= 0 && nd <= H5S_MAX_RANK) {
            std::vector<hsize_t> dims(size_t(nd) + 1);
            if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) == nd)
              t.dims.assign(dims.begin(), dims.begin() + nd);
          }
          t.contiguous = dcpl.valid() && H5Pget_layout(dcpl.get()) == H5D_CONTIGUOUS;
          t.storage_bytes = H5Dget_storage_size(d.get());
          const haddr_t off = t.contiguous ? H5Dget_offset(d.get()) : HADDR_UNDEF;
          t.file_offset = off == HADDR_UNDEF ? ~uint64_t(0) : uint64_t(off);
          t.crc = read_attr_i64(d.get(), "crc32");
          t.has_crc = H5Aexists(d.get(), "crc32") > 0;
        }
      }
      out.push_back(std::move(t));
    }
  }
  return out;
}
}  // namespace

nlohmann::json read_checkpoint_manifest(const std::string& dir) {
  CheckpointManifest man = read_manifest(dir);
  const fs::path file = fs::path(dir) / "model.h5";
  BRAID_REQUIRE(fs::is_regular_file(file), "checkpoint " << dir << " has no model.h5");
  check_model_fits_file(man.model, fs::file_size(file), file.string());
  return man.json;
}

CheckpointState load_checkpoint(const std::string& dir, ParamStore& store, Optimizer* opt,
                                ProcessGroups& groups, const ModelConfig& model) {
  Communicator& world = *groups.world;
  const auto list = full_param_list(model);
  const size_t n = list.size();
  auto ledger_call = record_host_call(world, "checkpoint_load", int64_t(n), "tensors");  // as in a save
  const std::string file = (fs::path(dir) / "model.h5").string();
  const std::string manifest_file = (fs::path(dir) / "manifest.json").string();
  // Rank 0 validates the manifest, the model and every dataset's header; all ranks share
  // the verdict. Nothing is read or allocated from the file before this passes.
  std::string man_text;
  rank0_collective(world, [&] {
    QuietHdf5Errors quiet;
    CheckpointManifest man = read_manifest(dir);
    auto expect = [&](int64_t saved, int64_t have, const char* flag) {
      BRAID_REQUIRE(saved == have, "checkpoint " << dir << " was trained with " << flag << " " << saved
                                                 << " but this run has " << flag << " " << have
                                                 << " (the model must match to resume)");
    };
    expect(man.model.n_layer, model.n_layer, "--layers");
    expect(man.model.n_head, model.n_head, "--heads");
    expect(man.model.n_embd, model.n_embd, "--width");
    expect(man.model.seq_len, model.seq_len, "--seq-len");
    expect(man.model.vocab_size, model.vocab_size, "--vocab-size (the dataset vocabulary)");
    BRAID_REQUIRE(fs::is_regular_file(file), "checkpoint " << dir << " has no model.h5");
    const uint64_t file_bytes = fs::file_size(file);
    BRAID_REQUIRE(H5Fis_hdf5(file.c_str()) > 0,
                  "checkpoint " << dir << " is corrupt: " << file << " is not an HDF5 file");
    H5Handle f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    BRAID_REQUIRE(f.valid(), "checkpoint " << dir << " is corrupt: cannot open " << file << " ("
                                           << hdf5_error_detail() << ")");
    for (const char* key : {"step", "data_position"}) {
      const int64_t in_file = read_attr_i64(f.get(), key);
      const int64_t in_manifest = key[0] == 's' ? man.step : man.data_position;
      BRAID_REQUIRE(in_file == in_manifest, "checkpoint " << dir << " is inconsistent: model.h5 has " << key
                                                          << " " << in_file << " but manifest.json has "
                                                          << key << " " << in_manifest << " (the files do not belong together)");
    }
    validate_stored_tensors(list, inspect_model_file(f.get(), list), file_bytes, man, file);
    man_text = man.json.dump();
  });
  broadcast_string(world, man_text, 0);
  const CheckpointManifest man = parse_checkpoint_manifest(man_text, manifest_file);

  // Every rank reads its own slices (independent reads) and checksums the canonical ones.
  std::vector<float> m_flat(size_t(store.flat_size()), 0.f), v_flat(size_t(store.flat_size()), 0.f);
  Tensor host = store.host_values();
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < n; ++i) index[list[i].first] = i;
  std::vector<uint32_t> crc(3 * n, 0);
  run_collectively(world, [&] {
    QuietHdf5Errors quiet;
    H5Handle f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    BRAID_REQUIRE(f.valid(), "checkpoint " << dir << " is corrupt: cannot open " << file << " ("
                                           << hdf5_error_detail() << ")");
    for (Param& p : store.params()) {
      float* dsts[3] = {host.f32() + p.flat_offset, m_flat.data() + p.flat_offset, v_flat.data() + p.flat_offset};
      const size_t i = index.at(p.spec.name);
      for (int g = 0; g < 3; ++g) {
        const std::string ds = dataset_path(g, p.spec.name);
        H5Handle d(H5Dopen2(f.get(), ds.c_str(), H5P_DEFAULT), H5Dclose);
        BRAID_REQUIRE(d.valid(), "checkpoint " << dir << " is corrupt: cannot open " << ds << " in " << file);
        H5Handle mem = make_space(p.spec.local_shape());
        H5Handle fsp(BRAID_CHECK_H5(H5Dget_space(d.get())), H5Sclose);
        if (!select_slice(p.spec, mem.get(), fsp.get())) continue;
        BRAID_REQUIRE(H5Dread(d.get(), H5T_NATIVE_FLOAT, mem.get(), fsp.get(), H5P_DEFAULT, dsts[g]) >= 0,
                      "checkpoint " << dir << " is corrupt: reading " << ds << " from " << file
                                    << " failed (" << hdf5_error_detail() << ")");
        if (holds_canonical_slice(p.spec, groups.grid)) crc[g * n + i] ^= slice_crc32(dsts[g], slice_geometry(p.spec));
      }
    }
  });
  // Each replica (the tp x pp ranks of one dp index) holds every tensor once: its XOR of
  // shares is the crc32 of what it read.
  BRAID_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, crc.data(), int(crc.size()), MPI_UINT32_T, MPI_BXOR,
                                control_comm(*groups.mp)));
  int64_t bad = -int64_t(3 * n);
  for (size_t k = 0; k < 3 * n; ++k) {
    const std::string ds = dataset_path(int(k / n), list[k % n].first);
    if (crc[k] != man.crc32.at(ds)) {
      bad = -int64_t(k);
      break;
    }
  }
  all_reduce_int64(world, &bad, 1, ReduceOp::Max);  // the first bad dataset of any replica
  if (-bad < int64_t(3 * n)) {
    const size_t k = size_t(-bad);
    const std::string ds = dataset_path(int(k / n), list[k % n].first);
    char want[16];
    std::snprintf(want, sizeof(want), "0x%08x", man.crc32.at(ds));
    throw InputError("checkpoint " + dir + " is corrupt: dataset " + ds + " of model.h5 fails its crc32 check "
                     "(the checkpoint records " + want + "; the data changed after it was written)");
  }
  store.set_values(host);
  CheckpointState st;
  st.step = man.step;
  st.data_position = man.data_position;
  st.seed = man.seed;
  st.optimizer_steps = man.optimizer_steps;
  st.config = man.config;
  if (opt) {
    opt->set_moments(m_flat, v_flat);
    opt->set_steps_taken(st.optimizer_steps);
  }
  world.barrier();
  return st;
}

}  // namespace braid
