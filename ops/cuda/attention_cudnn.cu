// Causal attention through cuDNN's fused flash-attention engines, as an alternative to
// Braid's own kernels (attention.cu) that the caller selects. Built on the cuDNN backend
// (graph) API of cudnn.h alone: the operation graphs below are the ones cuDNN's runtime
// fusion engines recognise as scaled dot-product attention (the pattern that the
// cudnn-frontend library would generate), written out op by op.
//
//   forward:  S = Q K^T; S *= scale; causal mask (row index >= column index, else lowest);
//             M = rowmax S; E = exp(S - M); Z = rowsum E; stats = M + log Z; P = E / Z (bf16);
//             O = P V
//   backward: D = rowsum(dO * O) (fp32 workspace); S as above; P = exp(S - stats);
//             dV = P^T dO; dP = dO V^T; dS = P (dP - D) scale; dK = dS^T Q;
//             dQ = dS K (fp32 workspace), then converted to bf16.
// The [B, T, 3, NH, HS] qkv buffer is described to cuDNN by strides (Q, K, V are views of
// it; K and V enter the score products transposed, by swapping the last two dims and
// strides), so no copies are made. Plans are built once per shape and cached; each plan
// owns its workspace (through the caching allocator).
//
// cuDNN's backward accumulates dQ across key tiles in its own kernels; unlike attention.cu,
// its result is not guaranteed bitwise reproducible.
#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/device_memory.h"

namespace braid::cuda {
namespace {

// CUDNN_ATTR_OPERATIONGRAPH_HANDLE and CUDNN_ATTR_EXECUTION_PLAN_HANDLE are marked
// deprecated in cuDNN 9 headers but still required by the backend of these versions to bind
// a graph and a plan to a handle; their values are spelled out to keep the build free of
// deprecation warnings.
constexpr auto kGraphHandleAttr = static_cast<cudnnBackendAttributeName_t>(800);
constexpr auto kPlanHandleAttr = static_cast<cudnnBackendAttributeName_t>(400);

using Dims = std::array<int64_t, 4>;

// Owner of one backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) {
    BRAID_CHECK_CUDNN(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* value) {
    BRAID_CHECK_CUDNN(cudnnBackendSetAttribute(d_, name, type, count, value));
  }
  void set_desc(cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t v) {
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  }
  void finalize() { BRAID_CHECK_CUDNN(cudnnBackendFinalize(d_)); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// A finalized execution plan, with everything it was built from kept alive.
struct Plan {
  std::vector<std::unique_ptr<Desc>> keep;
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t workspace_bytes = 0;  // the engine's own
  void* workspace = nullptr;    // engine workspace followed by the graph's fp32 buffers
  ~Plan() {
    keep.clear();
    if (workspace) device_free(workspace);
  }
};

class GraphBuilder {
 public:
  explicit GraphBuilder(cudnnHandle_t handle) : handle_(handle) {}

  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides,
                                  bool is_virtual, bool by_value = false) {
    Desc& t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    t.finalize();
    return t.get();
  }
  cudnnBackendDescriptor_t scalar(int64_t uid) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }
  cudnnBackendDescriptor_t virt(cudnnDataType_t type, Dims dims, Dims strides) {
    return tensor(next_virtual_uid_++, type, dims, strides, true);
  }

  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
              cudnnBackendDescriptor_t c) {
    Desc& mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    mm.finalize();
    Desc& op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm.get());
    op.finalize();
    ops_.push_back(op.get());
  }

  // y = mode(x[, b][, t]); `prec` is the compute type; axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y,
                 cudnnBackendDescriptor_t t = nullptr, cudnnDataType_t prec = CUDNN_DATA_FLOAT,
                 int64_t axis = -1) {
    Desc& pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    pw.finalize();
    Desc& op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw.get());
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    op.finalize();
    ops_.push_back(op.get());
  }

  void reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t y) {
    Desc& red = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    red.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    red.set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    red.finalize();
    Desc& op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, red.get());
    op.finalize();
    ops_.push_back(op.get());
  }

  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    Desc& op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    op.finalize();
    ops_.push_back(op.get());
  }

  // The causal mask on scores s: keep where row index >= column index, else `lowest`.
  cudnnBackendDescriptor_t causal_mask(cudnnBackendDescriptor_t s, Dims dims, Dims strides,
                                       cudnnBackendDescriptor_t lowest) {
    auto row = virt(CUDNN_DATA_INT32, dims, strides);
    auto col = virt(CUDNN_DATA_INT32, dims, strides);
    auto keep = virt(CUDNN_DATA_BOOLEAN, dims, strides);
    auto out = virt(CUDNN_DATA_FLOAT, dims, strides);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, row, nullptr, CUDNN_DATA_INT32, 2);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, col, nullptr, CUDNN_DATA_INT32, 3);
    pointwise(CUDNN_POINTWISE_CMP_GE, row, col, keep, nullptr, CUDNN_DATA_BOOLEAN);
    pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, lowest, out, keep);
    return out;
  }

  // Operation graph -> heuristics -> the first engine configuration that finalizes.
  std::unique_ptr<Plan> build() {
    auto plan = std::make_unique<Plan>();
    Desc& graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph.set(kGraphHandleAttr, CUDNN_TYPE_HANDLE, 1, &handle_);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops_.size()),
              ops_.data());
    graph.finalize();
    Desc& heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph.get());
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    heur.finalize();
    int64_t count = 0;
    BRAID_CHECK_CUDNN(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    BRAID_CHECK(count > 0, "cuDNN offers no engine for this attention graph");
    std::vector<cudnnBackendDescriptor_t> cfgs;
    for (int64_t i = 0; i < count; ++i)
      cfgs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR).get());
    int64_t got = 0;
    BRAID_CHECK_CUDNN(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                               cfgs.data()));
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; i < got; ++i) {
      auto p = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      p->set(kPlanHandleAttr, CUDNN_TYPE_HANDLE, 1, &handle_);
      p->set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[size_t(i)]);
      last = cudnnBackendFinalize(p->get());
      if (last != CUDNN_STATUS_SUCCESS) continue;  // try the next configuration
      int64_t ws = 0, n = 0;
      BRAID_CHECK_CUDNN(cudnnBackendGetAttribute(p->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                 CUDNN_TYPE_INT64, 1, &n, &ws));
      plan->plan = p->get();
      plan->workspace_bytes = ws;
      keep_.push_back(std::move(p));
      plan->keep = std::move(keep_);
      return plan;
    }
    BRAID_CHECK_CUDNN(last);  // none finalized: report the last failure
    return nullptr;
  }

 private:
  Desc& make(cudnnBackendDescriptorType_t type) {
    keep_.push_back(std::make_unique<Desc>(type));
    return *keep_.back();
  }

  cudnnHandle_t handle_;
  std::vector<std::unique_ptr<Desc>> keep_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_uid_ = 1000;
};

