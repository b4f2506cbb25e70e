// Reciprocal Attention's gate fold on the GPU (SPEC §1, the `fused` gate scaling): the query rows
// of the fused projection weight [Qf; Kf; V] (rows 0 .. C-1) are multiplied by s^2 = max(w, 1e-8),
// w = w_std on a head's first D - R rows and w_rec on its last R rows, so that the gated logits
// need no pass over activations. One kernel writes the folded weight straight in the dtype the
// GEMM reads (bf16 under autocast), which a plain layer's weight cast costs anyway; the backward
// reads the folded weight's gradient once for the weight's gradient and the per-row sums that
// give the gates' gradients (summed by a second, one-block kernel in a fixed order).
//
//   forward:  folded[r, :] = weight[r, :] * s2[r]      (s2 = 1 for the K and V rows r >= C)
//   backward: grad_weight[r, :] = grad_folded[r, :] * s2[r]
//             grad_w_std[g] = sum over std query rows r of gate g of (grad_folded[r, :] . weight[r, :])
//                             where w_std[g] >= 1e-8 (the clamp's gradient), likewise grad_w_rec
//
// Shape vocabulary: C model width (C % 4 == 0), H heads, D = C / H, R reciprocal rank
// (0 < R < D), G gates per kind (1: shared by the heads, or H).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda {

struct GateFoldParams {
  const void* weight = nullptr;  // [3C, C] of weight_type, contiguous
  const float* w_std = nullptr;  // [G]
  const float* w_rec = nullptr;  // [G]
  void* folded = nullptr;        // [3C, C] of folded_type (forward, written)
  const void* grad_folded = nullptr;  // [3C, C] of folded_type (backward)
  void* grad_weight = nullptr;        // [3C, C] of weight_type (backward, written)
  float* grad_w_std = nullptr;        // [G] (backward, written)
  float* grad_w_rec = nullptr;        // [G] (backward, written)
  float* workspace = nullptr;         // [C] (backward): the query rows' dot products
  int64_t n_embd = 0, n_head = 0, reciprocal_rank = 0, gates = 1;
  ElemType weight_type = ElemType::kFloat32, folded_type = ElemType::kFloat32;
};
// Supported: weight float32 with folded float32, bf16 or fp16; weight bf16 / fp16 with folded
// of the same type. Pointers 16-byte aligned.

bool gate_fold_supports(int64_t n_embd, ElemType weight_type, ElemType folded_type);

int reciprocal_gate_fold_forward(const GateFoldParams& params, Stream stream);
int reciprocal_gate_fold_backward(const GateFoldParams& params, Stream stream);

}  // namespace rakv::kernels::cuda
