// LayerNorm over the last dim on the GPU, with the output written directly in the dtype the next
// layer reads (bf16 under autocast from a float32 residual stream), and a backward that reads
// the output gradient in that dtype:
//
//   forward:  mean_i = sum_c x_ic / C,  rstd_i = 1 / sqrt(sum_c (x_ic - mean_i)^2 / C + eps)
//             y_ic   = (x_ic - mean_i) * rstd_i * weight_c + bias_c
//   backward: xhat = (x - mean) * rstd,  g = dy * weight
//             dx_ic  = rstd_i * (g_ic - mean_c(g_i) - xhat_ic * mean_c(g_i * xhat_i))
//             dweight_c = sum_i dy_ic * xhat_ic,  dbias_c = sum_i dy_ic
// One warp per row with the row in registers (one read of x in the forward, one of x and dy in
// the backward); the parameter gradients are summed per block in a fixed order, then over blocks
// by a second kernel (deterministic, no atomics).
//
// Shape vocabulary: N rows, C features (C % 4 == 0, 4 <= C <= 2048).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda {

// Supported (x_type, weight_type, y_type): (f32, f32, f32 | bf16 | f16), (bf16, bf16 | f32, bf16),
// (f16, f16 | f32, f16). Rows are contiguous (row stride C); every pointer 4-element aligned.
struct LayerNormParams {
  const void* x = nullptr;       // [N, C] of x_type
  const void* weight = nullptr;  // [C] of weight_type
  const void* bias = nullptr;    // [C] of weight_type (forward)
  void* y = nullptr;             // [N, C] of y_type (forward, written)
  float* mean = nullptr;         // [N] (written by the forward, read by the backward)
  float* rstd = nullptr;         // [N]
  const void* dy = nullptr;      // [N, C] of y_type (backward)
  void* dx = nullptr;            // [N, C] of x_type (backward, written)
  void* dweight = nullptr;       // [C] of weight_type (backward, written)
  void* dbias = nullptr;         // [C] of weight_type (backward, written)
  float* workspace = nullptr;    // backward: layer_norm_backward_workspace_floats(N, C) floats
  int64_t rows = 0;
  int32_t cols = 0;
  float eps = 1e-5f;
  ElemType x_type = ElemType::kFloat32, weight_type = ElemType::kFloat32, y_type = ElemType::kFloat32;
};

// Whether the kernels take this shape and these types (else the caller uses another LayerNorm).
bool layer_norm_supports(int64_t cols, ElemType x_type, ElemType weight_type, ElemType y_type);
size_t layer_norm_backward_workspace_floats(int64_t rows, int64_t cols);

int layer_norm_forward(const LayerNormParams& params, Stream stream);
int layer_norm_backward(const LayerNormParams& params, Stream stream);

}  // namespace rakv::kernels::cuda
