// ops::chunked_causal_attention on CUDA: every (chunk, batch) pair is one sequence of a single
// variable-length FlashAttention call, whose causal mask is aligned to the bottom right of each
// sequence — exactly "the chunk's own keys are the last ones". LibTorch exposes that kernel as
// the internal op at::_flash_attention_forward (autograd: FlashAttentionBackward0); its
// signature is the one of LibTorch 2.x, so older builds keep the masked path.
#include <torch/torch.h>

#include "cuda_ops.h"

namespace rakv::ops::cuda {

std::vector<torch::Tensor> chunked_causal_attention_varlen(const std::vector<torch::Tensor>& q,
                                                           const std::vector<torch::Tensor>& k,
                                                           const std::vector<torch::Tensor>& v) {
#if TORCH_VERSION_MAJOR >= 2
  const auto dtype = q[0].scalar_type();
  const int64_t head_dim = q[0].size(3);
  if ((dtype != torch::kFloat16 && dtype != torch::kBFloat16) || head_dim % 8 != 0 ||
      head_dim > 256)
    return {};
  const int64_t batch = q[0].size(0);
  const int64_t heads = q[0].size(1);
  // [B, H, L, D] -> [B * L, H, D]: sequences of one chunk are its batch rows, chunks follow each
  // other.
  const auto pack = [](const torch::Tensor& x) {
    return x.transpose(1, 2).reshape({-1, x.size(1), x.size(3)});
  };
  std::vector<torch::Tensor> q_parts, k_parts, v_parts;
  std::vector<int32_t> q_offsets{0}, k_offsets{0};
  int64_t max_q = 0, max_k = 0;
  for (size_t c = 0; c < q.size(); ++c) {
    q_parts.push_back(pack(q[c]));
    k_parts.push_back(pack(k[c]));
    v_parts.push_back(pack(v[c]));
    for (int64_t b = 0; b < batch; ++b) {
      q_offsets.push_back(q_offsets.back() + static_cast<int32_t>(q[c].size(2)));
      k_offsets.push_back(k_offsets.back() + static_cast<int32_t>(k[c].size(2)));
    }
    max_q = std::max(max_q, q[c].size(2));
    max_k = std::max(max_k, k[c].size(2));
  }
  // From pinned memory: a copy from pageable memory would wait for the stream to drain first.
  const auto offsets = [&](const std::vector<int32_t>& values) {
    return torch::tensor(values, torch::TensorOptions().dtype(torch::kInt32))
        .pin_memory()
        .to(q[0].device(), /*non_blocking=*/true);
  };
  const torch::Tensor out = std::get<0>(at::_flash_attention_forward(
      torch::cat(q_parts), torch::cat(k_parts), torch::cat(v_parts), offsets(q_offsets),
      offsets(k_offsets), max_q, max_k,
      /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false));
  std::vector<torch::Tensor> result;
  int64_t row = 0;
  for (const torch::Tensor& chunk : q) {
    const int64_t rows = batch * chunk.size(2);
    result.push_back(
        out.narrow(0, row, rows).view({batch, chunk.size(2), heads, head_dim}).transpose(1, 2));
    row += rows;
  }
  return result;
#else
  return {};
#endif
}

}  // namespace rakv::ops::cuda
