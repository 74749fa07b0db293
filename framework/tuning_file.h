// The file of a rank's autotuned kernel choices (OUT/tuning/gemm-algos.rank<R>.json), so
// that a resumed run takes the kernels of the run it continues (bit-for-bit resume):
//   {"format": "braid-gemm-algos", "version": 1, "environment": "<GPU model, SMs, cuBLASLt
//    version>", "records": [{"config": [int, ...], "algo": [8 x uint64]}, ...]}
// A record's config names one GEMM configuration (shape, leading dimensions, types,
// epilogue, operand alignments, SM target); algo is cuBLASLt's opaque algorithm struct,
// valid only for the environment it was written in. Plain C++ (no CUDA), so that the
// format and its failure modes are tested on the CPU.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace braid {

struct TuningRecord {
  std::vector<int64_t> config;
  std::array<uint64_t, 8> algo{};
};

// The records of `path` when it was written for `environment`. A missing file gives none
// and no warning; an unreadable, malformed or foreign file (other format, version or
// environment) gives none and a warning naming the file and what is wrong (the choices
// are then made again: nothing is lost but the bits of a resume).
std::vector<TuningRecord> read_tuning_file(const std::string& path, const std::string& environment,
                                           std::string* warning);

// Writes `records` to `path` atomically (a temporary file renamed over it, the directory
// created if needed). Returns an empty string, or what failed.
std::string write_tuning_file(const std::string& path, const std::string& environment,
                              const std::vector<TuningRecord>& records);

}  // namespace braid
