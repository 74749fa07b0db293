// The compute backend of the model: the op interface of DESIGN "Two backends, one code
// path". The model (gpt.cpp) is written once against this interface; the tensor's device
// picks the implementation: CpuBackend (fp32 everywhere, ops/cpu/, the reference) or
// CudaBackend (bf16 activations and GEMM weights, fp32 master weights, gradients and
// statistics, ops/cuda/). Parameters are addressed by their index in the ParamStore so a
// backend can use the representation it needs (the CUDA one reads bf16 copies of GEMM
// weights). Conventions: outputs named `out`/`dinp` are overwritten unless the name says
// `accumulate`; parameter gradients always accumulate.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "framework/params.h"
#include "parallel/communicator.h"

namespace braid {

// Parameters updated asynchronously, beside the next step's forward (the overlapped
// optimizer step, Optimizer::set_overlap). Before an op reads or writes parameter i (its
// value, bf16 copy or gradient) the backend calls wait(i, stream): its compute stream then
// waits for i's update. wait_all: for every update. limiting(): the forward's GEMMs are
// to leave reserved_sms() SMs to the update: from begin_step() (called at the start of
// every training step, whether an update was enqueued or not) until the forward first
// touches a parameter of the group where the limit ends (set_overlap's gemm_limit; by
// default the last group). Keyed to the forward's position, not to what is pending, so a
// resumed run chooses the same GEMM kernels as the run it continues.
class ParamFence {
 public:
  virtual ~ParamFence() = default;
  virtual void wait(int param, void* stream) = 0;
  virtual void wait_all(void* stream) = 0;
  virtual void begin_step() = 0;
  virtual bool limiting() const = 0;
  virtual int reserved_sms() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;
  Tensor activation(Shape s) const { return Tensor::empty(std::move(s), activation_dtype(), device()); }
  Tensor activation_zeros(Shape s) const { return Tensor(std::move(s), activation_dtype(), device()); }
  Tensor stats(Shape s) const { return Tensor::empty(std::move(s), DType::F32, device()); }

  // Parameters live in `store`; the backend keeps any derived copies in sync (refresh()).
  virtual void bind(ParamStore& store) = 0;
  virtual void refresh_weights() = 0;  // after the optimizer or a checkpoint load

