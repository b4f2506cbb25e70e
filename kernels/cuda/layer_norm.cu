// LayerNorm forward and backward (definition in include/rakv/kernels/cuda/layer_norm.h).
//
// Why: under autocast a GPT-2 block's LayerNorm runs in float32 and writes a float32 output that
// the next GEMM casts to bf16 (one more pass), and its backward first casts the bf16 gradient up
// to float32. Here the forward reads x once and writes y in the GEMM's dtype, and the backward
// reads x and dy once and writes dx: the bytes of one pass each way. Lane l of a row's warp holds
// the 4-element groups l, l + 32, l + 64, ... of the row (vector loads, coalesced), so the row
// statistics are warp reductions with no shared memory.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "block_primitives.cuh"
#include "dispatch.cuh"
#include "elem_convert.cuh"
#include "rakv/kernels/cuda/layer_norm.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int kWarps = 4;  // rows per block (one warp each)
constexpr int kThreads = kWarps * 32;
constexpr int kMaxCols = 2048;
constexpr int kMaxBackwardBlocks = 512;  // each warp then loops over rows, summing dweight / dbias

template <typename T>
__device__ __forceinline__ void load4(const T* at, float (&out)[4]) {
  const Pack4<T> pack = *reinterpret_cast<const Pack4<T>*>(at);
#pragma unroll
  for (int j = 0; j < 4; ++j) out[j] = to_float(pack.v[j]);
}

template <typename T>
__device__ __forceinline__ void store4(T* at, const float (&in)[4]) {
  Pack4<T> pack;
#pragma unroll
  for (int j = 0; j < 4; ++j) pack.v[j] = from_float<T>(in[j]);
  *reinterpret_cast<Pack4<T>*>(at) = pack;
}

// Column of element j of lane `lane`'s i-th group.
__device__ __forceinline__ int group_col(int lane, int i) { return (lane + 32 * i) * 4; }

template <typename x_t, typename w_t, typename y_t, int kChunks>
__global__ void __launch_bounds__(kThreads) layer_norm_forward_kernel(LayerNormParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= p.rows) return;
  const int C = p.cols;
  const x_t* x = static_cast<const x_t*>(p.x) + row * C;
  float v[kChunks][4];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = group_col(lane, i);
    if (c < C) {
      load4(x + c, v[i]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[i][j] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) sum += v[i][j];
  }
  const float mean = warp_sum(sum) / C;
  float squares = 0.f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (group_col(lane, i) >= C) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float d = v[i][j] - mean;
      squares += d * d;
    }
  }
  const float rstd = rsqrtf(warp_sum(squares) / C + p.eps);
  if (lane == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
  y_t* y = static_cast<y_t*>(p.y) + row * C;
  const w_t* weight = static_cast<const w_t*>(p.weight);
  const w_t* bias = static_cast<const w_t*>(p.bias);
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = group_col(lane, i);
    if (c >= C) continue;
    float w[4], b[4], out[4];
    load4(weight + c, w);
    load4(bias + c, b);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = (v[i][j] - mean) * rstd * w[j] + b[j];
    store4(y + c, out);
  }
}

template <typename x_t, typename w_t, typename y_t, int kChunks>
__global__ void __launch_bounds__(kThreads) layer_norm_backward_kernel(LayerNormParams p) {
  __shared__ float partial[kWarps][kChunks * 128];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int C = p.cols;
  float w[kChunks][4], dw[kChunks][4], db[kChunks][4];
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = group_col(lane, i);
#pragma unroll
    for (int j = 0; j < 4; ++j) w[i][j] = dw[i][j] = db[i][j] = 0.f;
    if (c < C) load4(static_cast<const w_t*>(p.weight) + c, w[i]);
  }
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const x_t* x = static_cast<const x_t*>(p.x) + row * C;
    const y_t* dy = static_cast<const y_t*>(p.dy) + row * C;
    float xhat[kChunks][4], g[kChunks][4];
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = group_col(lane, i);
      if (c < C) {
        load4(x + c, xhat[i]);
        load4(dy + c, g[i]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) xhat[i][j] = g[i][j] = 0.f;
      }
    }
    const float mean = p.mean[row], rstd = p.rstd[row];
    float sum_g = 0.f, sum_g_xhat = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      if (group_col(lane, i) >= C) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        xhat[i][j] = (xhat[i][j] - mean) * rstd;
        dw[i][j] += g[i][j] * xhat[i][j];
        db[i][j] += g[i][j];
        g[i][j] *= w[i][j];
        sum_g += g[i][j];
        sum_g_xhat += g[i][j] * xhat[i][j];
      }
    }
    const float mean_g = warp_sum(sum_g) / C;
    const float mean_g_xhat = warp_sum(sum_g_xhat) / C;
    x_t* dx = static_cast<x_t*>(p.dx) + row * C;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int c = group_col(lane, i);
      if (c >= C) continue;
      float out[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) out[j] = rstd * (g[i][j] - mean_g - xhat[i][j] * mean_g_xhat);
      store4(dx + c, out);
    }
  }
  // The block's dweight, then its dbias: the 4 warps' sums added in warp order.
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) partial[warp][group_col(lane, i) + j] = pass == 0 ? dw[i][j] : db[i][j];
    }
    __syncthreads();
    float* out = p.workspace + (static_cast<int64_t>(pass) * gridDim.x + blockIdx.x) * C;
    for (int c = threadIdx.x; c < C; c += kThreads) {
      float s = 0.f;
#pragma unroll
      for (int w2 = 0; w2 < kWarps; ++w2) s += partial[w2][c];
      out[c] = s;
    }
    __syncthreads();
  }
}

