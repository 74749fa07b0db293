#include "framework/hdf5_util.h"

#include "ops/check.h"

namespace braid {
namespace {
herr_t keep_innermost(unsigned n, const H5E_error2_t* e, void* out) {
  // Walking upward, entry 0 is the innermost call.
  if (n == 0 && e->desc != nullptr) *static_cast<std::string*>(out) = e->desc;
  return 0;
}
}  // namespace

std::string hdf5_error_detail() {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &detail);
  return detail;
}

hid_t make_checksummed_fapl() {
  hid_t fapl = BRAID_CHECK_H5(H5Pcreate(H5P_FILE_ACCESS));
  BRAID_CHECK_H5(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST));
  return fapl;
}

}  // namespace braid