  virtual void embedding_forward(Tensor& out, const std::vector<int32_t>& tokens, int wte) = 0;
  virtual void embedding_backward(const Tensor& dout, const std::vector<int32_t>& tokens, int wte) = 0;
  virtual void position_forward(Tensor& x, int wpe, int B, int T, int pos_offset) = 0;
  virtual void position_backward(const Tensor& dx, int wpe, int B, int T, int pos_offset) = 0;
  virtual void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, int w, int b) = 0;
  // dinp += LN'(dout); dw, db accumulate. With dsum >= 0, that parameter's gradient also
  // accumulates the column sums of dinp after the update: the bias gradient of the linear
  // layer whose output gradient dinp is, in the same pass.
  virtual void layernorm_backward_accumulate(Tensor& dinp, const Tensor& dout, const Tensor& inp,
                                             int w, int b, const Tensor& mean, const Tensor& rstd,
                                             int dsum) = 0;
  // out[N,OC] = inp[N,IC] @ W^T (+ bias when bias >= 0); W is parameter `w` viewed [OC, IC].
  virtual void matmul_forward(Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC, int OC) = 0;
  // dinp (overwritten, may be undefined to skip) = dout @ W; dW += dout^T inp; dbias += sum dout.
  virtual void matmul_backward(Tensor* dinp, const Tensor& dout, const Tensor& inp, int w, int bias,
                               int64_t N, int IC, int OC) = 0;
  // The two halves of matmul_backward, so that the input gradient's TP reduction can run
  // while the weight gradient is computed: dinp = dout @ W; dW += dout^T inp, dbias += sum dout.
  virtual void matmul_backward_input(Tensor& dinp, const Tensor& dout, int w, int64_t N, int IC, int OC) = 0;
  virtual void matmul_backward_weight(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                                      int OC) = 0;
  virtual void bias_backward(const Tensor& dout, int bias, int64_t N, int C) = 0;
  // saved: whatever the backward needs (CPU: probabilities [B,NH,T,T]; CUDA: log-sum-exp).
  virtual void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int B, int T, int NH, int HS) = 0;
  virtual void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                  const Tensor& saved, int B, int T, int NH, int HS) = 0;
  virtual void gelu_forward(Tensor& out, const Tensor& inp) = 0;
  virtual void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) = 0;
  virtual void residual_forward(Tensor& out, const Tensor& a, const Tensor& b) = 0;
  // Fusions (one pass on the GPU; composed from the ops above by default):
  // residual = a + b; ln = LN(residual).
  virtual void residual_layernorm_forward(Tensor& residual, Tensor& ln, Tensor& mean, Tensor& rstd,
                                          const Tensor& a, const Tensor& b, int w, int bias) {
    residual_forward(residual, a, b);
    layernorm_forward(ln, mean, rstd, residual, w, bias);
  }
  // The backward of out = GELU(pre) @ W^T (+ bias) with inp = GELU(pre): dpre
  // (overwritten) = (dout @ W) * GELU'(pre); dW += dout^T inp; when bias >= 0, its
  // gradient += sum_n dout (on the GPU in the dW GEMM's epilogue); when pre_bias >= 0 (the
  // bias of the layer that produced pre), its gradient += sum_n dpre. On the GPU the GELU
  // derivative (and, where cuBLASLt offers it, that bias gradient) is in the dinp GEMM's
  // epilogue. dpre doubles as the GEMM's output, so no separate d(GELU out) exists.
  virtual void matmul_backward_gelu(Tensor& dpre, const Tensor& dout, const Tensor& inp, const Tensor& pre, int w,
                                    int bias, int pre_bias, int64_t N, int IC, int OC) {
    matmul_backward(&dpre, dout, inp, w, bias, N, IC, OC);
    gelu_backward(dpre, pre, dpre);  // elementwise, in place
    if (pre_bias >= 0) bias_backward(dpre, pre_bias, N, IC);
  }
  // pre = inp @ W^T + bias; out = GELU(pre) (GELU in the GEMM epilogue on the GPU).
  virtual void matmul_gelu_forward(Tensor& pre, Tensor& out, const Tensor& inp, int w, int bias,
                                   int64_t N, int IC, int OC) {
    matmul_forward(pre, inp, w, bias, N, IC, OC);
    gelu_forward(out, pre);
  }
  // Vocab-parallel cross-entropy over this rank's logits [N, Vl] (global ids from
  // vocab_start; ids >= vocab_real are padding), the TP group assembling the softmax.
  // Returns the sum of the N per-token losses; with `grad`, logits become dlogits * scale.
  virtual double cross_entropy(Tensor& logits, const std::vector<int32_t>& targets, int64_t N, int Vl,
                               int64_t vocab_start, int64_t vocab_real, Communicator& tp, bool grad,
                               float scale) = 0;
  // The chunked loss (Gpt::set_loss_chunk_bytes): a microbatch's targets are placed once
  // where the loss kernels read them (device memory on the GPU), each chunk of rows writes
  // its per-row losses into a view of one [N] f32 vector, and the host reads their sum
  // once per microbatch (one device synchronisation instead of one per chunk).
  virtual Tensor targets_tensor(const std::vector<int32_t>& targets) = 0;
  // cross_entropy over `n` rows with targets and per-row losses as tensors ([n] views).
  virtual void cross_entropy_rows(Tensor& logits, const Tensor& targets, Tensor& losses, int64_t n, int Vl,
                                  int64_t vocab_start, int64_t vocab_real, Communicator& tp, bool grad,
                                  float scale) = 0;
  virtual double sum_to_host(const Tensor& x) = 0;  // f32 vector, summed in double
  // Logits of one row as host floats (sampling).
  virtual std::vector<float> row_to_host(const Tensor& x, int64_t row, int64_t width) = 0;
  virtual void synchronize() {}
  // The bf16 copy of the flat parameters that the GEMMs read (refresh_weights writes it;
  // the optimizer may instead, Optimizer::set_bf16_copy); null on the CPU.
  virtual void* bf16_weight_copy() { return nullptr; }
  // The compute stream as a cudaStream_t on the GPU; null on the CPU.
  virtual void* cuda_compute_stream() { return nullptr; }
  // Kernel choices timed at run time (CUDA GEMM algorithms under autotuning), kept in a
  // file so that a resumed run takes the kernels of the run it continues and repeats its
  // results bit for bit. load_tuning: the choices of `path` are taken where they apply (a
  // missing file is no error); returns a warning when the file is unreadable or was
  // written for another GPU model or library version (its choices are then not used).
  // save_tuning: writes `path` atomically when choices were made since the last save.
  virtual std::string load_tuning(const std::string& /*path*/) { return {}; }
  // The overlapped optimizer step's fence (null: none); the GPU backend honours it.
  virtual void set_param_fence(ParamFence* /*fence*/) {}
  virtual int sm_count() const { return 0; }  // the GPU's SMs; 0 on the CPU
  virtual bool save_tuning(const std::string& /*path*/) { return false; }
};

std::unique_ptr<Backend> make_cpu_backend();
// Every op of `inner` inside a prof::Scope named after it (ops/profiler.h).
std::unique_ptr<Backend> make_profiling_backend(std::unique_ptr<Backend> inner);
// Throws if this build has no CUDA backend. device_index: the GPU this rank drives.
std::unique_ptr<Backend> make_cuda_backend(int device_index, bool cudnn_attention = false,
                                           bool gemm_autotune = false);

}  // namespace braid
