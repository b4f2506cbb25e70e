// The interface every attention variant of a GPT-2 block implements (plain, RA, PrunedKV).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>

#include "rakv/nn/kv_cache.h"

namespace rakv::nn {

class AttentionLayer : public torch::nn::Module {
 public:
  // x: [B, T, C] -> [B, T, C], causal.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // x: [B, T_new, C], the tokens after those already in `cache`; appends their keys and values
  // and returns their outputs [B, T_new, C].
  virtual torch::Tensor forward_cached(const torch::Tensor& x, LayerKVCache& cache) = 0;
};

}  // namespace rakv::nn