// dweight / dbias: column sums of the blocks' partial sums, in block order. Block (32, 8):
// 32 columns, 8 row groups combined through shared memory.
template <typename w_t>
__global__ void __launch_bounds__(256) layer_norm_param_grad_kernel(LayerNormParams p, int partial_rows) {
  __shared__ float sums[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int c = blockIdx.x * 32 + tx, pass = blockIdx.y;
  const int C = p.cols;
  float s = 0.f;
  if (c < C) {
    const float* in = p.workspace + static_cast<int64_t>(pass) * partial_rows * C + c;
    for (int r = ty; r < partial_rows; r += 8) s += in[static_cast<int64_t>(r) * C];
  }
  sums[ty][tx] = s;
  __syncthreads();
  if (ty != 0 || c >= C) return;
  float total = 0.f;
#pragma unroll
  for (int r = 0; r < 8; ++r) total += sums[r][tx];
  static_cast<w_t*>(pass == 0 ? p.dweight : p.dbias)[c] = from_float<w_t>(total);
}

int chunks_for(int64_t cols) {
  const int64_t needed = (cols + 127) / 128;
  for (int chunks : {1, 2, 4, 6, 8, 12, 16}) {
    if (chunks >= needed) return chunks;
  }
  return 0;
}

// Calls f(TypeTag<x_t>, TypeTag<w_t>, TypeTag<y_t>) for a supported combination.
template <typename F>
int dispatch_types(ElemType x, ElemType w, ElemType y, const F& f) {
  using K = ElemType;
  if (x == K::kFloat32 && w == K::kFloat32) {
    if (y == K::kFloat32) return f(TypeTag<float>{}, TypeTag<float>{}, TypeTag<float>{});
    if (y == K::kBFloat16) return f(TypeTag<float>{}, TypeTag<float>{}, TypeTag<__nv_bfloat16>{});
    if (y == K::kFloat16) return f(TypeTag<float>{}, TypeTag<float>{}, TypeTag<__half>{});
  }
  if (x == K::kBFloat16 && y == K::kBFloat16) {
    if (w == K::kBFloat16) return f(TypeTag<__nv_bfloat16>{}, TypeTag<__nv_bfloat16>{}, TypeTag<__nv_bfloat16>{});
    if (w == K::kFloat32) return f(TypeTag<__nv_bfloat16>{}, TypeTag<float>{}, TypeTag<__nv_bfloat16>{});
  }
  if (x == K::kFloat16 && y == K::kFloat16) {
    if (w == K::kFloat16) return f(TypeTag<__half>{}, TypeTag<__half>{}, TypeTag<__half>{});
    if (w == K::kFloat32) return f(TypeTag<__half>{}, TypeTag<float>{}, TypeTag<__half>{});
  }
  return invalid_argument("unsupported LayerNorm types x=%d weight=%d y=%d (float32=0, float16=1, bfloat16=2)",
                          int(x), int(w), int(y));
}

template <typename F>
int dispatch_chunks(int chunks, const F& f) {
  switch (chunks) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 12: return f(std::integral_constant<int, 12>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: return invalid_argument("LayerNorm width needs %d groups of 128 (at most 16)", chunks);
  }
}

int backward_blocks(int64_t rows) {
  return static_cast<int>(std::min<int64_t>((rows + kWarps - 1) / kWarps, kMaxBackwardBlocks));
}

bool aligned(const void* ptr, ElemType type) {
  const uintptr_t bytes = 4 * (type == ElemType::kFloat32 ? 4 : 2);
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

int check_params(const LayerNormParams& p, bool backward) {
  if (!layer_norm_supports(p.cols, p.x_type, p.weight_type, p.y_type)) {
    return invalid_argument("unsupported LayerNorm: C = %d (need C %% 4 == 0, 4 <= C <= %d) with types x=%d weight=%d y=%d",
                            p.cols, kMaxCols, int(p.x_type), int(p.weight_type), int(p.y_type));
  }
  if (p.rows < 0) return invalid_argument("rows = %lld < 0", (long long)p.rows);
  if (!(p.eps >= 0.f)) return invalid_argument("eps must be >= 0");
  if (!p.weight || !aligned(p.weight, p.weight_type)) return invalid_argument("weight is null or not 4-element aligned");
  if (backward) {
    if (!p.dweight || !p.dbias || !p.workspace) return invalid_argument("null dweight, dbias or workspace");
  } else if (!p.bias || !aligned(p.bias, p.weight_type)) {
    return invalid_argument("bias is null or not 4-element aligned");
  }
  if (p.rows == 0) return 0;
  if (!p.x || !aligned(p.x, p.x_type) || !p.mean || !p.rstd) {
    return invalid_argument("x (null or not 4-element aligned), mean or rstd missing");
  }
  if (backward && (!p.dy || !aligned(p.dy, p.y_type) || !p.dx || !aligned(p.dx, p.x_type))) {
    return invalid_argument("dy or dx is null or not 4-element aligned");
  }
  if (!backward && (!p.y || !aligned(p.y, p.y_type))) return invalid_argument("y is null or not 4-element aligned");
  return 0;
}

}  // namespace
}  // namespace detail

