#include "ops/check.h"

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
  throw Error(library, code, os.str());
}
}  // namespace braid
