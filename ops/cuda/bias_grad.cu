// The bias gradient of a linear layer, dbias[OC] += sum_n dout[n, :], as a deterministic
// two-pass column sum (column_reduce.cuh).
#include "ops/cuda/column_reduce.cuh"
#include "ops/cuda/cuda_ops.h"

namespace braid::cuda {

size_t bias_backward_scratch_bytes(int64_t N, int OC) {
  return size_t(column_chunks(N)) * size_t(OC) * sizeof(float);
}

void bias_backward(float* dbias, void* scratch, const bf16* dout, int64_t N, int OC,
                   cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  BRAID_CHECK(scratch != nullptr, "bias_backward needs scratch (bias_backward_scratch_bytes)");
  column_sums<false>(dbias, nullptr, static_cast<float*>(scratch), nullptr, dout, nullptr,
                     nullptr, nullptr, N, OC, stream);
}

}  // namespace braid::cuda
