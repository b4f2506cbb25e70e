// ops::packed_causal_attention on CUDA: every packed sequence is one sequence of a single
// variable-length FlashAttention call, whose causal mask is aligned to the bottom right of each
// sequence — exactly "the sequence's own keys are the last ones". LibTorch exposes that kernel as
// the internal op at::_flash_attention_forward (autograd: FlashAttentionBackward0); its
// signature is the one of LibTorch 2.x, so older builds keep the masked path.
#include <torch/torch.h>

#include "cuda_ops.h"

namespace rakv::ops::cuda {

torch::Tensor packed_causal_attention_varlen(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v,
                                             const std::vector<int64_t>& q_lengths,
                                             const std::vector<int64_t>& k_lengths) {
#if TORCH_VERSION_MAJOR >= 2
  const auto dtype = q.scalar_type();
  const int64_t head_dim = q.size(2);
  if ((dtype != torch::kFloat16 && dtype != torch::kBFloat16) || head_dim % 8 != 0 ||
      head_dim > 256)
    return {};
  std::vector<int32_t> q_offsets{0}, k_offsets{0};
  int64_t max_q = 0, max_k = 0;
  for (size_t s = 0; s < q_lengths.size(); ++s) {
    q_offsets.push_back(q_offsets.back() + static_cast<int32_t>(q_lengths[s]));
    k_offsets.push_back(k_offsets.back() + static_cast<int32_t>(k_lengths[s]));
    max_q = std::max(max_q, q_lengths[s]);
    max_k = std::max(max_k, k_lengths[s]);
  }
  // From pinned memory: a copy from pageable memory would wait for the stream to drain first.
  const auto offsets = [&](const std::vector<int32_t>& values) {
    return torch::tensor(values, torch::TensorOptions().dtype(torch::kInt32))
        .pin_memory()
        .to(q.device(), /*non_blocking=*/true);
  };
  return std::get<0>(at::_flash_attention_forward(
      q.contiguous(), k.contiguous(), v.contiguous(), offsets(q_offsets), offsets(k_offsets),
      max_q, max_k,
      /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false));
#else
  return {};
#endif
}

}  // namespace rakv::ops::cuda
