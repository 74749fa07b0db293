// The CUDA-side members of Braid's check-macro family (ops/check.h): one generic status
// check, specialised in one line per library. Each evaluates its call once and, on failure,
// throws braid::Error through braid::throw_error with the library, the numeric code, the
// call as written, file:line and the library's own description (plus the rank prefix that
// the entry point set). Kernel launches are checked with BRAID_CHECK_LAUNCH() right after
// the <<<...>>>: it reports a bad configuration at the launch site, not at the next sync.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "ops/check.h"

namespace braid::cuda {

inline std::string cuda_status_detail(cudaError_t s) {
  // A failed runtime call also sets the thread's "last error"; clear it (sticky errors stay)
  // so that the next launch check does not report this failure a second time.
  (void)cudaGetLastError();
  return cudaGetErrorString(s);
}
inline std::string cublas_status_detail(cublasStatus_t s) { return cublasLtGetStatusString(s); }
inline std::string cudnn_status_detail(cudnnStatus_t s) {
  // cuDNN 9 keeps a thread-local message that names the failing descriptor or attribute.
  char last[512] = {0};
  cudnnGetLastErrorString(last, sizeof(last));
  std::string d = cudnnGetErrorString(s);
  if (last[0] != '\0') d += std::string(" (") + last + ")";
  return d;
}

}  // namespace braid::cuda

// `call` is evaluated exactly once; `expr` is its spelling for the message.
#define BRAID_CHECK_STATUS_(library, call, expr, ok, detail_fn)                           \
  do {                                                                                    \
    const auto braid_status_ = (call);                                                    \
    if (braid_status_ != (ok))                                                            \
      ::braid::throw_error(library, static_cast<long>(braid_status_), expr, __FILE__,     \
                           __LINE__, ::braid::cuda::detail_fn(braid_status_));            \
  } while (0)

#define BRAID_CHECK_CUDA(call) \
  BRAID_CHECK_STATUS_("CUDA", call, #call, cudaSuccess, cuda_status_detail)
#define BRAID_CHECK_CUBLAS(call) \
  BRAID_CHECK_STATUS_("cuBLAS", call, #call, CUBLAS_STATUS_SUCCESS, cublas_status_detail)
#define BRAID_CHECK_CUDNN(call) \
  BRAID_CHECK_STATUS_("cuDNN", call, #call, CUDNN_STATUS_SUCCESS, cudnn_status_detail)
// After a kernel launch: configuration errors (too many threads, too much shared memory)
// surface here; faults inside the kernel surface at the next synchronising call.
#define BRAID_CHECK_LAUNCH() \
  BRAID_CHECK_STATUS_("CUDA", cudaGetLastError(), "kernel launch", cudaSuccess, cuda_status_detail)
