// Plain GPT-2 MLP.
#include <torch/torch.h>

#include "rakv/nn/mlp.h"

namespace rakv::nn {

MLPImpl::MLPImpl(const MLPOptions& options) : options_(options) {
  TORCH_CHECK(options.n_embd > 0 && options.expansion > 0, "MLP needs positive n_embd and expansion");
  const int64_t hidden = options.expansion * options.n_embd;
  c_fc = register_module("c_fc", torch::nn::Linear(torch::nn::LinearOptions(options.n_embd, hidden).bias(false)));
  c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(hidden, options.n_embd).bias(false)));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  return torch::dropout(c_proj(torch::gelu(c_fc(x))), options_.dropout, is_training());
}

}  // namespace rakv::nn
