// The gate folds on the GPU: Reciprocal Attention's here, R-MLP's further down.
//
// RA (SPEC §1, the `fused` gate scaling): the query rows
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

// R-MLP's gate fold on the GPU (SPEC §2, the fused implementation): the down-projection's columns
// of the standard hidden units are multiplied by a = w_std, those of the reciprocal units by
// b = the reciprocal scale (w_rec times the coupling, and gate_alpha when present), so that the
// gated hidden state never exists. One kernel writes the folded weight in the dtype the GEMM
// reads (bf16 under autocast); the backward reads the folded weight's gradient once.
//
//   forward:  folded[i, j] = weight[i, j] * (j < split ? a : b)
//   backward: grad_weight[i, j] = grad_folded[i, j] * (j < split ? a : b)
//             grad_a = sum_{i, j < split} grad_folded[i, j] * weight[i, j], grad_b likewise
//             (row sums, then a one-block kernel that adds them in row order)
//
// Shape vocabulary here: C rows (model width), D_ff columns (hidden width), split = D_ff - R_ff,
// split % 4 == 0 and D_ff % 4 == 0.

struct MlpFoldParams {
  const void* weight = nullptr;       // [C, D_ff] of weight_type, contiguous
  const float* scale_std = nullptr;   // a, one float on the device
  const float* scale_rec = nullptr;   // b, one float on the device
  void* folded = nullptr;             // [C, D_ff] of folded_type (forward, written)
  const void* grad_folded = nullptr;  // [C, D_ff] of folded_type (backward)
  void* grad_weight = nullptr;        // [C, D_ff] of weight_type (backward, written)
  float* grad_std = nullptr;          // one float (backward, written)
  float* grad_rec = nullptr;          // one float (backward, written)
  float* workspace = nullptr;         // [C, 2] (backward)
  int64_t rows = 0, cols = 0, split = 0;
  ElemType weight_type = ElemType::kFloat32, folded_type = ElemType::kFloat32;
};
// Supported types as for the RA fold (gate_fold_supports); pointers 16-byte aligned.

int reciprocal_mlp_fold_forward(const MlpFoldParams& params, Stream stream);
int reciprocal_mlp_fold_backward(const MlpFoldParams& params, Stream stream);

}  // namespace rakv::kernels::cuda