// Unique ids of the graphs' real tensors.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kLowest, kdO, kdQ, kdK, kdV, kOne, kSoftmaxSum, kdQAccum
};

struct Shape {
  int64_t B, T, NH, HS;
  int64_t C() const { return NH * HS; }
  // A head-major view [B, NH, T, HS] of the q/k/v part of qkv (row stride 3C) ...
  Dims qkv_dims() const { return {B, NH, T, HS}; }
  Dims qkv_strides() const { return {T * 3 * C(), HS, 3 * C(), 1}; }
  // ... the same transposed in the last two dims ...
  Dims qkv_dims_t() const { return {B, NH, HS, T}; }
  Dims qkv_strides_t() const { return {T * 3 * C(), HS, 1, 3 * C()}; }
  // ... and out/dout [B, T, NH, HS] (row stride C).
  Dims o_strides() const { return {T * C(), HS, C(), 1}; }
  Dims scores() const { return {B, NH, T, T}; }
  Dims score_strides() const { return {NH * T * T, T * T, T, 1}; }
  Dims scores_t_strides() const { return {NH * T * T, T * T, 1, T}; }
  Dims rows() const { return {B, NH, T, 1}; }
  Dims row_strides() const { return {NH * T, T, 1, 1}; }
};

std::unique_ptr<Plan> build_forward(cudnnHandle_t handle, const Shape& s) {
  GraphBuilder g(handle);
  auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, s.qkv_dims(), s.qkv_strides(), false);
  auto kt = g.tensor(kK, CUDNN_DATA_BFLOAT16, s.qkv_dims_t(), s.qkv_strides_t(), false);
  auto v = g.tensor(kV, CUDNN_DATA_BFLOAT16, s.qkv_dims(), s.qkv_strides(), false);
  auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, s.qkv_dims(), s.o_strides(), false);
  auto stats = g.tensor(kStats, CUDNN_DATA_FLOAT, s.rows(), s.row_strides(), false);
  auto scale = g.scalar(kScale), lowest = g.scalar(kLowest);
  const Dims S = s.scores(), SS = s.score_strides(), R = s.rows(), RS = s.row_strides();

  auto s0 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.matmul(q, kt, s0);
  auto s1 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_MUL, s0, scale, s1);
  auto s2 = g.causal_mask(s1, S, SS, lowest);
  auto m = g.virt(CUDNN_DATA_FLOAT, R, RS);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, s2, m);
  auto sub = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_SUB, s2, m, sub);
  auto e = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_EXP, sub, nullptr, e);
  auto z = g.virt(CUDNN_DATA_FLOAT, R, RS);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
  auto logz = g.virt(CUDNN_DATA_FLOAT, R, RS);
  g.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, logz);
  g.pointwise(CUDNN_POINTWISE_ADD, m, logz, stats);
  auto p = g.virt(CUDNN_DATA_BFLOAT16, S, SS);  // the second product takes bf16 P
  g.pointwise(CUDNN_POINTWISE_DIV, e, z, p);
  g.matmul(p, v, o);
  return g.build();
}

