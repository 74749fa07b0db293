#include "ops/check.h"

#include <execinfo.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace braid {
namespace {
std::string& prefix_storage() {
  static std::string prefix;
  return prefix;
}
}  // namespace

void set_error_prefix(const std::string& prefix) { prefix_storage() = prefix; }
const std::string& error_prefix() { return prefix_storage(); }

void throw_error(const char* library, long code, const char* expr, const char* file, int line,
                 const std::string& detail) {
  std::ostringstream os;
  if (!error_prefix().empty()) os << error_prefix() << " ";
  os << library << " error";
  if (code != 0) os << " " << code;
  os << " at " << file << ":" << line << ": " << expr;
  if (!detail.empty()) os << ": " << detail;
  if (std::getenv("BRAID_BACKTRACE")) {  // debugging aid: where the error was raised
    void* frames[48];
    int n = backtrace(frames, 48);
    std::fprintf(stderr, "%s\n", os.str().c_str());
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
  }
  throw Error(library, code, os.str());
}
}  // namespace braid
