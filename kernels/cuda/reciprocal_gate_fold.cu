// The gate folds of RA (query rows) and R-MLP (down-projection columns); definitions in
// include/rakv/kernels/cuda/reciprocal_gate_fold.h.
//
// Why: composed from LibTorch ops, the RA fold and its backward are about twenty small kernels per
// layer (clamps, the per-head pattern, split, multiply, concatenate, their backwards) plus two
// copies of the [3C, C] weight: about 60 us per layer and step on an H200, 2% of a GPT-2 124M step.
// Here the forward is one pass that also does autocast's cast, and the backward one pass plus a
// one-block reduction. The R-MLP fold (two column slices scaled, concatenated, cast by autocast;
// slice gradients zero-padded and added, two reductions) passed over the [C, D_ff] weight six
// to eight times per layer and step, about 1 ms per step: likewise one pass each way here.
#include <cstdint>
#include <type_traits>

#include "block_primitives.cuh"
#include "dispatch.cuh"
#include "elem_convert.cuh"
#include "rakv/kernels/cuda/reciprocal_gate_fold.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr float kGateFloor = 1e-8f;

struct RowGate {
  int index = -1;      // gate index g, -1 for K and V rows (scale 1)
  bool reciprocal = false;
};

__device__ __forceinline__ RowGate row_gate(const GateFoldParams& p, int64_t row) {
  RowGate gate;
  if (row >= p.n_embd) return gate;
  const int64_t head_dim = p.n_embd / p.n_head;
  const int64_t head = row / head_dim;
  gate.reciprocal = row % head_dim >= head_dim - p.reciprocal_rank;
  gate.index = p.gates == 1 ? 0 : static_cast<int>(head);
  return gate;
}

__device__ __forceinline__ float row_scale(const GateFoldParams& p, const RowGate& gate) {
  if (gate.index < 0) return 1.f;
  return fmaxf(gate.reciprocal ? p.w_rec[gate.index] : p.w_std[gate.index], kGateFloor);
}

// One block per row.
template <typename w_t, typename f_t>
__global__ void __launch_bounds__(kThreads) gate_fold_forward_kernel(GateFoldParams p) {
  const int64_t row = blockIdx.x;
  const float s2 = row_scale(p, row_gate(p, row));
  const auto* in = reinterpret_cast<const Pack4<w_t>*>(static_cast<const w_t*>(p.weight) + row * p.n_embd);
  auto* out = reinterpret_cast<Pack4<f_t>*>(static_cast<f_t*>(p.folded) + row * p.n_embd);
  for (int64_t i = threadIdx.x; i < p.n_embd / 4; i += kThreads) {
    const Pack4<w_t> w = in[i];
    Pack4<f_t> f;
#pragma unroll
    for (int j = 0; j < 4; ++j) f.v[j] = from_float<f_t>(to_float(w.v[j]) * s2);
    out[i] = f;
  }
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  }
  __syncthreads();
  return total;  // valid in thread 0
}

// One block per row: the weight's gradient, and for query rows the row's dot product.
template <typename w_t, typename f_t>
__global__ void __launch_bounds__(kThreads) gate_fold_backward_kernel(GateFoldParams p) {
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const RowGate gate = row_gate(p, row);
  const float s2 = row_scale(p, gate);
  const auto* grad = reinterpret_cast<const Pack4<f_t>*>(static_cast<const f_t*>(p.grad_folded) + row * p.n_embd);
  const auto* weight = reinterpret_cast<const Pack4<w_t>*>(static_cast<const w_t*>(p.weight) + row * p.n_embd);
  auto* out = reinterpret_cast<Pack4<w_t>*>(static_cast<w_t*>(p.grad_weight) + row * p.n_embd);
  float dot = 0.f;
  for (int64_t i = threadIdx.x; i < p.n_embd / 4; i += kThreads) {
    const Pack4<f_t> g = grad[i];
    Pack4<w_t> dw;
    if (gate.index >= 0) {
      const Pack4<w_t> w = weight[i];
#pragma unroll
      for (int j = 0; j < 4; ++j) dot += to_float(g.v[j]) * to_float(w.v[j]);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) dw.v[j] = from_float<w_t>(to_float(g.v[j]) * s2);
    out[i] = dw;
  }
  if (gate.index < 0) return;  // uniform per block: every thread leaves together
  const float total = block_sum(dot, scratch);
  if (threadIdx.x == 0) p.workspace[row] = total;
}

// One block: every gate's gradient, the rows of each gate summed in row order.
__global__ void __launch_bounds__(kThreads) gate_fold_gate_grad_kernel(GateFoldParams p) {
  __shared__ float scratch[kThreads / 32];
  const int64_t head_dim = p.n_embd / p.n_head;
  for (int64_t g = 0; g < p.gates; ++g) {
    for (int kind = 0; kind < 2; ++kind) {
      const bool reciprocal = kind == 1;
      float sum = 0.f;
      for (int64_t row = threadIdx.x; row < p.n_embd; row += kThreads) {
        const int64_t head = row / head_dim;
        const bool row_reciprocal = row % head_dim >= head_dim - p.reciprocal_rank;
        if (row_reciprocal == reciprocal && (p.gates == 1 || head == g)) sum += p.workspace[row];
      }
      const float total = block_sum(sum, scratch);
      if (threadIdx.x == 0) {
        const float w = reciprocal ? p.w_rec[g] : p.w_std[g];
        (reciprocal ? p.grad_w_rec : p.grad_w_std)[g] = w >= kGateFloor ? total : 0.f;
      }
    }
  }
}