std::unique_ptr<Plan> build_backward(cudnnHandle_t handle, const Shape& s) {
  GraphBuilder g(handle);
  const Dims S = s.scores(), SS = s.score_strides(), R = s.rows(), RS = s.row_strides();
  const Dims X = s.qkv_dims(), XS = s.qkv_strides();
  auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, X, XS, false);
  auto kt = g.tensor(kK, CUDNN_DATA_BFLOAT16, s.qkv_dims_t(), s.qkv_strides_t(), false);
  auto vt = g.tensor(kV, CUDNN_DATA_BFLOAT16, s.qkv_dims_t(), s.qkv_strides_t(), false);
  auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, X, s.o_strides(), false);
  auto dout = g.tensor(kdO, CUDNN_DATA_BFLOAT16, X, s.o_strides(), false);
  auto stats = g.tensor(kStats, CUDNN_DATA_FLOAT, R, RS, false);
  auto dq = g.tensor(kdQ, CUDNN_DATA_BFLOAT16, X, XS, false);
  auto dk = g.tensor(kdK, CUDNN_DATA_BFLOAT16, X, XS, false);
  auto dv = g.tensor(kdV, CUDNN_DATA_BFLOAT16, X, XS, false);
  auto softmax_sum = g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, R, RS, false);
  auto dq_accum = g.tensor(kdQAccum, CUDNN_DATA_FLOAT, X,
                           {s.NH * s.T * s.HS, s.T * s.HS, s.HS, 1}, false);
  auto scale = g.scalar(kScale), lowest = g.scalar(kLowest), one = g.scalar(kOne);

  // D = rowsum(dO * O)
  auto dot = g.virt(CUDNN_DATA_FLOAT, X, s.o_strides());
  g.pointwise(CUDNN_POINTWISE_MUL, dout, o, dot);
  auto dsum = g.virt(CUDNN_DATA_FLOAT, R, RS);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, dot, dsum);
  g.pointwise(CUDNN_POINTWISE_MUL, dsum, one, softmax_sum);
  // P = exp(scale Q K^T (causal) - stats)
  auto s0 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.matmul(q, kt, s0);
  auto s1 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_MUL, s0, scale, s1);
  auto s2 = g.causal_mask(s1, S, SS, lowest);
  auto s3 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_SUB, s2, stats, s3);
  auto p = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_EXP, s3, nullptr, p);
  // dV = P^T dO
  auto pt = g.virt(CUDNN_DATA_BFLOAT16, {s.B, s.NH, s.T, s.T}, s.scores_t_strides());
  g.reshape(p, pt);
  g.matmul(pt, dout, dv);
  // dS = P (dO V^T - D) scale
  auto dp = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.matmul(dout, vt, dp);
  auto dp_sub = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_SUB, dp, softmax_sum, dp_sub);
  auto ds0 = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_MUL, dp_sub, p, ds0);
  auto ds = g.virt(CUDNN_DATA_FLOAT, S, SS);
  g.pointwise(CUDNN_POINTWISE_MUL, ds0, scale, ds);
  // dK = dS^T Q
  auto dst = g.virt(CUDNN_DATA_BFLOAT16, {s.B, s.NH, s.T, s.T}, s.scores_t_strides());
  g.reshape(ds, dst);
  g.matmul(dst, q, dk);
  // dQ = dS K, accumulated in fp32, then bf16
  auto k = g.virt(CUDNN_DATA_BFLOAT16, X, XS);
  g.reshape(kt, k);
  g.matmul(ds, k, dq_accum);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, dq);
  return g.build();
}

