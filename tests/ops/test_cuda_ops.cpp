// The CUDA op set (ops/cuda/cuda_ops.h) against fp64 references on fresh random bf16-valued
// inputs, under the emulation rule for low-precision kernels (STYLE.md, as flash-attention's
// tests): the device result may be at most twice as far from the fp64 reference as the same
// computation done in the reference with the device's roundings (bf16 outputs, bf16 at the
// points where the kernel rounds, fp32 sums where the kernel keeps fp32 — emulated by the
// fp32 CPU kernels of ops/ops.h), plus one rounding of the largest reference value in the
// output precision (so that an emulation that happens to be exact does not demand bitwise
// agreement of an equally valid evaluation order). Every tolerance below is that rule,
// computed here, or a stated exact/bitwise expectation.
// Outputs are poisoned with NaN before each launch, so an element left unwritten fails.
// Without a CUDA device (CI) every test skips.
#include <gtest/gtest.h>

#if BRAID_HAVE_CUDA
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/runtime.h"
#include "ops/device_memory.h"
#include "ops/ops.h"
#include "ops/tensor.h"
#include "tests/ops/reference_check.h"

namespace braid::test {
namespace {

using cuda::bf16;
constexpr double kUBf16 = 1.0 / 256;  // unit roundoff of bf16 (8 significant bits)
constexpr double kUF32 = FLT_EPSILON / 2;

// ---- helpers -----------------------------------------------------------------------------

float rb(float x) { return bf16_to_f32(f32_to_bf16(x)); }
double rb(double x) { return double(rb(float(x))); }
template <class V>
V rb(const V& x) {
  V r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = rb(x[i]);
  return r;
}
VecF random_bf16(std::mt19937& rng, size_t n, float mean = 0.f, float stddev = 1.f) {
  return rb(random_normal(rng, n, mean, stddev));
}
VecD cat(const VecF& a, const VecD& b) {  // a + b elementwise, in double
  VecD r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = double(a[i]) + b[i];
  return r;
}

template <class T>
class DeviceArray {  // n elements through Braid's caching allocator
 public:
  explicit DeviceArray(size_t n) : n_(n), p_(static_cast<T*>(device_alloc(n * sizeof(T)))) {}
  ~DeviceArray() { device_free(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& h) { device_copy(p_, true, h.data(), false, n_ * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    device_copy(h.data(), false, p_, true, n_ * sizeof(T));
    return h;
  }

 private:
  size_t n_;
  T* p_;
};

// bf16 on the device, float values (exactly representable) on the host.
class Bf16 {
 public:
  explicit Bf16(size_t n) : a_(n) { poison(); }
  explicit Bf16(const VecF& v) : a_(v.size()) { upload(v); }
  bf16* get() const { return reinterpret_cast<bf16*>(a_.get()); }
  void upload(const VecF& v) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16(v[i]);
    a_.upload(bits);
  }
  VecF download() const {
    const auto bits = a_.download();
    VecF v(bits.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(bits[i]);
    return v;
  }
  void poison() { a_.upload(std::vector<uint16_t>(a_.size(), uint16_t(0x7FC0))); }

 private:
  DeviceArray<uint16_t> a_;
};

class F32 : public DeviceArray<float> {
 public:
  explicit F32(size_t n) : DeviceArray<float>(n) { poison(); }
  explicit F32(const VecF& v) : DeviceArray<float>(v.size()) { upload(v); }
  void poison() { upload(VecF(size(), NAN)); }
};

template <class T>
std::unique_ptr<DeviceArray<T>> to_device(const std::vector<T>& h) {
  auto d = std::make_unique<DeviceArray<T>>(h.size());
  d->upload(h);
  return d;
}

// One context for the binary, never destroyed: its handles would otherwise be released
// during static destruction, after the CUDA runtime may have shut down.
cuda::CudaContext& ctx() {
  static cuda::CudaContext* c = new cuda::CudaContext(0);
  return *c;
}

double max_diff(const VecD& a, const VecD& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// The emulation rule; u is the unit roundoff of the output's precision.
void expect_emulated(const std::string& what, const VecF& got, const VecD& ref64,
                     const VecD& emulated, double u) {
  size_t unwritten = 0;
  for (float x : got) unwritten += std::isnan(x) ? 1 : 0;
  EXPECT_EQ(unwritten, 0u) << what << ": elements left unwritten (still NaN)";
  const double tol = 2.0 * max_diff(emulated, ref64) + u * max_abs(ref64);
  std::printf("[ emulated ] %-34s %.3e  (tol %.3e)\n", what.c_str(), max_diff(emulated, ref64),
              tol);
  expect_close(what, got, ref64, tol);
}
void expect_emulated(const std::string& what, const VecF& got, const VecD& ref64,
                     const VecF& emulated, double u) {
  expect_emulated(what, got, ref64, to_double(emulated), u);
}

void expect_bitwise(const std::string& what, const VecF& got, const VecF& want) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t diff = 0;
  for (size_t i = 0; i < got.size(); ++i)
    diff += std::memcmp(&got[i], &want[i], sizeof(float)) != 0 ? 1 : 0;
  EXPECT_EQ(diff, 0u) << what << ": elements differ bitwise";
  std::printf("[  bitwise ] %-34s %zu of %zu differ\n", what.c_str(), diff, got.size());
}

void sync() { BRAID_CHECK_CUDA(cudaStreamSynchronize(ctx().compute_stream())); }

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device or driver";
    stream = ctx().compute_stream();
  }
  cudaStream_t stream = nullptr;
};

// ---- runtime, allocator, errors -------------------------------------------------------

TEST_F(CudaOps, CachingAllocatorReusesBlocksAndTensorRoundTrips) {
  void* a = device_alloc(1000);
  const auto before = cuda::device_memory_stats();
  device_free(a);
  void* b = device_alloc(900);  // same size class (1024 bytes): the freed block comes back
  const auto after = cuda::device_memory_stats();
  EXPECT_EQ(a, b);
  EXPECT_EQ(after.driver_allocs, before.driver_allocs);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  device_free(b);
  // Steady state: a training-step-like pattern of allocations calls the driver only once.
  for (int step = 0; step < 3; ++step) {
    std::vector<void*> ps;
    for (size_t bytes : {size_t(1) << 20, size_t(3) << 20, size_t(5000), size_t(77)})
      ps.push_back(device_alloc(bytes));
    for (void* p : ps) device_free(p);
  }
  const auto s0 = cuda::device_memory_stats();
  for (size_t bytes : {size_t(1) << 20, size_t(3) << 20, size_t(5000), size_t(77)})
    device_free(device_alloc(bytes));
  EXPECT_EQ(cuda::device_memory_stats().driver_allocs, s0.driver_allocs);

  std::mt19937 rng(1);
  Tensor host({3, 41});
  const VecF x = random_normal(rng, 123);
  std::copy(x.begin(), x.end(), host.f32());
  Tensor dev({3, 41}, DType::F32, Device::CUDA);
  dev.copy_from(host);
  Tensor dev2 = dev.clone();
  Tensor back({3, 41});
  back.copy_from(dev2);
  expect_bitwise("tensor H2D/D2D/D2H", VecF(back.f32(), back.f32() + 123), x);
  dev2.zero_();
  back.copy_from(dev2);
  EXPECT_TRUE(std::all_of(back.f32(), back.f32() + 123, [](float v) { return v == 0.f; }));
}

TEST_F(CudaOps, CheckMacrosThrowBraidErrors) {
  try {
    BRAID_CHECK_CUDA(cudaSetDevice(1 << 20));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.library(), "CUDA");
    EXPECT_NE(std::string(e.what()).find("test_cuda_ops.cpp"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cudaSetDevice"), std::string::npos) << e.what();
  }
  BRAID_CHECK_CUDA(cudaSetDevice(ctx().device_index()));
}

// ---- pointwise --------------------------------------------------------------------------

double gelu64(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double gelu_grad64(double x) {
  const double k = std::sqrt(2.0 / M_PI), th = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

TEST_F(CudaOps, PointwiseOps) {
  std::mt19937 rng(2);
  const int64_t n = 10007;
  const VecF x = random_bf16(rng, n, 0.f, 2.f), y = random_bf16(rng, n);
  const VecF xf = random_normal(rng, n);  // fp32 values for conversion and fp32 ops
  Bf16 dx(x), dy(y), out(n);
  F32 dxf(xf), of(n);

  cuda::convert(out.get(), dxf.get(), n, stream);  // round to nearest even, as f32_to_bf16
  expect_bitwise("convert f32->bf16", out.download(), rb(xf));
  cuda::convert(of.get(), dx.get(), n, stream);
  expect_bitwise("convert bf16->f32", of.download(), x);

  // GELU on an odd length (scalar path) and a multiple of 8 (16-byte vector path).
  for (const int64_t m : {n, int64_t(8192)}) {
    SCOPED_TRACE("n=" + std::to_string(m));
    const VecF xm(x.begin(), x.begin() + m), ym(y.begin(), y.begin() + m);
    Bf16 dxm(xm), dym(ym), outm(m);
    VecD r(m);
    cuda::gelu_forward(outm.get(), dxm.get(), m, stream);
    for (int64_t i = 0; i < m; ++i) r[i] = gelu64(xm[i]);
    expect_emulated("gelu_forward", outm.download(), r, rb(r), kUBf16);
    const VecF prefill = random_bf16(rng, m);
    Bf16 dinp(prefill);
    cuda::gelu_backward(dinp.get(), dxm.get(), dym.get(), m, true, stream);
    for (int64_t i = 0; i < m; ++i) r[i] = prefill[i] + gelu_grad64(xm[i]) * ym[i];
    expect_emulated("gelu_backward (accumulate)", dinp.download(), r, rb(r), kUBf16);
    Bf16 inplace(ym);  // dinp aliasing dout
    cuda::gelu_backward(inplace.get(), dxm.get(), inplace.get(), m, false, stream);
    for (int64_t i = 0; i < m; ++i) r[i] = gelu_grad64(xm[i]) * ym[i];
    expect_emulated("gelu_backward (in place)", inplace.download(), r, rb(r), kUBf16);
  }

  VecD ref(n);
  out.poison();
  cuda::residual_forward(out.get(), dx.get(), dy.get(), n, stream);
  for (int64_t i = 0; i < n; ++i) ref[i] = double(x[i]) + y[i];
  expect_emulated("residual_forward", out.download(), ref, rb(ref), kUBf16);
  Bf16 acc(x);
  cuda::add_inplace(acc.get(), dy.get(), n, stream);
  expect_emulated("add_inplace bf16", acc.download(), ref, rb(ref), kUBf16);
  cuda::scale_inplace(acc.get(), 0.37f, n, stream);
  const VecF summed = rb(VecF(ref.begin(), ref.end()));
  for (int64_t i = 0; i < n; ++i) ref[i] = double(summed[i]) * double(0.37f);
  expect_emulated("scale_inplace bf16", acc.download(), ref, rb(ref), kUBf16);

  F32 accf(xf);
  const VecF yf = random_normal(rng, n);
  F32 dyf(yf);
  cuda::add_inplace(accf.get(), dyf.get(), n, stream);
  cuda::scale_inplace(accf.get(), 0.37f, n, stream);
  VecF want(n);  // two correctly rounded fp32 operations, as the CPU ops
  for (int64_t i = 0; i < n; ++i) want[i] = (xf[i] + yf[i]) * 0.37f;
  expect_bitwise("add_inplace+scale_inplace f32", accf.download(), want);
}

// ---- embeddings ------------------------------------------------------------------------

TEST_F(CudaOps, EmbeddingAndPositionMatchCpu) {
  std::mt19937 rng(3);
  const int B = 3, T = 37, C = 96, V = 300, kShards = 2, Vl = V / kShards, kMaxT = 50;
  const int64_t N = int64_t(B) * T;
  std::uniform_int_distribution<int32_t> pick(0, V - 1);
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = pick(rng);
  for (int i = 0; i < 20; ++i) tokens[size_t(5 + 3 * i)] = tokens[0];  // a frequent token
  tokens[1] = Vl - 1, tokens[2] = Vl;                                  // the shard boundary
  const auto d_tokens = to_device(tokens);
  const VecF dout = random_bf16(rng, N * C);
  Bf16 d_dout(dout);
  for (int s = 0; s < kShards; ++s) {
    SCOPED_TRACE("shard " + std::to_string(s));
    const int64_t start = int64_t(s) * Vl;
    const VecF wte = random_normal(rng, size_t(Vl) * C);
    F32 d_wte(wte);
    Bf16 out(N * C);
    cuda::embedding_forward(out.get(), d_tokens->get(), d_wte.get(), N, C, start, Vl, stream);
    VecF want(N * C);
    cpu::embedding_forward(want.data(), tokens.data(), wte.data(), N, C, start, Vl);
    expect_bitwise("embedding_forward (= bf16 of the row)", out.download(), rb(want));

    // Backward: same sequence of fp32 additions as the CPU loop, so bitwise equal to it.
    const VecF prefill = random_normal(rng, wte.size());
    F32 dwte(prefill);
    const auto rows = cuda::group_token_rows(tokens.data(), N, start, Vl);
    const auto d_rows = to_device(rows.rows), d_off = to_device(rows.offsets),
               d_pos = to_device(rows.positions);
    cuda::embedding_backward(dwte.get(), d_dout.get(), d_rows->get(), d_off->get(),
                             d_pos->get(), int(rows.rows.size()), C, stream);
    VecF cpu_dwte = prefill;
    cpu::embedding_backward(cpu_dwte.data(), dout.data(), tokens.data(), N, C, start, Vl);
    expect_bitwise("embedding_backward (= CPU op)", dwte.download(), cpu_dwte);
  }
  for (int pos_offset : {0, kMaxT - T}) {
    const VecF wpe = random_normal(rng, size_t(kMaxT) * C);
    F32 d_wpe(wpe);
    const VecF x = random_bf16(rng, N * C);
    Bf16 out(x);
    cuda::position_forward(out.get(), d_wpe.get(), B, T, C, pos_offset, stream);
    VecF want = x;  // one fp32 addition then one rounding to bf16
    cpu::position_forward(want.data(), wpe.data(), B, T, C, pos_offset);
    expect_bitwise("position_forward", out.download(), rb(want));
    const VecF prefill = random_normal(rng, wpe.size());
    F32 dwpe(prefill);
    cuda::position_backward(dwpe.get(), d_dout.get(), B, T, C, pos_offset, stream);
    VecF cpu_dwpe = prefill;
    cpu::position_backward(cpu_dwpe.data(), dout.data(), B, T, C, pos_offset);
    expect_bitwise("position_backward (= CPU op)", dwpe.download(), cpu_dwpe);
  }
}

// ---- layernorm -------------------------------------------------------------------------

struct LnRef {
  VecD out, mean, rstd;
};
LnRef layernorm64(const VecD& x, const VecF& w, const VecF& b, int64_t N, int C) {
  LnRef r{VecD(N * C), VecD(N), VecD(N)};
  for (int64_t n = 0; n < N; ++n) {
    double m = 0, var = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) var += (x[n * C + c] - m) * (x[n * C + c] - m);
    const double s = 1.0 / std::sqrt(var / C + 1e-5);
    for (int c = 0; c < C; ++c) r.out[n * C + c] = (x[n * C + c] - m) * s * w[c] + b[c];
    r.mean[n] = m, r.rstd[n] = s;
  }
  return r;
}

TEST_F(CudaOps, ResidualLayerNormForwardBackward) {
  // Forward: register rows (layernorm.cu) with whole (768: 3 vectors per lane) and partial
  // (1600: 6.25 vectors per lane, 8 reserved) warp passes and every other instantiation
  // (256, 512, 1024, 1280: 1, 2, 4, 6 vectors), the 16-byte loop kernels (2304: more than
  // register rows take), and single elements (100). Backward: one vector per thread (a
  // partial last warp at 1600 and 100), two (5000: 625 vectors), four (8448: 1056 vectors)
  // and element loads (100; 5001 with two vectors per thread, the last one partial).
  for (auto [N, C] : {std::pair<int64_t, int>{600, 768}, {40, 1600}, {9, 256}, {9, 512}, {9, 1024}, {9, 1280},
                      {21, 2304}, {37, 100}, {19, 5000}, {19, 8448}, {13, 5001}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
    std::mt19937 rng(4 + C);
    const VecF a = random_bf16(rng, N * C, 3.f, 1.f), b = random_bf16(rng, N * C, 0.f, 2.f);
    const VecF w = random_normal(rng, C, 1.f, 0.5f), bias = random_normal(rng, C);
    Bf16 da(a), db(b), res(N * C), out(N * C);
    F32 dw(w), dbias(bias), mean(N), rstd(N);
    cuda::residual_layernorm_forward(res.get(), out.get(), mean.get(), rstd.get(), da.get(),
                                     db.get(), dw.get(), dbias.get(), N, C, stream);
    VecD x64(N * C), xr(N * C);
    for (int64_t i = 0; i < N * C; ++i) x64[i] = double(a[i]) + b[i], xr[i] = rb(x64[i]);
    const LnRef r64 = layernorm64(x64, w, bias, N, C), em = layernorm64(xr, w, bias, N, C);
    expect_emulated("residual (a + b)", res.download(), x64, xr, kUBf16);
    expect_emulated("layernorm out", out.download(), r64.out, rb(em.out), kUBf16);
    expect_emulated("layernorm mean", mean.download(), r64.mean, em.mean, kUF32);
    expect_emulated("layernorm rstd", rstd.download(), r64.rstd, em.rstd, kUF32);

    // Backward at the stored residual and the saved statistics (given to every party).
    const VecF xs = res.download(), m32 = mean.download(), s32 = rstd.download();
    const VecF g = random_bf16(rng, N * C);
    const VecF p_inp = random_bf16(rng, N * C), p_w = random_normal(rng, C),
               p_b = random_normal(rng, C);
    Bf16 dg(g), dinp(p_inp), dxs(xs);
    F32 gw(p_w), gb(p_b), dmean(m32), drstd(s32);
    DeviceArray<char> scratch(cuda::layernorm_backward_scratch_bytes(N, C));
    cuda::layernorm_backward(dinp.get(), gw.get(), gb.get(), scratch.get(), dg.get(), dxs.get(),
                             dw.get(), dmean.get(), drstd.get(), N, C, true, stream);
    VecD ref_dx(N * C), ref_dw(C), ref_db(C);
    for (int c = 0; c < C; ++c) ref_dw[c] = p_w[c], ref_db[c] = p_b[c];
    for (int64_t n = 0; n < N; ++n) {
      double mdn = 0, mdnx = 0;
      for (int c = 0; c < C; ++c) {
        const double xh = (double(xs[n * C + c]) - m32[n]) * s32[n], dn = double(g[n * C + c]) * w[c];
        mdn += dn, mdnx += dn * xh;
        ref_dw[c] += xh * g[n * C + c], ref_db[c] += g[n * C + c];
      }
      mdn /= C, mdnx /= C;
      for (int c = 0; c < C; ++c) {
        const double xh = (double(xs[n * C + c]) - m32[n]) * s32[n], dn = double(g[n * C + c]) * w[c];
        ref_dx[n * C + c] = p_inp[n * C + c] + s32[n] * (dn - mdn - xh * mdnx);
      }
    }
    // fp32 emulation of the parameter gradients: the CPU kernel on the same inputs.
    VecF cpu_dx(N * C, 0.f), cpu_dw = p_w, cpu_db = p_b;
    cpu::layernorm_backward(cpu_dx.data(), cpu_dw.data(), cpu_db.data(), g.data(), xs.data(),
                            w.data(), m32.data(), s32.data(), N, C);
    expect_emulated("layernorm dinp (accumulate)", dinp.download(), ref_dx, rb(ref_dx), kUBf16);
    expect_emulated("layernorm dw", gw.download(), ref_dw, cpu_dw, kUF32);
    expect_emulated("layernorm db", gb.download(), ref_db, cpu_db, kUF32);
    // Deterministic: the same inputs give the same bits.
    F32 gw2(p_w), gb2(p_b);
    cuda::layernorm_backward(nullptr, gw2.get(), gb2.get(), scratch.get(), dg.get(), dxs.get(),
                             dw.get(), dmean.get(), drstd.get(), N, C, true, stream);
    expect_bitwise("layernorm dw repeat", gw2.download(), gw.download());
    expect_bitwise("layernorm db repeat", gb2.download(), gb.download());
    // With the column sums of dinp as written (a linear layer's fused bias gradient), added
    // to a prefilled buffer and overwriting it: the same dinp, dw, db bits, and the sums of
    // the stored bf16 dinp (fp64 reference; the emulation sums in fp32 in row order, the
    // kernel in blocks of 16 rows: the fp32 accumulation bound, kUF32).
    const VecF p_s = random_normal(rng, C), got_dx = dinp.download();
    for (bool overwrite : {false, true}) {
      SCOPED_TRACE(overwrite ? "dsum overwritten" : "dsum accumulated");
      Bf16 dinp3(p_inp);
      F32 gw3(p_w), gb3(p_b), gs3(p_s);
      cuda::layernorm_backward(dinp3.get(), gw3.get(), gb3.get(), scratch.get(), dg.get(), dxs.get(), dw.get(),
                               dmean.get(), drstd.get(), N, C, true, stream, false, gs3.get(), overwrite);
      expect_bitwise("dinp with dsum", dinp3.download(), got_dx);
      expect_bitwise("dw with dsum", gw3.download(), gw.download());
      expect_bitwise("db with dsum", gb3.download(), gb.download());
      VecD ref_ds(C);
      VecF emu_ds(C);
      for (int c = 0; c < C; ++c) ref_ds[c] = overwrite ? 0.0 : p_s[c], emu_ds[c] = overwrite ? 0.f : p_s[c];
      for (int64_t n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) ref_ds[c] += got_dx[n * C + c], emu_ds[c] += got_dx[n * C + c];
      expect_emulated("column sums of dinp", gs3.download(), ref_ds, emu_ds, kUF32);
    }
  }
}

// The register-row kernels do the loop kernels' arithmetic in the same order: the same
// bits, forward (with and without the residual) and backward (accumulating into dinp, and
// the weight gradients; there the loop form is the same kernel with element loads), at
// every instantiation and a partial warp pass.
TEST_F(CudaOps, LayerNormRegisterRowsAreTheLoopKernelsBitForBit) {
  struct Loop {  // the loop kernels for the scope's duration, however it ends
    Loop() { cuda::layernorm_force_loop_kernels(true); }
    ~Loop() { cuda::layernorm_force_loop_kernels(false); }
  };
  for (int C : {256, 512, 768, 1024, 1280, 1600, 2048, 5000, 8448}) {
    SCOPED_TRACE("C=" + std::to_string(C));
    const int64_t N = 35;  // 3 backward blocks of 16 rows, the last partial
    std::mt19937 rng(30 + C);
    const VecF a = random_bf16(rng, N * C, 1.f, 1.f), b = random_bf16(rng, N * C), g = random_bf16(rng, N * C);
    const VecF w = random_normal(rng, C, 1.f, 0.3f), bias = random_normal(rng, C), prefill = random_bf16(rng, N * C);
    Bf16 da(a), db(b), dg(g);
    F32 dw(w), dbias(bias);
    DeviceArray<char> scratch(cuda::layernorm_backward_scratch_bytes(N, C));
    struct Out {
      VecF res, out, plain, mean, rstd, dinp, gw, gb, gs;
    };
    auto run = [&] {
      Bf16 res(N * C), out(N * C), plain(N * C), dinp(prefill);
      F32 mean(N), rstd(N), gw(VecF(C, 0.5f)), gb(VecF(C, -0.5f)), gs(VecF(C, 0.25f));
      cuda::residual_layernorm_forward(res.get(), out.get(), mean.get(), rstd.get(), da.get(), db.get(), dw.get(),
                                       dbias.get(), N, C, stream);
      cuda::layernorm_forward(plain.get(), mean.get(), rstd.get(), res.get(), dw.get(), dbias.get(), N, C, stream);
      cuda::layernorm_backward(dinp.get(), gw.get(), gb.get(), scratch.get(), dg.get(), res.get(), dw.get(),
                               mean.get(), rstd.get(), N, C, true, stream, false, gs.get());
      return Out{res.download(), out.download(), plain.download(), mean.download(), rstd.download(),
                 dinp.download(), gw.download(), gb.download(), gs.download()};
    };
    const Out rows = run();
    Out loop;
    {
      Loop on;
      loop = run();
    }
    expect_bitwise("residual", rows.res, loop.res);
    expect_bitwise("residual layernorm out", rows.out, loop.out);
    expect_bitwise("layernorm out", rows.plain, loop.plain);
    expect_bitwise("mean", rows.mean, loop.mean);
    expect_bitwise("rstd", rows.rstd, loop.rstd);
    expect_bitwise("dinp (accumulated)", rows.dinp, loop.dinp);
    expect_bitwise("dw", rows.gw, loop.gw);
    expect_bitwise("db", rows.gb, loop.gb);
    expect_bitwise("column sums of dinp", rows.gs, loop.gs);
  }
}

// ---- matmul ----------------------------------------------------------------------------

TEST_F(CudaOps, MatmulForwardBackward) {
  const int64_t N = 257;
  const int IC = 192, OC = 384;
  std::mt19937 rng(5);
  const VecF inp = random_bf16(rng, N * IC), w = random_bf16(rng, size_t(OC) * IC, 0.f, 0.1f);
  const VecF bias = random_normal(rng, OC, 0.f, 0.5f);
  Bf16 d_inp(inp), d_w(w), out(N * OC), pre(N * OC);
  F32 d_bias(bias);
  const cuda::GemmHandle gemm = ctx().gemm();
  VecD prod(N * OC), acc(N * OC);  // inp @ w^T, and with the bias
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = 0;
      for (int i = 0; i < IC; ++i) s += double(inp[n * IC + i]) * w[size_t(o) * IC + i];
      prod[n * OC + o] = s, acc[n * OC + o] = s + bias[o];
    }
  // The pre-activation as the path cuBLASLt offered computes it (cuda_ops.h): fp32 bias in the
  // epilogue, the bias rounded to bf16 in the epilogue, or bias added to the rounded product.
  auto pre_emulated = [&](cuda::EpiloguePath path) {
    VecD e(acc.size());
    for (int64_t n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        const size_t i = size_t(n * OC + o);
        e[i] = path == cuda::EpiloguePath::FusedBf16Bias ? prod[i] + rb(bias[o])
               : path == cuda::EpiloguePath::SecondPass  ? rb(prod[i]) + bias[o]
                                                          : acc[i];
      }
    return e;
  };
  auto path_name = [](cuda::EpiloguePath p) {
    return p == cuda::EpiloguePath::Fused           ? "fused, fp32 bias"
           : p == cuda::EpiloguePath::FusedBf16Bias ? "fused, bias rounded to bf16"
           : p == cuda::EpiloguePath::SecondPass    ? "second pass"
                                                    : "none";
  };
  cuda::matmul_forward(gemm, out.get(), nullptr, d_inp.get(), d_w.get(), d_bias.get(), N, IC, OC,
                       false, stream);
  const auto path = cuda::matmul_last_epilogue_path();
  std::printf("[     info ] matmul bias epilogue: %s\n", path_name(path));
  expect_emulated("matmul_forward (+bias)", out.download(), acc, rb(pre_emulated(path)), kUBf16);
  out.poison();
  cuda::matmul_forward(gemm, out.get(), pre.get(), d_inp.get(), d_w.get(), d_bias.get(), N, IC,
                       OC, true, stream);
  const auto gpath = cuda::matmul_last_epilogue_path();
  std::printf("[     info ] matmul bias+gelu epilogue: %s\n", path_name(gpath));
  const VecD pre_em = pre_emulated(gpath);
  VecD act(acc.size()), act_em(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) {  // GELU of the fp32 value, or of the stored bf16
    act[i] = gelu64(acc[i]);
    act_em[i] = rb(gelu64(gpath == cuda::EpiloguePath::SecondPass ? rb(pre_em[i]) : pre_em[i]));
  }
  expect_emulated("matmul_forward gelu pre", pre.download(), acc, rb(pre_em), kUBf16);
  expect_emulated("matmul_forward gelu out", out.download(), act, act_em, kUBf16);

  const VecF dout = random_bf16(rng, N * OC);
  const VecF p_dinp = random_bf16(rng, N * IC), p_dw = random_normal(rng, size_t(OC) * IC),
             p_db = random_normal(rng, OC);
  Bf16 d_dout(dout), dinp(N * IC);
  F32 dw(p_dw), db(p_db);
  DeviceArray<char> scratch(cuda::bias_backward_scratch_bytes(N, OC));
  cuda::matmul_backward(gemm, dinp.get(), dw.get(), db.get(), scratch.get(), d_dout.get(),
                        d_inp.get(), d_w.get(), N, IC, OC, false, stream);
  VecD ref_dinp(N * IC, 0.0), ref_dw(p_dw.begin(), p_dw.end()), ref_db(p_db.begin(), p_db.end());
  VecD abs_dw(ref_dw.size(), 0.0);  // sum over n of |dout * inp|, for the bound below
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dout[n * OC + o];
      ref_db[o] += g;
      for (int i = 0; i < IC; ++i) {
        ref_dinp[n * IC + i] += g * w[size_t(o) * IC + i];
        ref_dw[size_t(o) * IC + i] += g * inp[n * IC + i];
        abs_dw[size_t(o) * IC + i] += std::fabs(g * inp[n * IC + i]);
      }
    }
  VecF cpu_dinp(N * IC, 0.f), cpu_dw = p_dw, cpu_db = p_db;  // fp32 emulation (OpenBLAS)
  cpu::matmul_backward(cpu_dinp.data(), cpu_dw.data(), cpu_db.data(), dout.data(), inp.data(),
                       w.data(), N, IC, OC);
  expect_emulated("matmul dinp (beta 0)", dinp.download(), ref_dinp, rb(ref_dinp), kUBf16);
  // dw: products of bf16 values are exact in fp32, so all error is the fp32 accumulation of
  // N terms into the prefill. The tensor cores accumulate in an order and with internal
  // alignment that no sequential fp32 loop emulates (run on the H200: 0.99 of the
  // emulation rule's tolerance, against OpenBLAS's order), so the bound asserted is the one
  // that holds for every order: Higham's gamma_{N+1} (sum |terms| + |prefill|).
  {
    const VecF got = dw.download();
    VecD tol(got.size());
    for (size_t i = 0; i < tol.size(); ++i)
      tol[i] = gamma32(double(N) + 1) * (abs_dw[i] + std::fabs(double(p_dw[i])));
    std::printf("[ emulated ] %-34s %.3e  (emulation rule would allow %.3e)\n",
                "matmul dw (fp32 accumulate)", max_diff(to_double(cpu_dw), ref_dw),
                2 * max_diff(to_double(cpu_dw), ref_dw) + kUF32 * max_abs(ref_dw));
    expect_close_each("matmul dw (fp32 accumulate)", got, ref_dw, tol);
  }
  expect_emulated("matmul dbias", db.download(), ref_db, cpu_db, kUF32);
  // beta 1: dinp += dout @ w on top of a bf16 prefill.
  Bf16 dinp2(p_dinp);
  cuda::matmul_backward(gemm, dinp2.get(), nullptr, nullptr, nullptr, d_dout.get(), d_inp.get(),
                        d_w.get(), N, IC, OC, true, stream);
  const VecD ref_acc = cat(p_dinp, ref_dinp);
  expect_emulated("matmul dinp (beta 1)", dinp2.download(), ref_acc, rb(ref_acc), kUBf16);
}

// Views into a tensor (the LM head's row chunks, weight slices) start at any row: a
// forward and both backward GEMMs on operands only 16-byte aligned (row 1 of 200 / 136
// columns) must match the same products computed from aligned copies (cuBLASLt is told
// the real alignment; an algorithm picked for 256-byte operands would misread them).
TEST_F(CudaOps, MatmulOnRowOffsetViews) {
  const int64_t N = 63;
  const int IC = 200, OC = 136;  // rows of 400 and 272 bytes: row 1 is 16-byte aligned
  std::mt19937 rng(11);
  const VecF inp = random_bf16(rng, (N + 1) * IC), w = random_bf16(rng, size_t(OC) * IC, 0.f, 0.1f);
  const VecF dout = random_bf16(rng, (N + 1) * OC);
  Bf16 d_inp(inp), d_w(w), d_dout(dout), out((N + 1) * OC), dinp((N + 1) * IC);
  F32 dw(VecF(size_t(OC) * IC, 0.f));
  const cuda::GemmHandle gemm = ctx().gemm();
  cuda::matmul_forward(gemm, out.get() + OC, nullptr, d_inp.get() + IC, d_w.get(), nullptr, N, IC, OC, false,
                       stream);
  cuda::matmul_backward(gemm, dinp.get() + IC, dw.get(), nullptr, nullptr, d_dout.get() + OC, d_inp.get() + IC,
                        d_w.get(), N, IC, OC, false, stream);
  VecD ref_out(N * OC, 0.0), ref_dinp(N * IC, 0.0), ref_dw(size_t(OC) * IC, 0.0), abs_dw(ref_dw.size(), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dout[(n + 1) * OC + o];
      for (int i = 0; i < IC; ++i) {
        const double x = inp[(n + 1) * IC + i], wv = w[size_t(o) * IC + i];
        ref_out[n * OC + o] += x * wv;
        ref_dinp[n * IC + i] += g * wv;
        ref_dw[size_t(o) * IC + i] += g * x;
        abs_dw[size_t(o) * IC + i] += std::fabs(g * x);
      }
    }
  const VecF got_out = out.download(), got_dinp = dinp.download();
  // Only the view's rows: row 0 of each output buffer is never written (still NaN).
  const VecF view_out(got_out.begin() + OC, got_out.end()), view_dinp(got_dinp.begin() + IC, got_dinp.end());
  EXPECT_TRUE(std::isnan(got_out[0]) && std::isnan(got_dinp[0])) << "a GEMM wrote before its view";
  // The emulation rule with the correctly rounded exact value as the emulation: one bf16
  // rounding (u = 2^-8) of a short fp32 sum.
  expect_emulated("matmul_forward, row-1 views", view_out, ref_out, rb(ref_out), kUBf16);
  expect_emulated("matmul dinp, row-1 views", view_dinp, ref_dinp, rb(ref_dinp), kUBf16);
  // dw is fp32 (N = 63 exact products): Higham's bound for any summation order.
  VecD tol(abs_dw.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = gamma32(double(N) + 1) * abs_dw[i];
  expect_close_each("matmul dw, row-1 views", dw.download(), ref_dw, tol);
}

// The MLP's second linear layer backward with the GELU derivative in the epilogue:
// dpre = (dout @ w) * GELU'(pre) against fp64, under the emulation rule of the unfused ops
// (GEMM rounded to bf16, then gelu_backward rounded again); dw as matmul_backward's; the
// producing layer's bias gradient (sum of dpre over rows, onto a prefill) under the same rule.
TEST_F(CudaOps, MatmulBackwardWithGeluDerivative) {
  const int64_t N = 200;
  const int IC = 256, OC = 64;  // IC = 4 C of the fc layer, OC = C
  std::mt19937 rng(17);
  const VecF pre = random_bf16(rng, N * IC, 0.f, 1.5f), w = random_bf16(rng, size_t(OC) * IC, 0.f, 0.1f);
  const VecF dout = random_bf16(rng, N * OC);
  VecF inp(pre.size());  // GELU(pre) as the forward stored it (bf16)
  for (size_t i = 0; i < pre.size(); ++i) inp[i] = float(rb(gelu64(pre[i])));
  const VecF p_db = random_normal(rng, IC);
  Bf16 d_pre(pre), d_inp(inp), d_w(w), d_dout(dout), dpre(N * IC);
  F32 dw(VecF(size_t(OC) * IC, 0.f)), db(p_db);
  DeviceArray<char> scratch(cuda::matmul_backward_dgelu_scratch_bytes(N, IC));
  cuda::matmul_backward_dgelu(ctx().gemm(), dpre.get(), dw.get(), db.get(), scratch.get(), d_dout.get(), d_inp.get(),
                              d_w.get(), d_pre.get(), N, IC, OC, stream);
  std::printf("[     info ] matmul dgelu epilogue: %s, bias gradient %s\n",
              cuda::matmul_last_dgelu_path() == cuda::EpiloguePath::Fused ? "fused" : "second pass",
              cuda::matmul_last_dgelu_fused_bias() ? "in the epilogue" : "by bias_backward");
  VecD ref(N * IC, 0.0), em(N * IC), ref_dw(size_t(OC) * IC, 0.0), abs_dw(ref_dw.size(), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < IC; ++i) {
      double acc = 0;
      for (int o = 0; o < OC; ++o) acc += double(dout[n * OC + o]) * w[size_t(o) * IC + i];
      const double gg = gelu_grad64(pre[n * IC + i]);
      ref[n * IC + i] = acc * gg;
      em[n * IC + i] = rb(rb(acc) * gg);
    }
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o)
      for (int i = 0; i < IC; ++i) {
        ref_dw[size_t(o) * IC + i] += double(dout[n * OC + o]) * inp[n * IC + i];
        abs_dw[size_t(o) * IC + i] += std::fabs(double(dout[n * OC + o]) * inp[n * IC + i]);
      }
  expect_emulated("matmul dpre through GELU'", dpre.download(), ref, em, kUBf16);
  VecD ref_db(p_db.begin(), p_db.end()), em_db(p_db.begin(), p_db.end());
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < IC; ++i) ref_db[i] += ref[n * IC + i], em_db[i] += em[n * IC + i];
  // Whether the sum is of the fp32 products or of the stored bf16 values, it is off the
  // exact one by about the emulation's (bf16 roundings of N terms) plus fp32 accumulation.
  expect_emulated("dgelu bias gradient (onto prefill)", db.download(), ref_db, em_db, kUF32);
  VecD tol(abs_dw.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = gamma32(double(N) + 1) * abs_dw[i];  // any order
  expect_close_each("matmul dw (GELU layer)", dw.download(), ref_dw, tol);
}

// --gemm-algos autotune: the timing runs go to a scratch output, so the first (tuning) call of a
// shape still computes its result once: a beta = 1 weight gradient is not accumulated
// four more times, and a forward's output is the product. Shapes not used elsewhere here,
// so that they are tuned in this test.
TEST_F(CudaOps, GemmAutotuneLeavesResultsAlone) {
  const int64_t N = 264;
  const int IC = 96, OC = 160;
  std::mt19937 rng(13);
  const VecF inp = random_bf16(rng, N * IC), w = random_bf16(rng, size_t(OC) * IC, 0.f, 0.1f);
  const VecF dout = random_bf16(rng, N * OC), p_dw = random_normal(rng, size_t(OC) * IC);
  Bf16 d_inp(inp), d_w(w), d_dout(dout), out(N * OC);
  F32 dw(p_dw);
  struct Tuning {  // off again however the test ends
    Tuning() { cuda::set_gemm_autotune(true); }
    ~Tuning() { cuda::set_gemm_autotune(false); }
  };
  const int tuned_before = cuda::gemm_autotuned_shapes();
  {
    Tuning on;
    const cuda::GemmHandle gemm = ctx().gemm();
    cuda::matmul_forward(gemm, out.get(), nullptr, d_inp.get(), d_w.get(), nullptr, N, IC, OC, false, stream);
    cuda::matmul_backward(gemm, nullptr, dw.get(), nullptr, nullptr, d_dout.get(), d_inp.get(), d_w.get(), N, IC,
                          OC, false, stream);
  }
  // Both shapes had candidates timed (else this test would check nothing).
  EXPECT_EQ(cuda::gemm_autotuned_shapes() - tuned_before, 2) << "cuBLASLt offered a single algorithm";
  VecD ref_out(N * OC, 0.0), ref_dw(p_dw.begin(), p_dw.end()), abs_dw(ref_dw.size(), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double g = dout[n * OC + o];
      for (int i = 0; i < IC; ++i) {
        ref_out[n * OC + o] += double(inp[n * IC + i]) * w[size_t(o) * IC + i];
        ref_dw[size_t(o) * IC + i] += g * inp[n * IC + i];
        abs_dw[size_t(o) * IC + i] += std::fabs(g * inp[n * IC + i]);
      }
    }
  expect_emulated("autotuned matmul_forward", out.download(), ref_out, rb(ref_out), kUBf16);
  // Higham's bound for N terms plus the prefill, any order (as MatmulForwardBackward); a
  // second accumulation of the products would be off by sum |terms|, far outside it.
  VecD tol(abs_dw.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = gamma32(double(N) + 1) * (abs_dw[i] + std::fabs(double(p_dw[i])));
  expect_close_each("autotuned matmul dw (accumulated once)", dw.download(), ref_dw, tol);
}

// Recorded choices (what a resumed run loads from OUT/tuning/): after the cache is emptied,
// as in a new process, a preloaded record is taken without timing and gives the tuned
// run's bits; a record cuBLASLt refuses for the configuration (forged algorithm data) is
// not taken: the configuration is timed again and still computes the product.
TEST_F(CudaOps, GemmAlgoRecordsAreTakenAgain) {
  const int64_t N = 200;
  const int IC = 104, OC = 136;  // a shape used nowhere else here
  std::mt19937 rng(17);
  const VecF inp = random_bf16(rng, N * IC), w = random_bf16(rng, size_t(OC) * IC, 0.f, 0.1f);
  Bf16 d_inp(inp), d_w(w), out(N * OC);
  struct Tuning {  // off again, and the cache emptied, however the test ends
    Tuning() { cuda::set_gemm_autotune(true), cuda::gemm_algo_cache_reset(); }
    ~Tuning() { cuda::set_gemm_autotune(false), cuda::gemm_algo_cache_reset(); }
  } on;
  const cuda::GemmHandle gemm = ctx().gemm();
  auto forward = [&] {
    cuda::matmul_forward(gemm, out.get(), nullptr, d_inp.get(), d_w.get(), nullptr, N, IC, OC, false, stream);
    return out.download();
  };
  int timed = cuda::gemm_autotuned_shapes();
  const auto tuned_bits = forward();
  ASSERT_EQ(cuda::gemm_autotuned_shapes() - timed, 1) << "cuBLASLt offered a single algorithm";
  const std::vector<cuda::GemmAlgoRecord> records = cuda::gemm_algos_tuned();
  ASSERT_EQ(records.size(), 1u);
  // config = (transa, transb, m, n, k, ...): the forward is m = OC, n = N, k = IC.
  EXPECT_EQ(records[0].config.at(2), OC);
  EXPECT_EQ(records[0].config.at(3), N);
  EXPECT_EQ(records[0].config.at(4), IC);

  cuda::gemm_algo_cache_reset();
  cuda::gemm_algos_preload(records);
  timed = cuda::gemm_autotuned_shapes();
  EXPECT_EQ(forward(), tuned_bits) << "the recorded algorithm must give the tuned run's bits";
  EXPECT_EQ(cuda::gemm_autotuned_shapes(), timed) << "a recorded configuration was timed again";
  EXPECT_EQ(cuda::gemm_algos_reused(), 1);
  EXPECT_EQ(cuda::gemm_algos_tuned().size(), 1u) << "a taken record is exported again";

  cuda::gemm_algo_cache_reset();
  cuda::GemmAlgoRecord forged = records[0];
  forged.algo.fill(~uint64_t(0));
  cuda::gemm_algos_preload({forged});
  timed = cuda::gemm_autotuned_shapes();
  forward();
  EXPECT_EQ(cuda::gemm_algos_reused(), 0) << "cuBLASLt's check should refuse forged algorithm data";
  EXPECT_EQ(cuda::gemm_autotuned_shapes() - timed, 1);
  VecD ref(N * OC, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o)
      for (int i = 0; i < IC; ++i) ref[n * OC + o] += double(inp[n * IC + i]) * w[size_t(o) * IC + i];
  expect_emulated("matmul_forward after a refused record", out.download(), ref, rb(ref), kUBf16);
}

// ---- cross-entropy ---------------------------------------------------------------------

TEST_F(CudaOps, VocabParallelCrossEntropy) {
  // Two shards of a padded vocabulary (Vl a multiple of 8: vector loads); three, the last
  // all padding (its max -inf, its sum 0, rescaled to 0); then one unsharded odd-width
  // vocabulary (scalar path).
  struct Case {
    int shards, Vl;
    int64_t vocab_real;
  };
  for (const Case cs : {Case{2, 504, 1000}, Case{3, 504, 1000}, Case{1, 999, 999}}) {
    SCOPED_TRACE("shards=" + std::to_string(cs.shards) + " Vl=" + std::to_string(cs.Vl));
    const int64_t N = 70;
    std::mt19937 rng(6 + cs.Vl);
    std::uniform_int_distribution<int32_t> pick(0, int32_t(cs.vocab_real) - 1);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = pick(rng);
    targets[3] = targets[17] = cpu::kIgnoreIndex;
    const auto d_targets = to_device(targets);
    std::vector<VecF> logits(cs.shards);
    for (auto& l : logits) l = random_bf16(rng, N * cs.Vl, 0.f, 3.f);
    // Global statistics, as the all-reduces over the shards would produce them.
    VecF gmax(N, -INFINITY), gsum(N, 0.f), gtarget(N, 0.f);
    VecD ref_max(N, -INFINITY);
    for (int s = 0; s < cs.shards; ++s) {
      const int64_t start = int64_t(s) * cs.Vl;
      Bf16 d_l(logits[s]);
      F32 mx(N), tl(N);
      cuda::xent_local_max(mx.get(), d_l.get(), N, cs.Vl, start, cs.vocab_real, stream);
      cuda::xent_target_logit(tl.get(), d_l.get(), d_targets->get(), N, cs.Vl, start, stream);
      VecF cpu_mx(N), cpu_tl(N);
      cpu::xent_local_max(cpu_mx.data(), logits[s].data(), N, cs.Vl, start, cs.vocab_real);
      cpu::xent_target_logit(cpu_tl.data(), logits[s].data(), targets.data(), N, cs.Vl, start);
      expect_bitwise("xent_local_max (exact)", mx.download(), cpu_mx);
      expect_bitwise("xent_target_logit (exact)", tl.download(), cpu_tl);
      F32 fused_max(N), fused_sum(N);  // the one-pass form: its max is the same exact max
      cuda::xent_local_stats(fused_max.get(), fused_sum.get(), d_l.get(), N, cs.Vl, start, cs.vocab_real, stream);
      expect_bitwise("xent_local_stats max (exact)", fused_max.download(), cpu_mx);
      for (int64_t n = 0; n < N; ++n) gmax[n] = std::max(gmax[n], cpu_mx[n]), gtarget[n] += cpu_tl[n];
    }
    F32 d_gmax(gmax);
    VecD ref_sum(N, 0.0);
    VecF cpu_sum(N, 0.f);
    for (int s = 0; s < cs.shards; ++s) {
      const int64_t start = int64_t(s) * cs.Vl;
      Bf16 d_l(logits[s]);
      F32 sum(N);
      cuda::xent_local_sumexp(sum.get(), d_l.get(), d_gmax.get(), N, cs.Vl, start, cs.vocab_real,
                              stream);
      VecF cpu_s(N);
      cpu::xent_local_sumexp(cpu_s.data(), logits[s].data(), gmax.data(), N, cs.Vl, start,
                             cs.vocab_real);
      VecD ref_s(N, 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int v = 0; v < cs.Vl && start + v < cs.vocab_real; ++v)
          ref_s[n] += std::exp(double(logits[s][n * cs.Vl + v]) - gmax[n]);
      expect_emulated("xent_local_sumexp", sum.download(), ref_s, cpu_s, kUF32);
      // The one-pass form, its sum rescaled from the shard's max to the global one, as the
      // CUDA backend assembles it over TP shards (the emulation rule of the two-pass form).
      F32 fused_max(N), fused_sum(N);
      cuda::xent_local_stats(fused_max.get(), fused_sum.get(), d_l.get(), N, cs.Vl, start, cs.vocab_real, stream);
      cuda::xent_rescale_sum(fused_sum.get(), fused_max.get(), d_gmax.get(), N, stream);
      expect_emulated("xent_local_stats sum, rescaled", fused_sum.download(), ref_s, cpu_s, kUF32);
      const VecF got = sum.download();
      for (int64_t n = 0; n < N; ++n) gsum[n] += got[n], ref_sum[n] += ref_s[n], cpu_sum[n] += cpu_s[n];
    }
    F32 d_gsum(gsum), d_gtarget(gtarget), losses(N);
    cuda::xent_losses(losses.get(), d_gmax.get(), d_gsum.get(), d_gtarget.get(), d_targets->get(),
                      N, stream);
    VecD ref_loss(N);
    VecF cpu_loss(N);
    cpu::xent_losses(cpu_loss.data(), gmax.data(), cpu_sum.data(), gtarget.data(), targets.data(), N);
    for (int64_t n = 0; n < N; ++n)
      ref_loss[n] = targets[n] == cpu::kIgnoreIndex ? 0.0
                                                     : std::log(ref_sum[n]) + gmax[n] - gtarget[n];
    expect_emulated("xent_losses", losses.download(), ref_loss, cpu_loss, kUF32);

    const float scale = 1.f / float(N - 2);
    for (int s = 0; s < cs.shards; ++s) {
      const int64_t start = int64_t(s) * cs.Vl;
      Bf16 d_l(logits[s]);  // dlogits written in place over the logits
      cuda::xent_backward(d_l.get(), d_l.get(), d_targets->get(), d_gmax.get(), d_gsum.get(), N,
                          cs.Vl, start, cs.vocab_real, scale, stream);
      VecD ref(N * cs.Vl, 0.0);
      for (int64_t n = 0; n < N; ++n) {
        if (targets[n] == cpu::kIgnoreIndex) continue;
        for (int v = 0; v < cs.Vl && start + v < cs.vocab_real; ++v) {
          const double p = std::exp(double(logits[s][n * cs.Vl + v]) - gmax[n]) / ref_sum[n];
          ref[n * cs.Vl + v] = (p - (start + v == targets[n] ? 1.0 : 0.0)) * scale;
        }
      }
      expect_emulated("xent_backward (in place)", d_l.download(), ref, rb(ref), kUBf16);
    }
  }
}

// The unsharded cross-entropy in one kernel (one TP rank) is the separate kernels' result
// bit for bit: statistics, losses and the in-place dlogits, with padding columns and
// ignored rows; rows in shared memory (504, GPT-2's 50304), an odd width (999) and a row
// too long for shared memory (120000) read twice through L2; without a gradient it leaves
// the logits alone.
TEST_F(CudaOps, FusedCrossEntropyIsTheSeparateKernelsBitForBit) {
  for (const auto [V, vocab_real] :
       {std::pair<int, int64_t>{504, 500}, {999, 999}, {50304, 50257}, {120000, 119990}}) {
    SCOPED_TRACE("V=" + std::to_string(V));
    const int64_t N = V > 100000 ? 5 : V > 1000 ? 9 : 70;
    std::mt19937 rng(17 + V);
    std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab_real) - 1);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = pick(rng);
    targets[3] = cpu::kIgnoreIndex;
    targets[N - 1] = int32_t(vocab_real) - 1;  // the last real column
    const auto d_targets = to_device(targets);
    const VecF logits = random_bf16(rng, N * V, 0.f, 3.f);
    const float scale = 1.f / float(N - 1);
    // Separate kernels.
    Bf16 sep(logits);
    F32 mx(N), sum(N), tl(N), loss(N);
    cuda::xent_local_stats(mx.get(), sum.get(), sep.get(), N, V, 0, vocab_real, stream);
    cuda::xent_target_logit(tl.get(), sep.get(), d_targets->get(), N, V, 0, stream);
    cuda::xent_losses(loss.get(), mx.get(), sum.get(), tl.get(), d_targets->get(), N, stream);
    cuda::xent_backward(sep.get(), sep.get(), d_targets->get(), mx.get(), sum.get(), N, V, 0, vocab_real, scale,
                        stream);
    // Fused, in place, and without a gradient.
    Bf16 fused(logits);
    F32 fmx(N), fsum(N), floss(N), nloss(N), nmx(N), nsum(N);
    cuda::xent_fused(floss.get(), fmx.get(), fsum.get(), fused.get(), fused.get(), d_targets->get(), N, V, vocab_real,
                     scale, stream);
    Bf16 untouched(logits);
    cuda::xent_fused(nloss.get(), nmx.get(), nsum.get(), nullptr, untouched.get(), d_targets->get(), N, V, vocab_real,
                     scale, stream);
    expect_bitwise("xent_fused row max", fmx.download(), mx.download());
    expect_bitwise("xent_fused row sum", fsum.download(), sum.download());
    expect_bitwise("xent_fused losses", floss.download(), loss.download());
    expect_bitwise("xent_fused dlogits (in place)", fused.download(), sep.download());
    expect_bitwise("xent_fused losses, no gradient", nloss.download(), loss.download());
    expect_bitwise("xent_fused row max, no gradient", nmx.download(), mx.download());
    expect_bitwise("xent_fused row sum, no gradient", nsum.download(), sum.download());
    // Both forms ran: rows in shared memory at 504 and 50304 (any GPU with 100 KB of shared
    // memory per block), read twice at 999 (odd) and 120000 (240 KB).
    EXPECT_EQ(cuda::xent_fused_rows_in_shared_memory(V), V == 504 || V == 50304);
    expect_bitwise("xent_fused without gradient: logits", untouched.download(), logits);
    const VecF l = loss.download();
    EXPECT_EQ(l[3], 0.f) << "an ignored row's loss";
    for (int64_t n = 0; n < N; ++n)
      if (n != 3) EXPECT_GT(l[n], 0.f) << "row " << n;  // -log p of a real column: p < 1
  }
}

// ---- attention -------------------------------------------------------------------------

struct AttnRef {
  VecD out, lse, dqkv;
  VecD score_scale;  // per row: scale * max_j sum_i |q_i k_ji| (for the lse bound)
};
// fp64 attention forward and backward. With `emulate`, bf16 roundings where the kernels
// round: the unnormalised probabilities before P V, P before dV, dS before dQ and dK, and
// the output that the backward's delta = rowsum(dout * out) reads. Outputs stay unrounded.
AttnRef attention64(const VecF& qkv, const VecF& dout, int B, int T, int NH, int HS,
                    bool emulate) {
  auto R = [&](double x) { return emulate ? rb(x) : x; };
  const int C = NH * HS;
  const double scale = 1.0 / std::sqrt(double(HS));
  AttnRef r{VecD(size_t(B) * T * C), VecD(size_t(B) * NH * T), VecD(qkv.size(), 0.0),
            VecD(size_t(B) * NH * T)};
  auto at = [&](int b, int t, int part, int h) { return (size_t(b) * T + t) * 3 * C + part * C + h * HS; };
  VecD e(T), dp(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        double m = -INFINITY, l = 0, worst = 0;
        for (int j = 0; j <= t; ++j) {
          double s = 0, sa = 0;
          for (int i = 0; i < HS; ++i) {
            const double prod = double(qkv[at(b, t, 0, h) + i]) * qkv[at(b, j, 1, h) + i];
            s += prod, sa += std::fabs(prod);
          }
          e[j] = s * scale, m = std::max(m, e[j]), worst = std::max(worst, sa * scale);
        }
        for (int j = 0; j <= t; ++j) e[j] = std::exp(e[j] - m), l += e[j];
        const size_t o = (size_t(b) * T + t) * C + h * HS, row = (size_t(b) * NH + h) * T + t;
        r.lse[row] = m + std::log(l), r.score_scale[row] = worst;
        for (int i = 0; i < HS; ++i) {
          double acc = 0;
          for (int j = 0; j <= t; ++j) acc += R(e[j]) * qkv[at(b, j, 2, h) + i];
          r.out[o + i] = acc / l;
        }
        double delta = 0;
        for (int i = 0; i < HS; ++i) delta += double(dout[o + i]) * R(r.out[o + i]);
        for (int j = 0; j <= t; ++j) {
          const double p = e[j] / l;
          double d = 0;
          for (int i = 0; i < HS; ++i) {
            r.dqkv[at(b, j, 2, h) + i] += R(p) * dout[o + i];
            d += double(dout[o + i]) * qkv[at(b, j, 2, h) + i];
          }
          const double ds = R(p * (d - delta));
          for (int i = 0; i < HS; ++i) {
            r.dqkv[at(b, t, 0, h) + i] += scale * ds * qkv[at(b, j, 1, h) + i];
            r.dqkv[at(b, j, 1, h) + i] += scale * ds * qkv[at(b, t, 0, h) + i];
          }
        }
      }
  return r;
}

// Runs forward and backward through `fwd`/`bwd` and checks them against attention64.
template <class Fwd, class Bwd>
void check_attention(const std::string& name, int B, int T, int NH, int HS, uint32_t seed,
                     Fwd fwd, Bwd bwd, bool test_accumulate, bool deterministic) {
  SCOPED_TRACE(name + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
               " NH=" + std::to_string(NH) + " HS=" + std::to_string(HS));
  std::mt19937 rng(seed);
  const int C = NH * HS;
  const VecF qkv = random_bf16(rng, size_t(B) * T * 3 * C), dout = random_bf16(rng, size_t(B) * T * C);
  const AttnRef r64 = attention64(qkv, dout, B, T, NH, HS, false);
  const AttnRef em = attention64(qkv, dout, B, T, NH, HS, true);
  Bf16 d_qkv(qkv), d_dout(dout), out(size_t(B) * T * C), dqkv(qkv.size());
  F32 lse(size_t(B) * NH * T);
  fwd(out.get(), lse.get(), d_qkv.get());
  expect_emulated(name + " out", out.download(), r64.out, rb(em.out), kUBf16);
  // lse is fp32 internal state, bounded by Higham's rule: each score is an fp32 sum of HS
  // bf16 products (at most gamma_{HS+2} sum |q_i k_i| after scaling); the sum of at most T
  // exponentials errs by gamma_{T+8} relative, which log turns into the same absolute error;
  // plus a handful of roundings of the exp/log/add themselves.
  const VecF got_lse = lse.download();
  VecD tol(got_lse.size());
  for (size_t i = 0; i < tol.size(); ++i)
    tol[i] = gamma32(HS + 2) * r64.score_scale[i] + gamma32(T + 8) +
             16 * kUF32 * std::fabs(r64.lse[i]);
  expect_close_each(name + " lse", got_lse, r64.lse, tol);

  bwd(dqkv.get(), d_dout.get(), d_qkv.get(), out.get(), lse.get(), false);
  const VecF g = dqkv.download();
  expect_emulated(name + " dqkv", g, r64.dqkv, rb(em.dqkv), kUBf16);
  dqkv.poison();
  bwd(dqkv.get(), d_dout.get(), d_qkv.get(), out.get(), lse.get(), false);
  if (deterministic) {
    expect_bitwise(name + " dqkv repeat", dqkv.download(), g);
  } else {  // recorded, not required (cuDNN does not promise reproducible dQ)
    const VecF again = dqkv.download();
    std::printf("[     info ] %s dqkv repeat bitwise equal: %s\n", name.c_str(),
                std::memcmp(again.data(), g.data(), g.size() * sizeof(float)) == 0 ? "yes" : "no");
  }
  if (test_accumulate) {
    const VecF prefill = random_bf16(rng, qkv.size());
    Bf16 acc(prefill);
    bwd(acc.get(), d_dout.get(), d_qkv.get(), out.get(), lse.get(), true);
    expect_emulated(name + " dqkv (accumulate)", acc.download(), cat(prefill, r64.dqkv),
                    rb(cat(prefill, em.dqkv)), kUBf16);
  }
}

TEST_F(CudaOps, FlashAttentionMatchesReference) {
  struct Shape {
    int B, T, NH, HS;
  };
  uint32_t seed = 70;
  for (const Shape s : {Shape{2, 200, 3, 64}, Shape{1, 130, 2, 128}, Shape{2, 77, 2, 40},
                        Shape{1, 64, 1, 32}, Shape{2, 1, 2, 64}, Shape{1, 300, 2, 96}}) {
    DeviceArray<char> scratch(cuda::attention_backward_scratch_bytes(s.B, s.T, s.NH));
    check_attention(
        "flash", s.B, s.T, s.NH, s.HS, seed++,
        [&](bf16* out, float* lse, const bf16* qkv) {
          cuda::attention_forward(out, lse, qkv, s.B, s.T, s.NH, s.HS, ctx().compute_stream());
        },
        [&](bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
            bool accumulate) {
          cuda::attention_backward(dqkv, scratch.get(), dout, qkv, out, lse, s.B, s.T, s.NH, s.HS,
                                   accumulate, ctx().compute_stream());
        },
        s.T == 200, true);
  }
}

TEST_F(CudaOps, CudnnAttentionMatchesReference) {
  cuda::CudnnAttention attn(ctx().cudnn());
  struct Shape {
    int B, T, NH, HS;
  };
  uint32_t seed = 90;
  for (const Shape s : {Shape{2, 200, 3, 64}, Shape{1, 130, 2, 128}}) {
    check_attention(
        "cudnn", s.B, s.T, s.NH, s.HS, seed++,
        [&](bf16* out, float* lse, const bf16* qkv) {
          attn.forward(out, lse, qkv, s.B, s.T, s.NH, s.HS, ctx().compute_stream());
        },
        [&](bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
            bool) {
          attn.backward(dqkv, dout, qkv, out, lse, s.B, s.T, s.NH, s.HS, ctx().compute_stream());
        },
        false, false);
  }
}

// ---- optimizer and norms ---------------------------------------------------------------

// The update beside other work (max_blocks: few 1024-thread blocks, float4 middles of the
// segments, scalar heads and tails) gives the plain kernel's bits: the overlapped
// optimizer step must not change results. Segments at odd offsets, so that both scalar
// edges run; non-zero moments (an FMA where the other kernel has none would show).
TEST_F(CudaOps, AdamWSharedGpuKernelIsBitwiseThePlainOne) {
  std::mt19937 rng(81);
  const int64_t total = 70001;
  const std::vector<cuda::ParamSegment> segs = {{1, 2999, 1}, {3003, 97, 0}, {3200, 58001, 1}, {61202, 8790, 0}};
  const VecF p = random_normal(rng, total), gr = random_normal(rng, total, 0.f, 0.1f);
  const VecF m = random_normal(rng, total, 0.f, 0.01f);
  VecF v = random_normal(rng, total, 0.f, 0.001f);
  for (auto& x : v) x = x * x;
  const auto d_segs = to_device(segs);
  const cuda::AdamWConfig cfg{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7};
  F32 scale(VecF{0.75f});
  // shift 1: the buffers start one element past an allocation (not 16-byte aligned: the
  // shared kernel's scalar form).
  auto run = [&](int max_blocks, int shift = 0) {
    auto pad = [&](const VecF& x) {
      VecF y(size_t(shift), 0.f);
      y.insert(y.end(), x.begin(), x.end());
      return y;
    };
    F32 dp(pad(p)), dg(pad(gr)), dm(pad(m)), dv(pad(v));
    Bf16 pbf(size_t(total + shift));
    cuda::adamw_update(dp.get() + shift, pbf.get() + shift, dg.get() + shift, dm.get() + shift, dv.get() + shift,
                       d_segs->get(), int(segs.size()), total, cfg, scale.get(), stream, max_blocks);
    std::vector<VecF> out{dp.download(), dm.download(), dv.download(), pbf.download()};
    for (auto& x : out) x.erase(x.begin(), x.begin() + shift);
    return out;
  };
  const auto plain = run(0);
  const char* names[] = {"param", "m", "v", "bf16 copy"};
  // 3 blocks: one chunk each; 1 block: its grid-stride loop over the 3 chunks; -2: 2 blocks
  // over unaligned buffers.
  for (int blocks : {3, 1, -2}) {
    const auto shared = blocks > 0 ? run(blocks) : run(-blocks, 1);
    for (int i = 0; i < 3; ++i)
      expect_bitwise(std::string("shared-GPU adamw ") + names[i] + ", " + std::to_string(blocks) + " blocks",
                     shared[size_t(i)], plain[size_t(i)]);
    size_t bf_diff = 0;  // NaN-poisoned gaps stay NaN in both
    for (int64_t i = 0; i < total; ++i)
      bf_diff += !(shared[3][size_t(i)] == plain[3][size_t(i)] ||
                   (std::isnan(shared[3][size_t(i)]) && std::isnan(plain[3][size_t(i)])));
    EXPECT_EQ(bf_diff, 0u) << "bf16 copies differ, " << blocks << " blocks";
  }
  // The CPU op's arithmetic, rounding for rounding (built with -ffp-contract=off).
  VecF cp = p, cm = m, cv = v;
  for (const auto& s : segs) {
    VecF g(gr.begin() + s.offset, gr.begin() + s.offset + s.length);
    for (auto& x : g) x *= 0.75f;
    cpu::adamw_update(cp.data() + s.offset, g.data(), cm.data() + s.offset, cv.data() + s.offset, s.length, cfg.lr,
                      cfg.beta1, cfg.beta2, cfg.eps, s.weight_decay ? cfg.weight_decay : 0.f, cfg.step);
  }
  expect_bitwise("adamw param against the CPU op", plain[0], cp);
  expect_bitwise("adamw m against the CPU op", plain[1], cm);
  expect_bitwise("adamw v against the CPU op", plain[2], cv);
}

TEST_F(CudaOps, AdamWOverSegmentsAndGradNorm) {
  std::mt19937 rng(8);
  const int64_t total = 10000;
  // Segments with a gap ([3100, 3200)) and an untouched tail ([9995, 10000)).
  const std::vector<cuda::ParamSegment> segs = {
      {0, 3000, 1}, {3000, 100, 0}, {3200, 5800, 1}, {9000, 995, 0}};
  const VecF p = random_normal(rng, total), gr = random_normal(rng, total, 0.f, 0.1f);
  const VecF m = random_normal(rng, total, 0.f, 0.01f);
  VecF v = random_normal(rng, total, 0.f, 0.001f);
  for (auto& x : v) x = x * x;
  const auto d_segs = to_device(segs);
  F32 dp(p), dg(gr), dm(m), dv(v), gscale(VecF{0.5f});
  Bf16 pbf(total);  // NaN: the gaps must stay untouched
  const cuda::AdamWConfig cfg{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3};
  cuda::adamw_update(dp.get(), pbf.get(), dg.get(), dm.get(), dv.get(), d_segs->get(),
                     int(segs.size()), total, cfg, gscale.get(), stream);
  VecF cp = p, cm = m, cv = v;  // CPU op on each segment, on the scaled gradient (exact: *0.5)
  VecD rp(p.begin(), p.end()), rm(m.begin(), m.end()), rv(v.begin(), v.end());
  const double bc1 = 1 - std::pow(0.9, 3.0), bc2 = 1 - std::pow(0.95, 3.0);
  for (const auto& s : segs) {
    VecF g(gr.begin() + s.offset, gr.begin() + s.offset + s.length);
    for (auto& x : g) x *= 0.5f;
    const float wd = s.weight_decay ? cfg.weight_decay : 0.f;
    cpu::adamw_update(cp.data() + s.offset, g.data(), cm.data() + s.offset, cv.data() + s.offset,
                      s.length, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, wd, cfg.step);
    for (int64_t i = s.offset; i < s.offset + s.length; ++i) {
      const double gi = 0.5 * double(gr[i]);
      rm[i] = double(0.9f) * m[i] + (1.0 - double(0.9f)) * gi;
      rv[i] = double(0.95f) * v[i] + (1.0 - double(0.95f)) * gi * gi;
      const double step = double(cfg.lr) / bc1, denom = std::sqrt(rv[i] / bc2) + double(cfg.eps);
      rp[i] = double(p[i]) * (1.0 - double(cfg.lr) * wd) - step * rm[i] / denom;
    }
  }
  const VecF gp = dp.download();
  expect_emulated("adamw param", gp, rp, cp, kUF32);
  expect_emulated("adamw m", dm.download(), rm, cm, kUF32);
  expect_emulated("adamw v", dv.download(), rv, cv, kUF32);
  const VecF gbf = pbf.download();
  size_t wrong = 0;
  for (int64_t i = 0; i < total; ++i) {
    const bool in_gap = (i >= 3100 && i < 3200) || i >= 9995;
    if (in_gap) wrong += (gp[i] != p[i] || !std::isnan(gbf[i])) ? 1 : 0;  // untouched
    else wrong += gbf[i] != rb(gp[i]) ? 1 : 0;                            // = bf16(param)
  }
  EXPECT_EQ(wrong, 0u) << "bf16 copy differs from bf16(param), or a gap was written";

  F32 x(random_normal(rng, total)), clip(1);
  DeviceArray<double> sumsq(1), sumsq2(1);
  DeviceArray<char> scratch(cuda::sum_squares_scratch_bytes(total));
  cuda::sum_squares(sumsq.get(), scratch.get(), x.get(), d_segs->get(), int(segs.size()), total,
                    stream);
  cuda::sum_squares(sumsq2.get(), scratch.get(), x.get(), d_segs->get(), int(segs.size()), total,
                    stream);
  const VecF xs = x.download();
  double ref = 0, abs_terms = 0;
  for (const auto& s : segs)
    for (int64_t i = s.offset; i < s.offset + s.length; ++i) ref += double(xs[i]) * xs[i];
  abs_terms = ref;  // squares are non-negative
  const double got = sumsq.download()[0];
  // An fp64 sum of n terms errs by at most gamma_n(fp64) * sum |terms| (Higham 3.1).
  const double u64 = DBL_EPSILON / 2, tol = total * u64 / (1 - total * u64) * abs_terms;
  EXPECT_NEAR(got, ref, tol);
  EXPECT_EQ(got, sumsq2.download()[0]) << "sum_squares is not deterministic";
  std::printf("[  max err ] %-34s %.3e  (tol %.3e)\n", "sum_squares", std::fabs(got - ref), tol);
  cuda::clip_scale_from_sum_squares(clip.get(), sumsq.get(), 1.0f, stream);
  EXPECT_FLOAT_EQ(clip.download()[0], float(std::min(1.0, 1.0 / (std::sqrt(got) + 1e-6))));

  // The float4 path's scalar heads and tails (segments starting and ending off a multiple of
  // 4, one across a block boundary of 32768), and the scalar path (x not 16-byte aligned).
  const int64_t big = 80000;
  const std::vector<cuda::ParamSegment> odd = {{1, 4093, 1}, {4101, 30000, 0}, {34102, 2, 1}, {40001, 39990, 1}};
  const auto d_odd = to_device(odd);
  F32 y(random_normal(rng, big + 1));
  const VecF ys = y.download();
  DeviceArray<char> scratch_big(cuda::sum_squares_scratch_bytes(big));
  for (int shift = 0; shift < 2; ++shift) {
    SCOPED_TRACE(shift ? "x not 16-byte aligned (scalar path)" : "x aligned (float4 path)");
    cuda::sum_squares(sumsq.get(), scratch_big.get(), y.get() + shift, d_odd->get(), int(odd.size()), big, stream);
    double r = 0;
    for (const auto& sg : odd)
      for (int64_t i = sg.offset; i < sg.offset + sg.length; ++i) r += double(ys[i + shift]) * ys[i + shift];
    const double t = big * u64 / (1 - big * u64) * r;  // as above: fp64 sum of non-negative terms
    EXPECT_NEAR(sumsq.download()[0], r, t);
  }
}

}  // namespace
}  // namespace braid::test

#else  // CPU-only build: the CUDA backend is absent.
TEST(CudaOps, SkippedWithoutCudaBackend) { GTEST_SKIP() << "built without the CUDA backend"; }
#endif
