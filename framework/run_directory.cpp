#include "framework/run_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "ops/check.h"

namespace fs = std::filesystem;

namespace braid {

void prepare_output_directory(const std::string& dir, int rank) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  BRAID_REQUIRE(!ec && fs::is_directory(dir), "cannot create the output directory " << dir << ": "
                                                  << (ec ? ec.message() : "it exists and is not a directory"));
  // A probe file per rank and process, removed at once.
  const fs::path probe = fs::path(dir) / (".braid_write_probe." + std::to_string(rank) + "." + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const int open_err = errno;
  BRAID_REQUIRE(fd >= 0, "the output directory " << dir << " is not writable: " << std::strerror(open_err));
  const bool wrote = ::write(fd, "x", 1) == 1;
  const int write_err = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  BRAID_REQUIRE(wrote, "cannot write to the output directory " << dir << ": " << std::strerror(write_err));
}

}  // namespace braid
