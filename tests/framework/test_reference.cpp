// Braid's CPU path against PyTorch: tests/reference/gpt2_tiny.h5 (made by
// make_reference.py, float64 PyTorch) holds a tiny GPT-2's weights, a batch with two
// ignored targets, the logits, the loss, every parameter gradient and the losses of 10
// AdamW steps with clipping. Braid loads the weights into its own model (one rank, the
// same code path as every layout) and must reproduce all of them.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>

#include "framework/gpt.h"
#include "framework/optimizer.h"
#include "parallel/grad_reducer.h"
#include "parallel/rank_grid.h"

namespace braid {
namespace {

struct Fixture {
  hid_t f = -1;
  explicit Fixture(const std::string& path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  }
  ~Fixture() {
    if (f >= 0) H5Fclose(f);
  }
  template <class T>
  std::vector<T> read(const std::string& name, hid_t type) {
    hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
    EXPECT_GE(d, 0) << name;
    hid_t s = H5Dget_space(d);
    std::vector<T> v(static_cast<size_t>(H5Sget_simple_extent_npoints(s)));
    H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Sclose(s);
    H5Dclose(d);
    return v;
  }
  int64_t attr(const char* name) {
    int64_t v = 0;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    return v;
  }
  double attr_f(const char* name) {
    double v = 0;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    return v;
  }
};

class ReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx = std::make_unique<Fixture>(std::string(BRAID_SOURCE_DIR) + "/tests/reference/gpt2_tiny.h5");
    ASSERT_GE(fx->f, 0) << "missing fixture tests/reference/gpt2_tiny.h5";
    cfg.vocab_size = fx->attr("V");
    cfg.n_layer = int(fx->attr("L"));
    cfg.n_head = int(fx->attr("NH"));
    cfg.n_embd = int(fx->attr("C"));
    cfg.seq_len = int(fx->attr("T"));
    B = int(fx->attr("B"));
    ASSERT_EQ(cfg.vocab_padded(), fx->attr("Vp"));
    groups = std::make_unique<ProcessGroups>(make_process_groups(MPI_COMM_SELF, 1, 1));
    layout = make_model_layout(cfg, 1, 0, 1, 0, 1, false, {});
    backend = make_cpu_backend();
    model = std::make_unique<Gpt>(cfg, layout, *groups->tp, B, *backend);
    model->register_params(store, false);
    store.finalize(1 << 20, 1);
    model->bind_backend();
    for (Param& p : store.params()) {
      auto v = fx->read<float>("/params/" + p.spec.name, H5T_NATIVE_FLOAT);
      ASSERT_EQ(int64_t(v.size()), p.value.numel()) << p.spec.name;
      std::copy(v.begin(), v.end(), p.value.f32());
    }
    inputs = fx->read<int32_t>("/inputs", H5T_NATIVE_INT32);
    targets = fx->read<int32_t>("/targets", H5T_NATIVE_INT32);
    valid = 0;
    for (int32_t t : targets) valid += t != -1;
  }

  // Forward + backward of the batch; returns the mean loss.
  double forward_backward() {
    store.zero_grads();
    ChunkActivations acts;
    acts.tokens = inputs;
    acts.targets = targets;
    model->forward(0, acts, nullptr, true, float(1.0 / valid));
    Tensor dinput;
    model->backward(0, acts, nullptr, dinput, true, [](int) {});
    return acts.loss_sum / valid;
  }

  std::unique_ptr<Fixture> fx;
  ModelConfig cfg;
  int B = 0;
  int64_t valid = 0;
  std::unique_ptr<ProcessGroups> groups;
  ModelLayout layout;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Gpt> model;
  ParamStore store;
  std::vector<int32_t> inputs, targets;
};

