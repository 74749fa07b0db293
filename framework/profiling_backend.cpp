// A Backend that forwards every call to another one inside a prof::Scope named after the
// op (GEMMs with their shapes), so that braid-bench --profile can say where a step's time
// goes on either backend. Costs one branch per call while the profiler is off.
#include <cstdio>
#include <optional>
#include <string>

#include "framework/backend.h"
#include "ops/profiler.h"

namespace braid {
namespace {

std::string gemm_name(const char* what, int IC, int OC) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s %d->%d", what, IC, OC);
  return buf;
}

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(std::unique_ptr<Backend> inner) : in_(std::move(inner)) {}
  Device device() const override { return in_->device(); }
  DType activation_dtype() const override { return in_->activation_dtype(); }
  void bind(ParamStore& store) override { in_->bind(store); }
  void refresh_weights() override {
    prof::Scope p("bf16 weight copies");
    in_->refresh_weights();
  }
  void embedding_forward(Tensor& out, const std::vector<int32_t>& tokens, int wte) override {
    prof::Scope p("embedding fwd");
    in_->embedding_forward(out, tokens, wte);
  }
  void embedding_backward(const Tensor& dout, const std::vector<int32_t>& tokens, int wte) override {
    prof::Scope p("embedding bwd");
    in_->embedding_backward(dout, tokens, wte);
  }
  void position_forward(Tensor& x, int wpe, int B, int T, int pos_offset) override {
    prof::Scope p("position fwd");
    in_->position_forward(x, wpe, B, T, pos_offset);
  }
  void position_backward(const Tensor& dx, int wpe, int B, int T, int pos_offset) override {
    prof::Scope p("position bwd");
    in_->position_backward(dx, wpe, B, T, pos_offset);
  }
  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, int w, int b) override {
    prof::Scope p("layernorm fwd");
    in_->layernorm_forward(out, mean, rstd, inp, w, b);
  }
  void layernorm_backward_accumulate(Tensor& dinp, const Tensor& dout, const Tensor& inp, int w, int b,
                                     const Tensor& mean, const Tensor& rstd, int dsum) override {
    prof::Scope p(dsum >= 0 ? "layernorm bwd + bias grad" : "layernorm bwd");
    in_->layernorm_backward_accumulate(dinp, dout, inp, w, b, mean, rstd, dsum);
  }
  void matmul_forward(Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC, int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul fwd", IC, OC));
    in_->matmul_forward(out, inp, w, bias, N, IC, OC);
  }
  void matmul_backward(Tensor* dinp, const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                       int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul bwd (dinp + dW)", IC, OC));
    in_->matmul_backward(dinp, dout, inp, w, bias, N, IC, OC);
  }
  void matmul_backward_input(Tensor& dinp, const Tensor& dout, int w, int64_t N, int IC, int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul bwd dinp", IC, OC));
    in_->matmul_backward_input(dinp, dout, w, N, IC, OC);
  }
  void matmul_backward_weight(const Tensor& dout, const Tensor& inp, int w, int bias, int64_t N, int IC,
                              int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul bwd dW", IC, OC));
    in_->matmul_backward_weight(dout, inp, w, bias, N, IC, OC);
  }
  void bias_backward(const Tensor& dout, int bias, int64_t N, int C) override {
    prof::Scope p("bias bwd");
    in_->bias_backward(dout, bias, N, C);
  }
  void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int B, int T, int NH, int HS) override {
    prof::Scope p("attention fwd");
    in_->attention_forward(out, saved, qkv, B, T, NH, HS);
  }
  void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& saved, int B, int T, int NH, int HS) override {
    prof::Scope p("attention bwd");
    in_->attention_backward(dqkv, dout, qkv, out, saved, B, T, NH, HS);
  }
  void gelu_forward(Tensor& out, const Tensor& inp) override {
    prof::Scope p("gelu fwd");
    in_->gelu_forward(out, inp);
  }
  void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) override {
    prof::Scope p("gelu bwd");
    in_->gelu_backward(dinp, inp, dout);
  }
  void residual_forward(Tensor& out, const Tensor& a, const Tensor& b) override {
    prof::Scope p("residual fwd");
    in_->residual_forward(out, a, b);
  }
  void residual_layernorm_forward(Tensor& residual, Tensor& ln, Tensor& mean, Tensor& rstd, const Tensor& a,
                                  const Tensor& b, int w, int bias) override {
    prof::Scope p("residual + layernorm fwd");
    in_->residual_layernorm_forward(residual, ln, mean, rstd, a, b, w, bias);
  }
  void matmul_backward_gelu(Tensor& dpre, const Tensor& dout, const Tensor& inp, const Tensor& pre, int w,
                            int bias, int pre_bias, int64_t N, int IC, int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul bwd through GELU (dinp + dW)", IC, OC));
    in_->matmul_backward_gelu(dpre, dout, inp, pre, w, bias, pre_bias, N, IC, OC);
  }
  void matmul_gelu_forward(Tensor& pre, Tensor& out, const Tensor& inp, int w, int bias, int64_t N, int IC,
                           int OC) override {
    std::optional<prof::Scope> p;
    if (prof::active()) p.emplace(gemm_name("matmul fwd + GELU", IC, OC));
    in_->matmul_gelu_forward(pre, out, inp, w, bias, N, IC, OC);
  }
  double cross_entropy(Tensor& logits, const std::vector<int32_t>& targets, int64_t N, int Vl, int64_t vocab_start,
                       int64_t vocab_real, Communicator& tp, bool grad, float scale) override {
    prof::Scope p(grad ? "cross-entropy fwd + bwd" : "cross-entropy fwd");
    return in_->cross_entropy(logits, targets, N, Vl, vocab_start, vocab_real, tp, grad, scale);
  }
  Tensor targets_tensor(const std::vector<int32_t>& targets) override {
    prof::Scope p("targets upload");
    return in_->targets_tensor(targets);
  }
  void cross_entropy_rows(Tensor& logits, const Tensor& targets, Tensor& losses, int64_t n, int Vl,
                          int64_t vocab_start, int64_t vocab_real, Communicator& tp, bool grad, float scale) override {
    prof::Scope p(grad ? "cross-entropy fwd + bwd" : "cross-entropy fwd");
    in_->cross_entropy_rows(logits, targets, losses, n, Vl, vocab_start, vocab_real, tp, grad, scale);
  }
  double sum_to_host(const Tensor& x) override {
    prof::Scope p("loss to host");
    return in_->sum_to_host(x);
  }
  std::vector<float> row_to_host(const Tensor& x, int64_t row, int64_t width) override {
    return in_->row_to_host(x, row, width);
  }
  void synchronize() override { in_->synchronize(); }
  void* cuda_compute_stream() override { return in_->cuda_compute_stream(); }
  void* bf16_weight_copy() override { return in_->bf16_weight_copy(); }
  std::string load_tuning(const std::string& path) override { return in_->load_tuning(path); }
  bool save_tuning(const std::string& path) override { return in_->save_tuning(path); }
  void set_param_fence(ParamFence* fence) override { in_->set_param_fence(fence); }
  int sm_count() const override { return in_->sm_count(); }

 private:
  std::unique_ptr<Backend> in_;
};

}  // namespace

std::unique_ptr<Backend> make_profiling_backend(std::unique_ptr<Backend> inner) {
  return std::make_unique<ProfilingBackend>(std::move(inner));
}

}  // namespace braid
