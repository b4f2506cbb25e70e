// The per-layer key/value cache of generation, with the two ways rakv makes it smaller:
//  (a) eviction to a budget (H2O-style): every cached key accumulates the attention mass the
//      queries pay it; when the number of tokens seen crosses a multiple of `interval`, the cache
//      keeps k_keep(n) = min(n, max(k_min, floor(n * keep_ratio))) entries per (batch, head) row:
//      the `recency` most recent ones and the rest by mass / (queries that saw the entry) (with
//      exposure correction; by raw mass without) -- the selection of PrunedKVAttention;
//  (b) V compressed by a fitted KVSplice: k_latent values per token and head instead of D.
// Memory is accounted exactly: bytes() is the size of everything the cache holds for its valid
// entries (keys, values or latents, and the eviction bookkeeping).
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "rakv/nn/kvsplice.h"

namespace rakv::nn {

struct KVCachePolicy {
  double keep_ratio = 1.0;  // (0, 1]; 1 never evicts
  int64_t k_min = 64;
  int64_t recency = 64;
  int64_t interval = 64;    // tokens between evictions
  bool exposure_correction = true;
  KVSplice kvsplice{nullptr};  // compresses V when set (head_dim must match)

  bool evicts() const { return keep_ratio < 1.0; }
};

class LayerKVCache {
 public:
  LayerKVCache() = default;
  explicit LayerKVCache(KVCachePolicy policy);

  // Appends the keys and values of the next T_new tokens: k, v [B, H, T_new, D].
  void append(const torch::Tensor& k, const torch::Tensor& v);
  // Attention of the queries of the tokens appended last (q: [B, H, T_new, D]) over the cache,
  // causal by token position; then records the attention mass and evicts at interval boundaries.
  // Returns [B, H, T_new, D].
  torch::Tensor attend(const torch::Tensor& q);

  int64_t length() const { return length_; }     // cached entries per row
  int64_t position() const { return position_; } // tokens seen
  torch::Tensor keys() const;                     // [B, H, length, D]
  torch::Tensor values() const;                   // [B, H, length, D], decompressed if needed
  torch::Tensor positions() const;                // int64 [B, H, length], token positions
  // Bytes held for the valid entries (keys, values or latents, positions and mass when evicting).
  int64_t bytes() const;
  // Bytes of the buffers as allocated (capacity grows geometrically).
  int64_t allocated_bytes() const;
  // Bytes a plain cache would hold for every token seen: 2 x B x H x position x D x element size.
  int64_t full_bytes() const;
  const KVCachePolicy& policy() const { return policy_; }
  void clear();

 private:
  void reserve(int64_t capacity);
  void evict(int64_t keep);

  KVCachePolicy policy_;
  torch::Tensor keys_;       // [B, H, capacity, D]
  torch::Tensor values_;     // [B, H, capacity, D] or latents [B, H, capacity, k_latent]
  torch::Tensor positions_;  // int64 [B, H, capacity] (evicting caches)
  torch::Tensor mass_;       // float32 [B, H, capacity] (evicting caches)
  int64_t length_ = 0;
  int64_t position_ = 0;
  int64_t appended_ = 0;     // tokens appended by the last append()
  int64_t head_dim_ = 0;
  int64_t next_eviction_ = 0;
};

}  // namespace rakv::nn