bool layer_norm_supports(int64_t cols, ElemType x_type, ElemType weight_type, ElemType y_type) {
  if (cols < 4 || cols > detail::kMaxCols || cols % 4 != 0) return false;
  using K = ElemType;
  if (x_type == K::kFloat32) return weight_type == K::kFloat32;
  return y_type == x_type && (weight_type == x_type || weight_type == K::kFloat32);
}

size_t layer_norm_backward_workspace_floats(int64_t rows, int64_t cols) {
  return 2 * static_cast<size_t>(detail::backward_blocks(rows)) * static_cast<size_t>(cols);
}

int layer_norm_forward(const LayerNormParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, false); status != 0 || p.rows == 0) return status;
  return detail::dispatch_types(p.x_type, p.weight_type, p.y_type, [&](auto x_tag, auto w_tag, auto y_tag) {
    using x_t = typename decltype(x_tag)::type;
    using w_t = typename decltype(w_tag)::type;
    using y_t = typename decltype(y_tag)::type;
    return detail::dispatch_chunks(detail::chunks_for(p.cols), [&](auto chunks) {
      const auto blocks = static_cast<unsigned>((p.rows + detail::kWarps - 1) / detail::kWarps);
      detail::layer_norm_forward_kernel<x_t, w_t, y_t, decltype(chunks)::value>
          <<<blocks, detail::kThreads, 0, stream>>>(p);
      return static_cast<int>(cudaGetLastError());
    });
  });
}

int layer_norm_backward(const LayerNormParams& p, Stream stream) {
  detail::clear_error_detail();
  if (const int status = detail::check_params(p, true); status != 0) return status;
  return detail::dispatch_types(p.x_type, p.weight_type, p.y_type, [&](auto x_tag, auto w_tag, auto y_tag) {
    using x_t = typename decltype(x_tag)::type;
    using w_t = typename decltype(w_tag)::type;
    using y_t = typename decltype(y_tag)::type;
    return detail::dispatch_chunks(detail::chunks_for(p.cols), [&](auto chunks) {
      const int blocks = detail::backward_blocks(p.rows);
      if (blocks > 0) {
        detail::layer_norm_backward_kernel<x_t, w_t, y_t, decltype(chunks)::value>
            <<<blocks, detail::kThreads, 0, stream>>>(p);
      }
      const dim3 grid((p.cols + 31) / 32, 2);
      detail::layer_norm_param_grad_kernel<w_t><<<grid, 256, 0, stream>>>(p, blocks);
      return static_cast<int>(cudaGetLastError());
    });
  });
}

}  // namespace rakv::kernels::cuda