void execute(cudnnHandle_t handle, const Plan& plan, const std::vector<int64_t>& uids,
             const std::vector<void*>& ptrs, cudaStream_t stream) {
  BRAID_CHECK_CUDNN(cudnnSetStream(handle, stream));
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()),
           uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()),
           ptrs.data());
  void* ws = plan.workspace;
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  pack.finalize();
  BRAID_CHECK_CUDNN(cudnnBackendExecute(handle, plan.plan, pack.get()));
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

struct CudnnAttention::Impl {
  cudnnHandle_t handle;
  std::map<std::tuple<int, int, int, int>, std::unique_ptr<Plan>> fwd, bwd;
};

CudnnAttention::CudnnAttention(cudnnHandle_t handle) : impl_(new Impl{handle, {}, {}}) {}
CudnnAttention::~CudnnAttention() { delete impl_; }

void CudnnAttention::forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH,
                             int HS, cudaStream_t stream) {
  BRAID_CHECK(HS % 8 == 0 && HS <= 128, "cuDNN attention: head size " << HS);
  const Shape s{B, T, NH, HS};
  auto& plan = impl_->fwd[{B, T, NH, HS}];
  if (!plan) {
    plan = build_forward(impl_->handle, s);
    plan->workspace = device_alloc(size_t(std::max<int64_t>(plan->workspace_bytes, 256)));
  }
  const int64_t C = s.C();
  float scale = 1.f / std::sqrt(float(HS)), lowest = -FLT_MAX;
  bf16* base = const_cast<bf16*>(qkv);
  execute(impl_->handle, *plan, {kQ, kK, kV, kO, kStats, kScale, kLowest},
          {base, base + C, base + 2 * C, out, lse, &scale, &lowest}, stream);
}

void CudnnAttention::backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int B, int T, int NH, int HS,
                              cudaStream_t stream) {
  BRAID_CHECK(HS % 8 == 0 && HS <= 128, "cuDNN attention: head size " << HS);
  const Shape s{B, T, NH, HS};
  const size_t sum_bytes = size_t(B) * NH * T * sizeof(float);
  const size_t accum_bytes = size_t(B) * NH * T * HS * sizeof(float);
  auto& plan = impl_->bwd[{B, T, NH, HS}];
  if (!plan) {
    plan = build_backward(impl_->handle, s);
    plan->workspace = device_alloc(align256(size_t(plan->workspace_bytes)) + align256(sum_bytes) +
                                   accum_bytes);
  }
  char* extra = static_cast<char*>(plan->workspace) + align256(size_t(plan->workspace_bytes));
  void* softmax_sum = extra;
  void* dq_accum = extra + align256(sum_bytes);
  // The dQ accumulator must start at zero (older cuDNN versions rely on the caller for it).
  BRAID_CHECK_CUDA(cudaMemsetAsync(dq_accum, 0, accum_bytes, stream));
  const int64_t C = s.C();
  float scale = 1.f / std::sqrt(float(HS)), lowest = -FLT_MAX, one = 1.f;
  bf16* base = const_cast<bf16*>(qkv);
  execute(impl_->handle, *plan,
          {kQ, kK, kV, kO, kdO, kStats, kdQ, kdK, kdV, kSoftmaxSum, kdQAccum, kScale, kLowest,
           kOne},
          {base, base + C, base + 2 * C, const_cast<bf16*>(out), const_cast<bf16*>(dout),
           const_cast<float*>(lse), dqkv, dqkv + C, dqkv + 2 * C, softmax_sum, dq_accum, &scale,
           &lowest, &one},
          stream);
}

}  // namespace braid::cuda
