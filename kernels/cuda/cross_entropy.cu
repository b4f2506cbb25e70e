// Fused softmax cross-entropy (definition in include/rakv/kernels/cuda/cross_entropy.h).
//
// Why: under autocast the LM head's logits are bf16 [N, V] (1.65 GB for GPT-2 at N = 16384),
// and the usual loss casts them to a float32 copy, stores its log-softmax and reads both again
// in the backward: about 8 passes over float32 [N, V]. Here one block owns one row: the forward
// streams it once with 16-byte loads keeping an online (max, sum) pair per thread in base 2
// (one MUFU.EX2 per logit), the backward streams it once more and writes the gradient in the
// logits' dtype. Both are memory-bound, about one read (forward) and one read plus one write
// (backward) of the half-precision logits.
#include <cmath>
#include <cstdint>

#include "dispatch.cuh"
#include "elem_convert.cuh"
#include "rakv/kernels/cuda/cross_entropy.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // vectors in flight per thread: enough bytes in flight per SM
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Running softmax denominator in base 2: sum of 2^(y - max) over the values y = x * log2(e) seen.
struct OnlineSum {
  float max = -INFINITY;
  float sum = 0.f;

  template <int kVec>
  __device__ __forceinline__ void absorb(const float (&y)[kVec]) {
    float mx = y[0];
#pragma unroll
    for (int i = 1; i < kVec; ++i) mx = fmaxf(mx, y[i]);
    if (mx > max) {
      sum *= ex2(max - mx);  // ex2(-inf) = 0 on the first finite value
      max = mx;
    }
    // A NaN anywhere reaches the sum through y - max and makes the row's loss NaN.
    const float base = max == -INFINITY ? 0.f : max;
#pragma unroll
    for (int i = 0; i < kVec; ++i) sum += ex2(y[i] - base);
  }

  __device__ __forceinline__ void merge(float other_max, float other_sum) {
    const float m = fmaxf(max, other_max);
    if (m == -INFINITY) return;
    sum = sum * ex2(max - m) + other_sum * ex2(other_max - m);
    max = m;
  }
};

template <typename elem_t, int kVec>
__device__ __forceinline__ void load_scaled(const elem_t* at, float (&y)[kVec]) {
  const Pack<elem_t, kVec> pack = *reinterpret_cast<const Pack<elem_t, kVec>*>(at);
#pragma unroll
  for (int i = 0; i < kVec; ++i) y[i] = to_float(pack.v[i]) * kLog2e;
}

template <typename elem_t, int kVec>
__global__ void __launch_bounds__(kThreads) cross_entropy_forward_kernel(CrossEntropyParams p) {
  const int64_t row = blockIdx.x;
  const elem_t* x = static_cast<const elem_t*>(p.logits) + row * p.row_stride;
  OnlineSum acc;
  const int64_t vectors = p.vocab / kVec;  // whole vectors inside the vocabulary
  int64_t v = threadIdx.x;
  for (; v + (kUnroll - 1) * kThreads < vectors; v += kUnroll * kThreads) {
    float y[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_scaled<elem_t, kVec>(x + (v + u * kThreads) * kVec, y[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc.absorb<kVec>(y[u]);
  }
  for (; v < vectors; v += kThreads) {
    float y[kVec];
    load_scaled<elem_t, kVec>(x + v * kVec, y);
    acc.absorb<kVec>(y);
  }
  for (int64_t j = vectors * kVec + threadIdx.x; j < p.vocab; j += kThreads) {
    const float y[1] = {to_float(x[j]) * kLog2e};
    acc.absorb<1>(y);
  }

#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    acc.merge(__shfl_xor_sync(0xffffffffu, acc.max, offset), __shfl_xor_sync(0xffffffffu, acc.sum, offset));
  }
  __shared__ float warp_max[kThreads / 32], warp_sum[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    warp_max[warp] = acc.max;
    warp_sum[warp] = acc.sum;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  OnlineSum row_acc;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) row_acc.merge(warp_max[w], warp_sum[w]);
  const float lse = (row_acc.max + log2f(row_acc.sum)) * kLn2;
  const int64_t target = p.targets[row];
  float loss = 0.f;
  if (target != p.ignore_index) {
    loss = target >= 0 && target < p.vocab ? lse - to_float(x[target]) : NAN;
  }
  p.lse[row] = lse;
  p.loss[row] = loss;
}

// Gradient of the kVec columns from `start` (y: those logits times log2 e, loaded by the caller
// so that several loads are in flight before the first store).
template <typename elem_t, int kVec>
__device__ __forceinline__ void store_gradient(elem_t* grad, const float (&y)[kVec], int64_t start, int64_t vocab,
                                               int64_t target, float lse2, float g) {
  Pack<elem_t, kVec> out;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int64_t column = start + i;
    const float p = ex2(y[i] - lse2) - (column == target ? 1.f : 0.f);
    out.v[i] = from_float<elem_t>(column < vocab ? g * p : 0.f);
  }
  *reinterpret_cast<Pack<elem_t, kVec>*>(grad + start) = out;
}

template <typename elem_t, int kVec>
__device__ __forceinline__ void load_if_counted(const elem_t* x, int64_t start, int64_t vocab, float (&y)[kVec]) {
  if (start < vocab) {
    load_scaled<elem_t, kVec>(x + start, y);  // padding columns are never read
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) y[i] = 0.f;
  }
}

