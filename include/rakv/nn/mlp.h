// The plain GPT-2 MLP (no biases): y = GELU(x W_fc^T) W_proj^T, exact (erf) GELU.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace rakv::nn {

struct MLPOptions {
  int64_t n_embd = 128;
  int64_t expansion = 4;
  double dropout = 0.0;
};

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const MLPOptions& options);
  // x: [..., C] -> [..., C].
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr};    // [D_ff, C]
  torch::nn::Linear c_proj{nullptr};  // [C, D_ff]

 private:
  MLPOptions options_;
};
TORCH_MODULE(MLP);

}  // namespace rakv::nn