TEST_F(ReferenceTest, LogitsLossAndGradientsMatchPyTorch) {
  ChunkActivations acts;
  acts.tokens = inputs;
  acts.targets = targets;
  model->forward(0, acts, nullptr, false, 0.f);  // keeps the logits
  auto ref_logits = fx->read<float>("/logits", H5T_NATIVE_FLOAT);
  const int64_t V = cfg.vocab_size, Vp = cfg.vocab_padded(), N = int64_t(B) * cfg.seq_len;
  double max_logit_err = 0, max_logit = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t v = 0; v < V; ++v) {
      max_logit_err = std::max(max_logit_err, double(std::abs(acts.logits.f32()[n * Vp + v] - ref_logits[n * V + v])));
      max_logit = std::max(max_logit, double(std::abs(ref_logits[n * V + v])));
    }
  // fp32 through 2 blocks of width 48: each value is a handful of length-<=192 dot
  // products deep; errors of ~1e-6 relative to the logit scale are expected.
  EXPECT_LE(max_logit_err, 1e-5 * std::max(1.0, max_logit));

  double ref_loss = fx->read<double>("/loss", H5T_NATIVE_DOUBLE)[0];
  double loss = forward_backward();
  // Mean of ~126 fp32 log-softmax values of magnitude ~5: about 1e-6 relative.
  EXPECT_NEAR(loss, ref_loss, 2e-6 * ref_loss);

  double worst_rel = 0;
  std::string worst;
  for (Param& p : store.params()) {
    auto g = fx->read<float>("/grads/" + p.spec.name, H5T_NATIVE_FLOAT);
    double err = 0, scale = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      err = std::max(err, double(std::abs(p.grad.f32()[i] - g[i])));
      scale = std::max(scale, double(std::abs(g[i])));
    }
    // Gradient error relative to the tensor's largest gradient: fp32 backprop through
    // 2 blocks accumulates a few hundred roundings, ~1e-5 of the scale at most.
    EXPECT_LE(err, 5e-5 * scale + 1e-9) << p.spec.name;
    if (err / (scale + 1e-30) > worst_rel) {
      worst_rel = err / (scale + 1e-30);
      worst = p.spec.name;
    }
  }
  std::printf("fixture: max |logit err| %.3g (max |logit| %.3g), loss %.9f vs %.9f, worst grad rel err %.3g (%s)\n",
              max_logit_err, max_logit, loss, ref_loss, worst_rel, worst.c_str());
}

TEST_F(ReferenceTest, TenAdamWStepsMatchPyTorch) {
  auto ref = fx->read<double>("/losses", H5T_NATIVE_DOUBLE);
  auto ref_norms = fx->read<double>("/grad_norms", H5T_NATIVE_DOUBLE);
  ASSERT_EQ(ref.size(), 10u);
  std::vector<BucketRange> ranges;
  for (const Bucket& b : store.buckets()) ranges.push_back({b.offset, b.size});
  GradReducer reducer(*groups->dp, store.flat_grads().f32(), ranges, false);
  Optimizer opt(store, reducer, *groups);
  AdamWConfig ac;
  ac.beta1 = float(fx->attr_f("beta1"));
  ac.beta2 = float(fx->attr_f("beta2"));
  ac.eps = float(fx->attr_f("eps"));
  ac.weight_decay = float(fx->attr_f("weight_decay"));
  const float lr = float(fx->attr_f("lr"));
  const float clip = float(fx->attr_f("max_grad_norm"));
  double worst = 0;
  for (int i = 0; i < 10; ++i) {
    double loss = forward_backward();
    double norm = opt.clip_grad_norm(clip);
    // The bar: each loss within 1e-5 relative of PyTorch's float64 run.
    EXPECT_NEAR(loss, ref[i], 1e-5 * ref[i]) << "step " << i;
    EXPECT_NEAR(norm, ref_norms[i], 1e-4 * ref_norms[i]) << "step " << i;
    worst = std::max(worst, std::abs(loss - ref[i]) / ref[i]);
    opt.step(lr, ac);
  }
  std::printf("fixture: 10 AdamW losses, worst relative error %.3g\n", worst);
}

}  // namespace
}  // namespace braid
