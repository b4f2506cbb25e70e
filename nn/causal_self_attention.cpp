// Plain GPT-2 causal self-attention.
#include <torch/torch.h>

#include "rakv/nn/causal_self_attention.h"
#include "rakv/ops.h"

namespace rakv::nn {

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const CausalSelfAttentionOptions& options)
    : options_(options) {
  TORCH_CHECK(options.n_head > 0 && options.n_embd % options.n_head == 0, "n_embd (",
              options.n_embd, ") must be divisible by n_head (", options.n_head, ")");
  const int64_t c = options.n_embd;
  c_attn = register_module("c_attn", torch::nn::Linear(torch::nn::LinearOptions(c, 3 * c).bias(false)));
  c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(c, c).bias(false)));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  const auto qkv = c_attn(x).split(options_.n_embd, -1);
  const torch::Tensor out = ops::causal_attention(
      ops::split_heads(qkv[0], options_.n_head), ops::split_heads(qkv[1], options_.n_head),
      ops::split_heads(qkv[2], options_.n_head), is_training() ? options_.dropout : 0.0);
  return torch::dropout(c_proj(ops::merge_heads(out)), options_.dropout, is_training());
}

torch::Tensor CausalSelfAttentionImpl::forward_cached(const torch::Tensor& x, LayerKVCache& cache) {
  const auto qkv = c_attn(x).split(options_.n_embd, -1);
  cache.append(ops::split_heads(qkv[1], options_.n_head), ops::split_heads(qkv[2], options_.n_head));
  const torch::Tensor out = cache.attend(ops::split_heads(qkv[0], options_.n_head));
  return c_proj(ops::merge_heads(out));
}

}  // namespace rakv::nn
