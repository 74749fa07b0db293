// Errors: one check-macro family for plain invariants and every library Braid calls
// (MPI, HDF5, CUDA, cuBLAS, cuDNN, NCCL). Each failure throws braid::Error carrying the
// library, the return code, the expression, file:line and the rank prefix that the entry
// point sets ("[rank 5/16 tp1 dp0 pp1 host=...]"). Library code never calls exit(): the
// entry point catches once and decides how the world stops.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace braid {

// Set once by the entry point after the rank grid is known; ops/ knows nothing of ranks.
void set_error_prefix(const std::string& prefix);
const std::string& error_prefix();

class Error : public std::runtime_error {
 public:
  Error(std::string library, long code, std::string what_msg)
      : std::runtime_error(std::move(what_msg)), library_(std::move(library)), code_(code) {}
  const std::string& library() const { return library_; }
  long code() const { return code_; }

 private:
  std::string library_;
  long code_;
};

// A bad input from the user (file, flag, config). The message is meant to be read by a
// person: it names the file or flag and what was expected, without source locations.
class InputError : public Error {
 public:
  explicit InputError(const std::string& msg) : Error("input", 1, msg) {}
};

// Not the user's input, but a verdict that every rank reached together (for instance a
// run whose loss stays non-finite after a rollback): the entry point prints it on every
// rank and exits with exit_code, without aborting the job.
class CollectiveError : public Error {
 public:
  CollectiveError(const std::string& msg, int exit_code) : Error("braid", exit_code, msg), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

[[noreturn]] void throw_error(const char* library, long code, const char* expr,
                              const char* file, int line, const std::string& detail);

}  // namespace braid

// Internal invariant: a failure is a bug or an unsupported use, reported with file:line.
#define BRAID_CHECK(cond, msg)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::ostringstream braid_os_;                                                   \
      braid_os_ << msg;                                                               \
      ::braid::throw_error("braid", 0, #cond, __FILE__, __LINE__, braid_os_.str());   \
    }                                                                                 \
  } while (0)

// User input validation: throws InputError with just the message.
#define BRAID_REQUIRE(cond, msg)                \
  do {                                          \
    if (!(cond)) {                              \
      std::ostringstream braid_os_;             \
      braid_os_ << msg;                         \
      throw ::braid::InputError(braid_os_.str()); \
    }                                           \
  } while (0)

// HDF5 calls return a negative herr_t/hid_t on failure. Evaluates `call` once.
#define BRAID_CHECK_H5(call)                                                          \
  ([&]() {                                                                            \
    auto braid_r_ = (call);                                                           \
    if (braid_r_ < 0) ::braid::throw_error("HDF5", static_cast<long>(braid_r_), #call,\
                                           __FILE__, __LINE__, "");                   \
    return braid_r_;                                                                  \
  }())
