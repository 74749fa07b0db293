// CudaBackend: bf16 activations and GEMM weights, fp32 master weights, gradients and
// statistics, over the kernels of ops/cuda/ on this rank's compute stream. Built only
// when nvcc is found (BRAID_HAVE_CUDA). The bf16 weight copies are refreshed after every
// optimizer step and checkpoint load (refresh_weights).
#ifdef BRAID_HAVE_CUDA
#include <cstdio>
#include <cstring>

#include "framework/backend.h"
#include "framework/tuning_file.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/runtime.h"

namespace braid {
namespace {

using cuda::bf16;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device, bool cudnn_attention) : ctx_(device), use_cudnn_(cudnn_attention) {}
  Device device() const override { return Device::CUDA; }
  DType activation_dtype() const override { return DType::BF16; }

  void bind(ParamStore& store) override {
    store_ = &store;
    BRAID_CHECK(store.device() == Device::CUDA, "CUDA backend needs the parameters on the GPU");
    weights_ = Tensor::empty({store.flat_size()}, DType::BF16, Device::CUDA);
    refresh_weights();
  }
  void* bf16_weight_copy() override { return weights_.raw(); }
  void refresh_weights() override {
    if (fence_) fence_->wait_all(s());
    cuda::convert(weights_.data<bf16>(), store_->flat_values().f32(), store_->flat_size(), s());
  }