// R-MLP: one block per row.
template <typename w_t, typename f_t>
__global__ void __launch_bounds__(kThreads) mlp_fold_forward_kernel(MlpFoldParams p) {
  const int64_t row = blockIdx.x;
  const float a = *p.scale_std, b = *p.scale_rec;
  const auto* in = reinterpret_cast<const Pack4<w_t>*>(static_cast<const w_t*>(p.weight) + row * p.cols);
  auto* out = reinterpret_cast<Pack4<f_t>*>(static_cast<f_t*>(p.folded) + row * p.cols);
  for (int64_t i = threadIdx.x; i < p.cols / 4; i += kThreads) {
    const float s = 4 * i < p.split ? a : b;  // split % 4 == 0: a vector never straddles it
    const Pack4<w_t> w = in[i];
    Pack4<f_t> f;
#pragma unroll
    for (int j = 0; j < 4; ++j) f.v[j] = from_float<f_t>(to_float(w.v[j]) * s);
    out[i] = f;
  }
}

template <typename w_t, typename f_t>
__global__ void __launch_bounds__(kThreads) mlp_fold_backward_kernel(MlpFoldParams p) {
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const float a = *p.scale_std, b = *p.scale_rec;
  const auto* grad = reinterpret_cast<const Pack4<f_t>*>(static_cast<const f_t*>(p.grad_folded) + row * p.cols);
  const auto* weight = reinterpret_cast<const Pack4<w_t>*>(static_cast<const w_t*>(p.weight) + row * p.cols);
  auto* out = reinterpret_cast<Pack4<w_t>*>(static_cast<w_t*>(p.grad_weight) + row * p.cols);
  float dot_std = 0.f, dot_rec = 0.f;
  for (int64_t i = threadIdx.x; i < p.cols / 4; i += kThreads) {
    const bool standard = 4 * i < p.split;
    const Pack4<f_t> g = grad[i];
    const Pack4<w_t> w = weight[i];
    Pack4<w_t> dw;
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      dot += to_float(g.v[j]) * to_float(w.v[j]);
      dw.v[j] = from_float<w_t>(to_float(g.v[j]) * (standard ? a : b));
    }
    (standard ? dot_std : dot_rec) += dot;
    out[i] = dw;
  }
  const float total_std = block_sum(dot_std, scratch);
  const float total_rec = block_sum(dot_rec, scratch);
  if (threadIdx.x == 0) {
    p.workspace[2 * row] = total_std;
    p.workspace[2 * row + 1] = total_rec;
  }
}

// One block: both gates' gradients, the rows added in row order.
__global__ void __launch_bounds__(kThreads) mlp_fold_gate_grad_kernel(MlpFoldParams p) {
  __shared__ float scratch[kThreads / 32];
  for (int kind = 0; kind < 2; ++kind) {
    float sum = 0.f;
    for (int64_t row = threadIdx.x; row < p.rows; row += kThreads) sum += p.workspace[2 * row + kind];
    const float total = block_sum(sum, scratch);
    if (threadIdx.x == 0) *(kind == 0 ? p.grad_std : p.grad_rec) = total;
  }
}

