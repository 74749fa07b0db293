// MPI member of the check-macro family (ops/check.h): evaluates the call once and throws
// braid::Error with MPI's error string, file:line and the rank prefix on failure.
#pragma once
#include <mpi.h>

#include <string>

#include "ops/check.h"

namespace braid {
inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, len);
}
}  // namespace braid

#define BRAID_CHECK_MPI(call)                                                          \
  do {                                                                                 \
    int braid_mpi_rc_ = (call);                                                        \
    if (braid_mpi_rc_ != MPI_SUCCESS)                                                  \
      ::braid::throw_error("MPI", braid_mpi_rc_, #call, __FILE__, __LINE__,            \
                           ::braid::mpi_error_string(braid_mpi_rc_));                  \
  } while (0)