  void embedding_forward(Tensor& out, const std::vector<int32_t>& tokens, int wte) override {
    const Param& p = param(wte);
    Tensor tok = upload(tokens);
    cuda::embedding_forward(b(out), tok.data<int32_t>(), p.value.f32(), int64_t(tokens.size()),
                            int(p.value.dim(1)), p.spec.shard_offset, p.spec.storage_rows, s());
  }
  void embedding_backward(const Tensor& dout, const std::vector<int32_t>& tokens, int wte) override {
    const Param& p = param(wte);
    cuda::TokenRows tr = cuda::group_token_rows(tokens.data(), int64_t(tokens.size()),
                                                p.spec.shard_offset, p.spec.storage_rows);
    if (tr.rows.empty()) return;
    Tensor rows = upload(tr.rows), offs = upload(tr.offsets), pos = upload(tr.positions);
    cuda::embedding_backward(g(wte), cb(dout), rows.data<int32_t>(), offs.data<int32_t>(),
                             pos.data<int32_t>(), int(tr.rows.size()), int(p.value.dim(1)), s());
  }
  void position_forward(Tensor& x, int wpe, int B, int T, int pos_offset) override {
    cuda::position_forward(b(x), v(wpe), B, T, int(x.dim(-1)), pos_offset, s());
  }
  void position_backward(const Tensor& dx, int wpe, int B, int T, int pos_offset) override {
    cuda::position_backward(g(wpe), cb(dx), B, T, int(dx.dim(-1)), pos_offset, s());
  }
  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, int w, int bi) override {
    const int C = int(inp.dim(-1));
    cuda::layernorm_forward(b(out), mean.f32(), rstd.f32(), cb(inp), v(w), v(bi), inp.numel() / C, C, s());
  }
  void layernorm_backward_accumulate(Tensor& dinp, const Tensor& dout, const Tensor& inp, int w, int bi,
                                     const Tensor& mean, const Tensor& rstd, int dsum) override {
    const int C = int(inp.dim(-1));
    const int64_t N = inp.numel() / C;
    void* sc = scratch(cuda::layernorm_backward_scratch_bytes(N, C));
    bool first_w = false, first_b = false;
    float* dw = gw(w, first_w);
    float* db = gw(bi, first_b);
    if (first_w != first_b) {  // (never: only this op writes both) add into zeroed gradients
      if (first_w) (*store_)[w].grad.zero_();
      if (first_b) (*store_)[bi].grad.zero_();
      first_w = first_b = false;
    }
    bool first_s = false;
    float* ds = dsum >= 0 ? gw(dsum, first_s) : nullptr;
    cuda::layernorm_backward(b(dinp), dw, db, sc, cb(dout), cb(inp), v(w), mean.f32(), rstd.f32(), N, C, true, s(),
                             first_w, ds, first_s);
  }
  void matmul_forward(Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC, int OC) override {
    const bf16* wp = wb(w);
    const float* bp = bias >= 0 ? v(bias) : nullptr;
    gemm_sms();
    cuda::matmul_forward(ctx_.gemm(), b(out), nullptr, cb(inp), wp, bp, N, IC, OC, false, s());
  }
  void matmul_backward(Tensor* dinp, const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N,
                       int IC, int OC) override {
    void* sc = bias >= 0 ? scratch(cuda::bias_backward_scratch_bytes(N, OC)) : nullptr;
    bool first_w = false, first_b = false;
    float* dw = gw(w, first_w);
    float* db = bias >= 0 ? gw(bias, first_b) : nullptr;
    const bf16* wp = wb(w);
    gemm_sms();
    cuda::matmul_backward(ctx_.gemm(), dinp ? b(*dinp) : nullptr, dw, db, sc, cb(dout), cb(inp), wp, N, IC, OC,
                          false, s(), first_w, first_b);
  }
  void matmul_backward_input(Tensor& dinp, const Tensor& dout, int w, int64_t N, int IC, int OC) override {
    const bf16* wp = wb(w);
    gemm_sms();
    cuda::matmul_backward(ctx_.gemm(), b(dinp), nullptr, nullptr, nullptr, cb(dout), nullptr, wp, N, IC, OC,
                          false, s());
  }
  void matmul_backward_weight(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                              int OC) override {
    matmul_backward(nullptr, dout, inp, w, bias, N, IC, OC);  // the same without dinp
  }
  void matmul_backward_gelu(Tensor& dpre, const Tensor& dout, const Tensor& inp, const Tensor& pre, int w,
                            int bias, int pre_bias, int64_t N, int IC, int OC) override {
    void* sc = pre_bias >= 0 ? scratch(cuda::matmul_backward_dgelu_scratch_bytes(N, IC)) : nullptr;
    // With its own bias the dW GEMM runs here, then the bias gradient's pass (scratch
    // reused in stream order after the dinp GEMM's).
    bool first_w = false, first_pb = false, first_b = false;
    float* dw = gw(w, first_w);
    float* dpb = pre_bias >= 0 ? gw(pre_bias, first_pb) : nullptr;
    float* db = bias >= 0 ? gw(bias, first_b) : nullptr;
    gemm_sms();
    cuda::matmul_backward_dgelu(ctx_.gemm(), b(dpre), bias >= 0 ? nullptr : dw, dpb, sc, cb(dout), cb(inp), wb(w),
                                cb(pre), N, IC, OC, s(), first_w, first_pb);
    if (bias >= 0) {
      cuda::matmul_backward(ctx_.gemm(), nullptr, dw, db, scratch(cuda::bias_backward_scratch_bytes(N, OC)), cb(dout),
                            cb(inp), wb(w), N, IC, OC, false, s(), first_w, first_b);
    }
  }
  void bias_backward(const Tensor& dout, int bias, int64_t N, int C) override {
    bool first = false;
    float* db = gw(bias, first);
    cuda::bias_backward(db, scratch(cuda::bias_backward_scratch_bytes(N, C)), cb(dout), N, C, s(), first);
  }
  void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int B, int T, int NH, int HS) override {
    saved = Tensor::empty({B, NH, T}, DType::F32, Device::CUDA);  // log-sum-exp per row
    if (use_cudnn_) cudnn().forward(b(out), saved.f32(), cb(qkv), B, T, NH, HS, s());
    else cuda::attention_forward(b(out), saved.f32(), cb(qkv), B, T, NH, HS, s());
  }
  void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& saved, int B, int T, int NH, int HS) override {
    if (use_cudnn_) {
      cudnn().backward(b(dqkv), cb(dout), cb(qkv), cb(out), saved.f32(), B, T, NH, HS, s());
      return;
    }
    void* sc = scratch(cuda::attention_backward_scratch_bytes(B, T, NH));
    cuda::attention_backward(b(dqkv), sc, cb(dout), cb(qkv), cb(out), saved.f32(), B, T, NH, HS, false, s());
  }
  void gelu_forward(Tensor& out, const Tensor& inp) override { cuda::gelu_forward(b(out), cb(inp), inp.numel(), s()); }
  void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) override {
    cuda::gelu_backward(b(dinp), cb(inp), cb(dout), inp.numel(), false, s());
  }
  void residual_forward(Tensor& out, const Tensor& a, const Tensor& bb) override {
    cuda::residual_forward(b(out), cb(a), cb(bb), a.numel(), s());
  }
  void residual_layernorm_forward(Tensor& residual, Tensor& ln, Tensor& mean, Tensor& rstd, const Tensor& a,
                                  const Tensor& bb, int w, int bias) override {
    const int C = int(a.dim(-1));
    cuda::residual_layernorm_forward(b(residual), b(ln), mean.f32(), rstd.f32(), cb(a), cb(bb), v(w), v(bias),
                                     a.numel() / C, C, s());
  }
  void matmul_gelu_forward(Tensor& pre, Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC,
                           int OC) override {
    const bf16* wp = wb(w);
    const float* bp = bias >= 0 ? v(bias) : nullptr;
    gemm_sms();
    cuda::matmul_forward(ctx_.gemm(), b(out), b(pre), cb(inp), wp, bp, N, IC, OC, true, s());
  }
  double cross_entropy(Tensor& logits, const std::vector<int32_t>& targets, int64_t N, int Vl,
                       int64_t vstart, int64_t vreal, Communicator& tp, bool grad, float scale) override {
    Tensor tgt = upload(targets);
    Tensor row_max = stats({N}), row_sum = stats({N}), tlogit = stats({N}), losses = stats({N});
    xent(logits, tgt.data<int32_t>(), losses.f32(), row_max, row_sum, tlogit, N, Vl, vstart, vreal, tp, grad, scale);
    return sum_to_host(losses);
  }
  Tensor targets_tensor(const std::vector<int32_t>& targets) override { return upload(targets); }
  void cross_entropy_rows(Tensor& logits, const Tensor& targets, Tensor& losses, int64_t n, int Vl,
                          int64_t vstart, int64_t vreal, Communicator& tp, bool grad, float scale) override {
    Tensor row_max = stats({n}), row_sum = stats({n}), tlogit = stats({n});
    xent(logits, targets.data<int32_t>(), losses.f32(), row_max, row_sum, tlogit, n, Vl, vstart, vreal, tp, grad,
         scale);
  }
  double sum_to_host(const Tensor& x) override {
    Tensor host = Tensor::empty({x.numel()});
    host.copy_from(x);  // waits for the compute stream (blocking streams + legacy copy)
    double sum = 0;
    for (int64_t n = 0; n < x.numel(); ++n) sum += host.f32()[n];
    return sum;
  }
  std::vector<float> row_to_host(const Tensor& x, int64_t row, int64_t width) override {
    Tensor h = Tensor::empty({width}, DType::BF16);
    h.copy_from(x.view(row * width, {width}));
    std::vector<float> out(static_cast<size_t>(width));
    for (int64_t i = 0; i < width; ++i) out[size_t(i)] = bf16_to_f32(h.data<uint16_t>()[i]);
    return out;
  }
  void synchronize() override { ctx_.synchronize(); }
  void set_param_fence(ParamFence* fence) override { fence_ = fence; }
  int sm_count() const override { return ctx_.properties().multiProcessorCount; }
  void* cuda_compute_stream() override {
    return static_cast<void*>(ctx_.compute_stream());
  }
  // The recorded GEMM choices (framework/tuning_file.h).
  std::string load_tuning(const std::string& path) override {
    std::string warning;
    std::vector<cuda::GemmAlgoRecord> recs;
    for (TuningRecord& r : read_tuning_file(path, cuda::gemm_algo_environment(), &warning))
      recs.push_back({std::move(r.config), r.algo});
    cuda::gemm_algos_preload(recs);
    return warning;
  }
  bool save_tuning(const std::string& path) override {
    // Called after every step: only a newly timed choice (a new configuration, or one whose
    // loaded record cuBLASLt refused) changes what the file should hold.
    const int timed = cuda::gemm_algos_timed();
    if (timed == saved_tuning_timed_) return false;
    saved_tuning_timed_ = timed;  // a failed write is reported once, not every step
    const std::vector<cuda::GemmAlgoRecord> recs = cuda::gemm_algos_tuned();
    std::vector<TuningRecord> out;
    for (const auto& r : recs) out.push_back({r.config, r.algo});
    const std::string error = write_tuning_file(path, cuda::gemm_algo_environment(), out);
    if (!error.empty()) {
      std::fprintf(stderr, "warning: GEMM algorithm file: %s; a resumed run will time the GEMMs again and may "
                   "differ from this one in the low bits\n", error.c_str());
      return false;
    }
    return true;
  }

 private:
  cudaStream_t s() const { return ctx_.compute_stream(); }
  static bf16* b(const Tensor& t) {
    BRAID_CHECK(t.dtype() == DType::BF16 && t.device() == Device::CUDA, "expected a bf16 CUDA tensor");
    return t.data<bf16>();
  }
  static const bf16* cb(const Tensor& t) { return b(t); }
  // Every access to a parameter goes through param(i): the overlapped optimizer step's fence.
  Param& param(int i) {
    if (fence_) fence_->wait(i, s());
    return (*store_)[i];
  }
  float* v(int i) { return param(i).value.f32(); }
  // A gradient to add into (scatter-adds): zeroed first if still stale this step.
  float* g(int i) {
    Param& p = param(i);
    store_->zero_if_stale(i);
    return p.grad.f32();
  }
  // A gradient its op may overwrite: `first` says whether this is the step's first write
  // (ParamStore::mark_grads_stale), which the op then makes with = instead of +=.
  float* gw(int i, bool& first) {
    Param& p = param(i);
    first = store_->take_stale(i);
    return p.grad.f32();
  }
  const bf16* wb(int i) { return weights_.data<bf16>() + param(i).flat_offset; }
  // The SMs the GEMMs are chosen for: all but those of an optimizer update still running.
  void gemm_sms() {
    cuda::set_gemm_sm_target(fence_ && fence_->limiting() && fence_->reserved_sms() > 0
                                 ? sm_count() - fence_->reserved_sms()
                                 : 0);
  }
  Tensor stats(Shape sh) { return Tensor::empty(std::move(sh), DType::F32, Device::CUDA); }
  // Vocab-parallel softmax cross-entropy of N rows: each shard's max and sum of exponentials
  // in one pass over its logits (online softmax), then, over TP shards, three all-reduces
  // of N floats (max; the sums rescaled to it; target logit) assemble the rows. Unsharded:
  // one fused kernel.
  void xent(Tensor& logits, const int32_t* t, float* losses, Tensor& row_max, Tensor& row_sum, Tensor& tlogit,
            int64_t N, int Vl, int64_t vstart, int64_t vreal, Communicator& tp, bool grad, float scale) {
    if (tp.size() == 1) {
      BRAID_CHECK(vstart == 0, "an unsharded vocabulary starts at id 0 (got " << vstart << ")");
      // Statistics, loss and dlogits (in place) in one kernel: one read of the logits.
      cuda::xent_fused(losses, row_max.f32(), row_sum.f32(), grad ? b(logits) : nullptr, cb(logits), t, N, Vl, vreal,
                       scale, s());
      return;
    }
    Tensor local_max = stats({N});
    cuda::xent_local_stats(local_max.f32(), row_sum.f32(), cb(logits), N, Vl, vstart, vreal, s());
    row_max.copy_from(local_max);
    tp.all_reduce(row_max.raw(), N, DType::F32, ReduceOp::Max);
    cuda::xent_rescale_sum(row_sum.f32(), local_max.f32(), row_max.f32(), N, s());
    tp.all_reduce(row_sum.raw(), N, DType::F32, ReduceOp::Sum);
    cuda::xent_target_logit(tlogit.f32(), cb(logits), t, N, Vl, vstart, s());
    tp.all_reduce(tlogit.raw(), N, DType::F32, ReduceOp::Sum);
    cuda::xent_losses(losses, row_max.f32(), row_sum.f32(), tlogit.f32(), t, N, s());
    if (grad)
      cuda::xent_backward(b(logits), cb(logits), t, row_max.f32(), row_sum.f32(), N, Vl, vstart, vreal, scale, s());
  }
  // Token ids, targets and embedding-backward tables, four uploads per microbatch. An
  // asynchronous copy on the compute stream from pageable memory is staged by the driver
  // before the call returns (the vector may go at once) and, unlike cudaMemcpy, does not
  // wait for the GPU to drain the queue: the host keeps enqueueing ahead of it.
  Tensor upload(const std::vector<int32_t>& h) {
    Tensor d = Tensor::empty({int64_t(std::max<size_t>(h.size(), 1))}, DType::I32, Device::CUDA);
    if (!h.empty())
      BRAID_CHECK_CUDA(cudaMemcpyAsync(d.raw(), h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s()));
    return d;
  }
  // One reusable scratch buffer: every user runs on the compute stream, in order.
  void* scratch(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (!scratch_.defined() || scratch_.size_bytes() < bytes)
      scratch_ = Tensor::empty({int64_t((bytes + 3) / 4)}, DType::F32, Device::CUDA);
    return scratch_.raw();
  }
  cuda::CudnnAttention& cudnn() {
    if (!cudnn_attention_) cudnn_attention_ = std::make_unique<cuda::CudnnAttention>(ctx_.cudnn());
    return *cudnn_attention_;
  }

  cuda::CudaContext ctx_;
  bool use_cudnn_;
  ParamStore* store_ = nullptr;
  Tensor weights_, scratch_;
  std::unique_ptr<cuda::CudnnAttention> cudnn_attention_;
  int saved_tuning_timed_ = 0;
  ParamFence* fence_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index, bool cudnn_attention, bool gemm_autotune) {
  cuda::set_gemm_autotune(gemm_autotune);
  return std::make_unique<CudaBackend>(device_index, cudnn_attention);
}

}  // namespace braid
#endif  // BRAID_HAVE_CUDA
