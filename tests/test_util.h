// Shared helpers of Braid's tests: a deterministic token dataset in a temporary
// directory, running the trainer in-process on a sub-communicator of the world, and
// reading checkpoint tensors back as full logical tensors.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "framework/checkpoint.h"
#include "framework/dataset.h"
#include "framework/trainer.h"

namespace braid::test {

inline int world_size() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}
inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A train/val dataset of random tokens in [0, vocab) with some repeated structure so
// that the loss falls. Written by world rank 0; everyone waits.
inline std::string make_token_dataset(const std::string& name, int64_t vocab, int64_t n_train,
                                      int64_t n_val, uint64_t seed = 7) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir = (std::filesystem::temp_directory_path() / ("braid_test_" + name)).string();
  if (rank == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::mt19937_64 rng(seed);
    auto make = [&](int64_t n) {
      std::vector<uint32_t> t(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)  // a noisy counting pattern: learnable, not trivial
        t[size_t(i)] = (i > 0 && rng() % 4 != 0) ? uint32_t((t[size_t(i - 1)] + 1) % vocab)
                                                 : uint32_t(rng() % vocab);
      return t;
    };
    auto tr = make(n_train), va = make(n_val);
    std::vector<int64_t> docs{0};
    write_token_shard(dir + "/train_000000.h5", tr, docs, vocab, "byte");
    write_token_shard(dir + "/val_000000.h5", va, docs, vocab, "byte");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

inline std::string temp_dir(const std::string& name) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string dir = (std::filesystem::temp_directory_path() / ("braid_test_" + name)).string();
  if (rank == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

struct RunResult {
  std::vector<double> losses;
  std::string checkpoint;  // last checkpoint directory
  // Rank 0's data-plane groups of more than one rank, by name after the trainer chose
  // their transport ("pp/nccl" when NCCL carries them), space-separated.
  std::string data_plane;
};

// Runs `cfg` on the first `ranks` ranks of the world (the others skip); returns on every
// rank, results valid on the participating ranks (and broadcast to all of the world).
inline RunResult run_on_ranks(const TrainConfig& cfg, int ranks) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm sub;
  MPI_Comm_split(MPI_COMM_WORLD, rank < ranks ? 0 : MPI_UNDEFINED, rank, &sub);
  RunResult r;
  std::string err;
  if (sub != MPI_COMM_NULL) {
    try {
      ProcessGroups groups = make_process_groups(sub, cfg.tp, cfg.pp);
      Trainer t(cfg, groups);
      t.init_or_resume();
      t.train();
      r.losses = t.losses();
      r.checkpoint = find_latest_checkpoint(cfg.out_dir);
      for (auto* g : {&groups.tp, &groups.pp, &groups.dp})
        if ((*g)->size() > 1) r.data_plane += (*g)->name() + " ";
    } catch (const std::exception& e) {
      err = e.what();
    }
    MPI_Comm_free(&sub);
  }
  // Share rank 0's result (and any error) with the whole world.
  int n = int(r.losses.size());
  MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
  r.losses.resize(size_t(n));
  MPI_Bcast(r.losses.data(), n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  int len = int(err.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  err.resize(size_t(len));
  MPI_Bcast(err.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  int clen = int(r.checkpoint.size());
  MPI_Bcast(&clen, 1, MPI_INT, 0, MPI_COMM_WORLD);
  r.checkpoint.resize(size_t(clen));
  MPI_Bcast(r.checkpoint.data(), clen, MPI_CHAR, 0, MPI_COMM_WORLD);
  int dlen = int(r.data_plane.size());
  MPI_Bcast(&dlen, 1, MPI_INT, 0, MPI_COMM_WORLD);
  r.data_plane.resize(size_t(dlen));
  MPI_Bcast(r.data_plane.data(), dlen, MPI_CHAR, 0, MPI_COMM_WORLD);
  if (!err.empty()) throw std::runtime_error(err);
  return r;
}

// Full logical tensor `group/name` ("params", "adam_m", "adam_v") of a checkpoint.
// Overwrites an existing int64 attribute of a file's root group (forging headers in tests).
inline void set_int64_attribute(const std::string& path, const char* name, int64_t value) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
  H5Awrite(attr, H5T_NATIVE_INT64, &value);
  H5Aclose(attr);
  H5Fclose(file);
}

inline std::vector<float> read_checkpoint_tensor(const std::string& dir, const std::string& group,
                                                 const std::string& name) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen((dir + "/model.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw std::runtime_error("cannot open " + dir + "/model.h5");
  hid_t d = H5Dopen2(f, ("/" + group + "/" + name).c_str(), H5P_DEFAULT);
  if (d < 0) {
    H5Fclose(f);
    throw std::runtime_error("no dataset " + group + "/" + name + " in " + dir);
  }
  hid_t s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  std::vector<float> v(static_cast<size_t>(n));
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Sclose(s);
  H5Dclose(d);
  H5Fclose(f);
  return v;
}

}  // namespace braid::test
