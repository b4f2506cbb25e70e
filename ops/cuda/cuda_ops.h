// CUDA implementations behind the device-generic ops of include/rakv/ops.h. Only compiled in
// builds with -DRAKV_CUDA=ON (RAKV_WITH_CUDA); the generic ops have already checked shapes,
// dtypes and values that do not depend on the device.
#pragma once

#include <torch/types.h>

#include "rakv/ops.h"

namespace rakv::ops::cuda {

// importance: float32 [B, H, T] (other floating dtypes are converted) on a CUDA device.
torch::Tensor kv_select(const torch::Tensor& importance, int64_t k_keep, int64_t recency,
                        TopkMethod method, double sample_fraction, uint64_t seed,
                        NanPolicy nan_policy);

// q, k: [B, H, T, D] float16, bfloat16 or float32 on a CUDA device. Returns float32 [B, H, T].
torch::Tensor kv_importance(const torch::Tensor& q, const torch::Tensor& k,
                            bool exposure_correction, int64_t window, double scale);

// The variable-length FlashAttention path of ops::packed_causal_attention (checked there).
// Returns an undefined tensor when this LibTorch or these tensors cannot take it.
torch::Tensor packed_causal_attention_varlen(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v,
                                             const std::vector<int64_t>& q_lengths,
                                             const std::vector<int64_t>& k_lengths);

// The fused cross-entropy kernels (checked by ops::cross_entropy_forward / _backward).
// logits: [N, columns] float32, float16 or bfloat16 with a contiguous last dim; targets: int64
// [N] contiguous. Return (loss [N], lse [N]) in float32, and grad_logits [N, columns].
std::tuple<torch::Tensor, torch::Tensor> cross_entropy_forward(const torch::Tensor& logits,
                                                               const torch::Tensor& targets,
                                                               int64_t vocab_size, int64_t ignore_index);
torch::Tensor cross_entropy_backward(const torch::Tensor& grad_scale, const torch::Tensor& logits,
                                     const torch::Tensor& targets, const torch::Tensor& lse,
                                     int64_t vocab_size, int64_t ignore_index);

// The fused LayerNorm of ops::layer_norm (checked there), differentiable. Returns an undefined
// tensor when the kernels do not take these shapes or dtypes.
torch::Tensor fused_layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps);

// The fold of ops::fold_reciprocal_gates in one kernel each way (checked there), differentiable
// in the weight and both gates; the result is in autocast's dtype under CUDA autocast. Returns
// an undefined tensor when the kernels do not take these shapes or dtypes.
torch::Tensor fused_fold_reciprocal_gates(const torch::Tensor& c_attn_weight, const torch::Tensor& w_std,
                                          const torch::Tensor& w_rec, int64_t n_head, int64_t reciprocal_rank);

// ops::fold_reciprocal_mlp_gates in one kernel each way (checked there); undefined when the
// kernels do not take these shapes or dtypes.
torch::Tensor fused_fold_reciprocal_mlp_gates(const torch::Tensor& c_proj_weight, const torch::Tensor& w_std,
                                              const torch::Tensor& rec_scale, int64_t split);

}  // namespace rakv::ops::cuda
