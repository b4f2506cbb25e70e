// The interface every attention variant of a GPT-2 block implements (plain, RA, PrunedKV), and
// the per-layer key/value cache used by generation.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>

namespace rakv::nn {

// Keys and values of one layer for the tokens generated so far: [B, H, capacity, D] buffers of
// which the first `length()` positions are valid. Appending grows the capacity geometrically, so
// generating T tokens costs O(T) copies, not O(T^2).
class LayerKVCache {
 public:
  // k, v: [B, H, T_new, D].
  void append(const torch::Tensor& k, const torch::Tensor& v);
  // Keeps only the positions listed in `keep` (int64 [B, H, n], ascending per row); used by
  // budgeted generation to evict keys and values.
  void keep_positions(const torch::Tensor& keep);
  void clear();
  int64_t length() const { return length_; }
  torch::Tensor keys() const;    // [B, H, length, D]
  torch::Tensor values() const;  // [B, H, length, D]
  // Bytes of the valid part (what a cache of exactly this length needs).
  int64_t bytes() const;

 private:
  torch::Tensor keys_;
  torch::Tensor values_;
  int64_t length_ = 0;
};

class AttentionLayer : public torch::nn::Module {
 public:
  // x: [B, T, C] -> [B, T, C], causal.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // x: [B, T_new, C], the tokens after those already in `cache`; appends their keys and values
  // and returns their outputs [B, T_new, C].
  virtual torch::Tensor forward_cached(const torch::Tensor& x, LayerKVCache& cache) = 0;
};

}  // namespace rakv::nn
