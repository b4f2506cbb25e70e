// CUDA implementations behind the device-generic ops of include/rakv/ops.h. Only compiled in
// builds with -DRAKV_CUDA=ON (RAKV_WITH_CUDA); the generic ops have already checked shapes,
// dtypes and values that do not depend on the device.
#pragma once

#include <torch/types.h>

#include "rakv/ops.h"

namespace rakv::ops::cuda {

// importance: float32 [B, H, T] (other floating dtypes are converted) on a CUDA device.
torch::Tensor kv_select(const torch::Tensor& importance, int64_t k_keep, int64_t recency,
                        TopkMethod method, double sample_fraction, uint64_t seed);

// q, k: [B, H, T, D] float16, bfloat16 or float32 on a CUDA device. Returns float32 [B, H, T].
torch::Tensor kv_importance(const torch::Tensor& q, const torch::Tensor& k,
                            bool exposure_correction, int64_t window, double scale);

// The variable-length FlashAttention path of ops::chunked_causal_attention (checked there).
// Returns an empty vector when this LibTorch or these tensors cannot take it.
std::vector<torch::Tensor> chunked_causal_attention_varlen(const std::vector<torch::Tensor>& q,
                                                           const std::vector<torch::Tensor>& k,
                                                           const std::vector<torch::Tensor>& v);

}  // namespace rakv::ops::cuda
