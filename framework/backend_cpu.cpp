// CpuBackend: the reference backend, fp32 everywhere, over ops/cpu/.
#include <cstring>

#include "framework/backend.h"
#include "ops/ops.h"

namespace braid {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  DType activation_dtype() const override { return DType::F32; }
  void bind(ParamStore& store) override { store_ = &store; }
  void refresh_weights() override {}

  void embedding_forward(Tensor& out, const std::vector<int32_t>& tokens, int wte) override {
    const Param& p = (*store_)[wte];
    cpu::embedding_forward(out.f32(), tokens.data(), p.value.f32(), int64_t(tokens.size()),
                           int(p.value.dim(1)), p.spec.shard_offset, p.spec.storage_rows);
  }
  void embedding_backward(const Tensor& dout, const std::vector<int32_t>& tokens, int wte) override {
    const Param& p = (*store_)[wte];
    cpu::embedding_backward(g(wte), dout.f32(), tokens.data(), int64_t(tokens.size()),
                            int(p.value.dim(1)), p.spec.shard_offset, p.spec.storage_rows);
  }
  void position_forward(Tensor& x, int wpe, int B, int T, int pos_offset) override {
    cpu::position_forward(x.f32(), v(wpe), B, T, int(x.dim(-1)), pos_offset);
  }
  void position_backward(const Tensor& dx, int wpe, int B, int T, int pos_offset) override {
    cpu::position_backward(g(wpe), dx.f32(), B, T, int(dx.dim(-1)), pos_offset);
  }
  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, int w, int b) override {
    const int C = int(inp.dim(-1));
    cpu::layernorm_forward(out.f32(), mean.f32(), rstd.f32(), inp.f32(), v(w), v(b), inp.numel() / C, C);
  }
  void layernorm_backward_accumulate(Tensor& dinp, const Tensor& dout, const Tensor& inp, int w, int b,
                                     const Tensor& mean, const Tensor& rstd, int dsum) override {
    const int C = int(inp.dim(-1));
    cpu::layernorm_backward(dinp.f32(), g(w), g(b), dout.f32(), inp.f32(), v(w), mean.f32(), rstd.f32(),
                            inp.numel() / C, C, dsum >= 0 ? g(dsum) : nullptr);
  }
  void matmul_forward(Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC, int OC) override {
    cpu::matmul_forward(out.f32(), inp.f32(), v(w), bias >= 0 ? v(bias) : nullptr, N, IC, OC);
  }
  void matmul_backward(Tensor* dinp, const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N,
                       int IC, int OC) override {
    cpu::matmul_backward(dinp ? dinp->f32() : nullptr, g(w), bias >= 0 ? g(bias) : nullptr, dout.f32(),
                         inp.f32(), v(w), N, IC, OC, /*accumulate_dinp=*/false);
  }
  void matmul_backward_input(Tensor& dinp, const Tensor& dout, int w, int64_t N, int IC, int OC) override {
    cpu::matmul_backward(dinp.f32(), nullptr, nullptr, dout.f32(), nullptr, v(w), N, IC, OC, false);
  }
  void matmul_backward_weight(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                              int OC) override {
    cpu::matmul_backward(nullptr, g(w), bias >= 0 ? g(bias) : nullptr, dout.f32(), inp.f32(), v(w), N, IC, OC,
                         false);
  }
  void bias_backward(const Tensor& dout, int bias, int64_t N, int C) override {
    float* db = g(bias);
    const float* d = dout.f32();
    for (int64_t n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) db[c] += d[n * C + c];
  }
  void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int B, int T, int NH, int HS) override {
    saved = Tensor::empty({B, NH, T, T});
    cpu::attention_forward(out.f32(), saved.f32(), qkv.f32(), B, T, NH, HS);
  }
  void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor&,
                          const Tensor& saved, int B, int T, int NH, int HS) override {
    dqkv.zero_();
    cpu::attention_backward(dqkv.f32(), dout.f32(), qkv.f32(), saved.f32(), B, T, NH, HS);
  }
  void gelu_forward(Tensor& out, const Tensor& inp) override {
    cpu::gelu_forward(out.f32(), inp.f32(), inp.numel());
  }
  void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) override {
    cpu::gelu_backward(dinp.f32(), inp.f32(), dout.f32(), inp.numel(), /*accumulate=*/false);
  }
  void residual_forward(Tensor& out, const Tensor& a, const Tensor& b) override {
    cpu::residual_forward(out.f32(), a.f32(), b.f32(), a.numel());
  }
  double cross_entropy(Tensor& logits, const std::vector<int32_t>& targets, int64_t N, int Vl,
                       int64_t vstart, int64_t vreal, Communicator& tp, bool grad, float scale) override {
    std::vector<float> losses(N);
    xent(logits.f32(), targets.data(), losses.data(), N, Vl, vstart, vreal, tp, grad, scale);
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += losses[n];
    return s;
  }
  Tensor targets_tensor(const std::vector<int32_t>& targets) override {
    Tensor t = Tensor::empty({int64_t(std::max<size_t>(targets.size(), 1))}, DType::I32);
    std::copy(targets.begin(), targets.end(), t.data<int32_t>());
    return t;
  }
  void cross_entropy_rows(Tensor& logits, const Tensor& targets, Tensor& losses, int64_t n, int Vl,
                          int64_t vstart, int64_t vreal, Communicator& tp, bool grad, float scale) override {
    xent(logits.f32(), targets.data<int32_t>(), losses.f32(), n, Vl, vstart, vreal, tp, grad, scale);
  }
  double sum_to_host(const Tensor& x) override {
    double s = 0;
    for (int64_t i = 0; i < x.numel(); ++i) s += x.f32()[i];
    return s;
  }
  std::vector<float> row_to_host(const Tensor& x, int64_t row, int64_t width) override {
    const float* p = x.f32() + row * width;
    return std::vector<float>(p, p + width);
  }

 private:
  // Three all-reduces of N floats (max, target logit, sum of exponentials) assemble the
  // softmax over the vocabulary shards; the logits are never gathered.
  static void xent(float* l, const int32_t* targets, float* losses, int64_t N, int Vl, int64_t vstart,
                   int64_t vreal, Communicator& tp, bool grad, float scale) {
    std::vector<float> row_max(N), row_sum(N), tlogit(N);
    cpu::xent_local_max(row_max.data(), l, N, Vl, vstart, vreal);
    tp.all_reduce(row_max.data(), N, DType::F32, ReduceOp::Max);
    cpu::xent_target_logit(tlogit.data(), l, targets, N, Vl, vstart);
    tp.all_reduce(tlogit.data(), N, DType::F32, ReduceOp::Sum);
    if (grad)  // each exponential once: the logits buffer becomes exp(l - max)
      cpu::xent_exp_sum_inplace(row_sum.data(), l, row_max.data(), N, Vl, vstart, vreal);
    else
      cpu::xent_local_sumexp(row_sum.data(), l, row_max.data(), N, Vl, vstart, vreal);
    tp.all_reduce(row_sum.data(), N, DType::F32, ReduceOp::Sum);
    cpu::xent_losses(losses, row_max.data(), row_sum.data(), tlogit.data(), targets, N);
    if (grad) cpu::xent_backward_from_exp(l, targets, row_sum.data(), N, Vl, vstart, vreal, scale);
  }
  float* v(int i) { return (*store_)[i].value.f32(); }
  // A gradient to add into: zeroed first if still stale this step (every op here adds).
  float* g(int i) {
    store_->zero_if_stale(i);
    return (*store_)[i].grad.f32();
  }
  ParamStore* store_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

#ifndef BRAID_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int, bool, bool) {
  throw InputError("--device cuda: this build of Braid has no CUDA backend (nvcc was not found at configure time)");
}
#endif

}  // namespace braid