template <typename elem_t, int kVec>
__global__ void __launch_bounds__(kThreads) cross_entropy_backward_kernel(CrossEntropyParams p) {
  const int64_t row = blockIdx.x;
  const elem_t* __restrict__ x = static_cast<const elem_t*>(p.logits) + row * p.row_stride;
  elem_t* __restrict__ grad = static_cast<elem_t*>(p.grad_logits) + row * p.grad_row_stride;
  const int64_t target = p.targets[row];
  float g = *p.grad_scale;
  int64_t vocab = p.vocab;
  if (target == p.ignore_index) {
    vocab = 0;  // the whole row is zero
  } else if (target < 0 || target >= p.vocab) {
    g = NAN;  // the forward's loss is NaN: so is its gradient
  }
  const float lse2 = p.lse[row] * kLog2e;
  const int64_t vectors = p.columns / kVec;
  int64_t v = threadIdx.x;
  for (; v + (kUnroll - 1) * kThreads < vectors; v += kUnroll * kThreads) {
    float y[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_if_counted<elem_t, kVec>(x, (v + u * kThreads) * kVec, vocab, y[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      store_gradient<elem_t, kVec>(grad, y[u], (v + u * kThreads) * kVec, vocab, target, lse2, g);
    }
  }
  for (; v < vectors; v += kThreads) {
    float y[kVec];
    load_if_counted<elem_t, kVec>(x, v * kVec, vocab, y);
    store_gradient<elem_t, kVec>(grad, y, v * kVec, vocab, target, lse2, g);
  }
}

int check_params(const CrossEntropyParams& p, bool backward) {
  if (p.rows < 0 || p.rows > 0x7fffffff) return invalid_argument("rows = %lld out of [0, 2^31)", (long long)p.rows);
  if (p.vocab < 1 || p.columns < p.vocab) {
    return invalid_argument("need 1 <= vocab <= columns, got vocab = %lld, columns = %lld", (long long)p.vocab,
                            (long long)p.columns);
  }
  if (p.row_stride < p.columns) {
    return invalid_argument("row_stride = %lld is below columns = %lld", (long long)p.row_stride,
                            (long long)p.columns);
  }
  if (p.rows == 0) return 0;
  if (!p.logits || !p.targets || !p.lse) return invalid_argument("null logits, targets or lse");
  if (!backward && !p.loss) return invalid_argument("null loss");
  if (backward && (!p.grad_scale || !p.grad_logits)) return invalid_argument("null grad_scale or grad_logits");
  if (backward && p.grad_row_stride < p.columns) {
    return invalid_argument("grad_row_stride = %lld is below columns = %lld", (long long)p.grad_row_stride,
                            (long long)p.columns);
  }
  return 0;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <typename elem_t, template <typename, int> class Launch>
int launch_vectorised_or_scalar(bool vectorised, const CrossEntropyParams& p, Stream stream) {
  constexpr int kVec = 16 / sizeof(elem_t);
  if (vectorised) {
    Launch<elem_t, kVec>::run(p, stream);
  } else {
    Launch<elem_t, 1>::run(p, stream);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename elem_t, int kVec>
struct LaunchForward {
  static void run(const CrossEntropyParams& p, Stream stream) {
    cross_entropy_forward_kernel<elem_t, kVec><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  }
};
template <typename elem_t, int kVec>
struct LaunchBackward {
  static void run(const CrossEntropyParams& p, Stream stream) {
    cross_entropy_backward_kernel<elem_t, kVec><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  }
};

}  // namespace
}  // namespace detail

int cross_entropy_forward(const CrossEntropyParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, false); status != 0 || p.rows == 0) return status;
  return RAKV_DISPATCH_ELEM_TYPE(p.dtype, [&] {
    constexpr int64_t kVec = 16 / sizeof(elem_t);
    const bool vectorised = detail::aligned16(p.logits) && p.row_stride % kVec == 0;
    return detail::launch_vectorised_or_scalar<elem_t, detail::LaunchForward>(vectorised, p, stream);
  });
}

int cross_entropy_backward(const CrossEntropyParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, true); status != 0 || p.rows == 0) return status;
  return RAKV_DISPATCH_ELEM_TYPE(p.dtype, [&] {
    constexpr int64_t kVec = 16 / sizeof(elem_t);
    const bool vectorised = detail::aligned16(p.logits) && detail::aligned16(p.grad_logits) &&
                            p.row_stride % kVec == 0 && p.grad_row_stride % kVec == 0 && p.columns % kVec == 0;
    return detail::launch_vectorised_or_scalar<elem_t, detail::LaunchBackward>(vectorised, p, stream);
  });
}

}  // namespace rakv::kernels::cuda