template <typename F>
int dispatch_types(ElemType w, ElemType f, const F& fn) {
  using K = ElemType;
  if (w == K::kFloat32 && f == K::kFloat32) return fn(TypeTag<float>{}, TypeTag<float>{});
  if (w == K::kFloat32 && f == K::kBFloat16) return fn(TypeTag<float>{}, TypeTag<__nv_bfloat16>{});
  if (w == K::kFloat32 && f == K::kFloat16) return fn(TypeTag<float>{}, TypeTag<__half>{});
  if (w == K::kBFloat16 && f == K::kBFloat16) return fn(TypeTag<__nv_bfloat16>{}, TypeTag<__nv_bfloat16>{});
  if (w == K::kFloat16 && f == K::kFloat16) return fn(TypeTag<__half>{}, TypeTag<__half>{});
  return invalid_argument("unsupported fold types weight=%d folded=%d (float32=0, float16=1, bfloat16=2)",
                          int(w), int(f));
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

int check_params(const GateFoldParams& p, bool backward) {
  if (!gate_fold_supports(p.n_embd, p.weight_type, p.folded_type)) {
    return invalid_argument("unsupported gate fold: C = %lld (need C %% 4 == 0) with types weight=%d folded=%d",
                            (long long)p.n_embd, int(p.weight_type), int(p.folded_type));
  }
  if (p.n_head < 1 || p.n_embd % p.n_head != 0) {
    return invalid_argument("n_head = %lld does not divide C = %lld", (long long)p.n_head, (long long)p.n_embd);
  }
  const int64_t head_dim = p.n_embd / p.n_head;
  if (p.reciprocal_rank < 1 || p.reciprocal_rank >= head_dim) {
    return invalid_argument("need 0 < R < D, got R = %lld, D = %lld", (long long)p.reciprocal_rank,
                            (long long)head_dim);
  }
  if (p.gates != 1 && p.gates != p.n_head) {
    return invalid_argument("gates = %lld, expected 1 or H = %lld", (long long)p.gates, (long long)p.n_head);
  }
  if (!p.weight || !aligned16(p.weight) || !p.w_std || !p.w_rec) return invalid_argument("null or unaligned weight or gates");
  if (backward) {
    if (!p.grad_folded || !aligned16(p.grad_folded) || !p.grad_weight || !aligned16(p.grad_weight) || !p.grad_w_std ||
        !p.grad_w_rec || !p.workspace) {
      return invalid_argument("null or unaligned backward buffers");
    }
  } else if (!p.folded || !aligned16(p.folded)) {
    return invalid_argument("null or unaligned folded");
  }
  return 0;
}

int check_params(const MlpFoldParams& p, bool backward) {
  if (p.rows < 1 || p.rows > 0x7fffffff || p.cols < 4 || p.cols % 4 != 0 || p.split < 0 || p.split > p.cols ||
      p.split % 4 != 0) {
    return invalid_argument("R-MLP fold needs rows >= 1, cols %% 4 == 0 and split %% 4 == 0 in [0, cols], got "
                            "rows = %lld, cols = %lld, split = %lld",
                            (long long)p.rows, (long long)p.cols, (long long)p.split);
  }
  if (!gate_fold_supports(p.cols, p.weight_type, p.folded_type)) {
    return invalid_argument("unsupported R-MLP fold types weight=%d folded=%d", int(p.weight_type), int(p.folded_type));
  }
  if (!p.weight || !aligned16(p.weight) || !p.scale_std || !p.scale_rec) {
    return invalid_argument("null or unaligned weight, or null scales");
  }
  if (backward) {
    if (!p.grad_folded || !aligned16(p.grad_folded) || !p.grad_weight || !aligned16(p.grad_weight) || !p.grad_std ||
        !p.grad_rec || !p.workspace) {
      return invalid_argument("null or unaligned backward buffers");
    }
  } else if (!p.folded || !aligned16(p.folded)) {
    return invalid_argument("null or unaligned folded");
  }
  return 0;
}

}  // namespace
}  // namespace detail

bool gate_fold_supports(int64_t n_embd, ElemType weight_type, ElemType folded_type) {
  if (n_embd < 4 || n_embd % 4 != 0 || n_embd > (int64_t(1) << 20)) return false;
  using K = ElemType;
  return weight_type == K::kFloat32 || folded_type == weight_type;
}

int reciprocal_gate_fold_forward(const GateFoldParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, false); status != 0) return status;
  return detail::dispatch_types(p.weight_type, p.folded_type, [&](auto w_tag, auto f_tag) {
    using w_t = typename decltype(w_tag)::type;
    using f_t = typename decltype(f_tag)::type;
    detail::gate_fold_forward_kernel<w_t, f_t>
        <<<static_cast<unsigned>(3 * p.n_embd), detail::kThreads, 0, stream>>>(p);
    return static_cast<int>(cudaGetLastError());
  });
}

int reciprocal_gate_fold_backward(const GateFoldParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, true); status != 0) return status;
  return detail::dispatch_types(p.weight_type, p.folded_type, [&](auto w_tag, auto f_tag) {
    using w_t = typename decltype(w_tag)::type;
    using f_t = typename decltype(f_tag)::type;
    detail::gate_fold_backward_kernel<w_t, f_t>
        <<<static_cast<unsigned>(3 * p.n_embd), detail::kThreads, 0, stream>>>(p);
    detail::gate_fold_gate_grad_kernel<<<1, detail::kThreads, 0, stream>>>(p);
    return static_cast<int>(cudaGetLastError());
  });
}

int reciprocal_mlp_fold_forward(const MlpFoldParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, false); status != 0) return status;
  return detail::dispatch_types(p.weight_type, p.folded_type, [&](auto w_tag, auto f_tag) {
    using w_t = typename decltype(w_tag)::type;
    using f_t = typename decltype(f_tag)::type;
    detail::mlp_fold_forward_kernel<w_t, f_t><<<static_cast<unsigned>(p.rows), detail::kThreads, 0, stream>>>(p);
    return static_cast<int>(cudaGetLastError());
  });
}

int reciprocal_mlp_fold_backward(const MlpFoldParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, true); status != 0) return status;
  return detail::dispatch_types(p.weight_type, p.folded_type, [&](auto w_tag, auto f_tag) {
    using w_t = typename decltype(w_tag)::type;
    using f_t = typename decltype(f_tag)::type;
    detail::mlp_fold_backward_kernel<w_t, f_t><<<static_cast<unsigned>(p.rows), detail::kThreads, 0, stream>>>(p);
    detail::mlp_fold_gate_grad_kernel<<<1, detail::kThreads, 0, stream>>>(p);
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace rakv::kernels::cuda
