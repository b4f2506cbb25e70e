// Plain multi-head causal self-attention of GPT-2 (no biases): the baseline RA is compared with.
#pragma once

#include <torch/nn/modules/linear.h>

#include "rakv/nn/attention_layer.h"

namespace rakv::nn {

struct CausalSelfAttentionOptions {
  int64_t n_embd = 128;
  int64_t n_head = 4;
  double dropout = 0.0;
};

class CausalSelfAttentionImpl : public AttentionLayer {
 public:
  explicit CausalSelfAttentionImpl(const CausalSelfAttentionOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKVCache& cache) override;

  const CausalSelfAttentionOptions& options() const { return options_; }
  torch::nn::Linear c_attn{nullptr};  // [3C, C]: rows Q, K, V
  torch::nn::Linear c_proj{nullptr};  // [C, C]

 private:
  CausalSelfAttentionOptions options_;
};
TORCH_MODULE(CausalSelfAttention);

}  // namespace rakv::nn
