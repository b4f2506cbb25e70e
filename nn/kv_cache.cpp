// Generation KV cache with budgeted eviction and KVSplice-compressed values.
#include <torch/torch.h>

#include "rakv/nn/kv_cache.h"
#include "rakv/ops.h"

namespace rakv::nn {

LayerKVCache::LayerKVCache(KVCachePolicy policy) : policy_(std::move(policy)) {
  TORCH_CHECK(policy_.keep_ratio > 0 && policy_.keep_ratio <= 1, "KV cache budget (keep ratio) must be in (0, 1], got ",
              policy_.keep_ratio);
  TORCH_CHECK(policy_.k_min >= 1 && policy_.recency >= 0 && policy_.interval >= 1,
              "KV cache policy needs k_min >= 1, recency >= 0 and interval >= 1, got ", policy_.k_min, ", ",
              policy_.recency, ", ", policy_.interval);
  next_eviction_ = policy_.interval;
}

void LayerKVCache::reserve(int64_t capacity) {
  const auto grow = [&](torch::Tensor& buffer) {
    if (!buffer.defined() || buffer.size(2) >= capacity) return;
    std::vector<int64_t> shape = buffer.sizes().vec();
    shape[2] = capacity;
    torch::Tensor bigger = torch::empty(shape, buffer.options());
    bigger.narrow(2, 0, length_).copy_(buffer.narrow(2, 0, length_));
    buffer = bigger;
  };
  grow(keys_);
  grow(values_);
  grow(positions_);
  grow(mass_);
}

void LayerKVCache::append(const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes(), "KV cache append expects k and v of equal shape [B, H, T, D], got ",
              k.sizes(), " and ", v.sizes());
  const int64_t added = k.size(2);
  if (!keys_.defined()) {
    head_dim_ = k.size(3);
    if (policy_.kvsplice) {
      TORCH_CHECK(policy_.kvsplice->options().head_dim == head_dim_, "KVSplice was fitted for head dim ",
                  policy_.kvsplice->options().head_dim, " but the cache holds head dim ", head_dim_);
    }
    const int64_t capacity = std::max<int64_t>(16, added);
    keys_ = torch::empty({k.size(0), k.size(1), capacity, head_dim_}, k.options());
    const int64_t value_width = policy_.kvsplice ? policy_.kvsplice->options().latent_dim : head_dim_;
    values_ = torch::empty({k.size(0), k.size(1), capacity, value_width}, v.options());
    if (policy_.evicts()) {
      positions_ = torch::empty({k.size(0), k.size(1), capacity}, k.options().dtype(torch::kInt64));
      mass_ = torch::empty({k.size(0), k.size(1), capacity}, k.options().dtype(torch::kFloat32));
    }
  }
  TORCH_CHECK(k.size(0) == keys_.size(0) && k.size(1) == keys_.size(1) && k.size(3) == head_dim_,
              "KV cache append: shape ", k.sizes(), " does not match the cache ", keys_.sizes());
  if (length_ + added > keys_.size(2)) reserve(std::max(2 * keys_.size(2), length_ + added));
  keys_.narrow(2, length_, added).copy_(k);
  values_.narrow(2, length_, added).copy_(policy_.kvsplice ? policy_.kvsplice->compress(v).to(values_.dtype()) : v);
  if (policy_.evicts()) {
    positions_.narrow(2, length_, added).copy_(torch::arange(position_, position_ + added, positions_.options()));
    mass_.narrow(2, length_, added).zero_();
  }
  length_ += added;
  position_ += added;
  appended_ = added;
}

torch::Tensor LayerKVCache::keys() const { return keys_.narrow(2, 0, length_); }

torch::Tensor LayerKVCache::values() const {
  const torch::Tensor stored = values_.narrow(2, 0, length_);
  return policy_.kvsplice ? policy_.kvsplice->decompress(stored).to(keys_.dtype()) : stored;
}

torch::Tensor LayerKVCache::positions() const {
  if (positions_.defined()) return positions_.narrow(2, 0, length_);
  return torch::arange(position_ - length_, position_, keys_.options().dtype(torch::kInt64))
      .expand({keys_.size(0), keys_.size(1), length_});
}

torch::Tensor LayerKVCache::attend(const torch::Tensor& q) {
  TORCH_CHECK(keys_.defined() && q.dim() == 4 && q.size(2) == appended_ && q.size(3) == head_dim_,
              "KV cache attend expects the queries [B, H, ", appended_, ", ", head_dim_,
              "] of the tokens appended last, got ", q.sizes());
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  torch::Tensor scores = torch::matmul(q, keys().transpose(-2, -1)).to(torch::kFloat32) * scale;
  // Query i (token position_ - appended_ + i) sees the entries at positions up to its own.
  const torch::Tensor query_position =
      torch::arange(position_ - appended_, position_, q.options().dtype(torch::kInt64)).view({1, 1, appended_, 1});
  scores.masked_fill_(positions().unsqueeze(2) > query_position, -std::numeric_limits<float>::infinity());
  const torch::Tensor probs = torch::softmax(scores, -1);
  const torch::Tensor out = torch::matmul(probs.to(q.scalar_type()), values());
  if (policy_.evicts()) {
    mass_.narrow(2, 0, length_).add_(probs.sum(2));
    if (position_ >= next_eviction_) {
      evict(ops::kv_keep_count(position_, policy_.keep_ratio, policy_.k_min));
      next_eviction_ = (position_ / policy_.interval + 1) * policy_.interval;
    }
  }
  return out;
}

void LayerKVCache::evict(int64_t keep) {
  if (keep >= length_) return;
  torch::Tensor score = mass_.narrow(2, 0, length_);
  if (policy_.exposure_correction) {
    // Every query since an entry's token saw it (an entry is never re-admitted once evicted).
    score = score / (position_ - positions()).to(torch::kFloat32);
  }
  const torch::Tensor kept = ops::kv_select(score.contiguous(), keep, policy_.recency, ops::TopkMethod::kExact, 0.02, 0);
  const auto compact = [&](torch::Tensor& buffer) {
    const torch::Tensor valid = buffer.narrow(2, 0, length_);
    const torch::Tensor index =
        buffer.dim() == 4 ? kept.unsqueeze(-1).expand({-1, -1, -1, buffer.size(3)}) : kept;
    buffer.narrow(2, 0, keep).copy_(valid.gather(2, index));
  };
  compact(keys_);
  compact(values_);
  compact(positions_);
  compact(mass_);
  length_ = keep;
}

int64_t LayerKVCache::bytes() const {
  int64_t total = 0;
  for (const torch::Tensor* buffer : {&keys_, &values_, &positions_, &mass_}) {
    if (buffer->defined()) total += buffer->narrow(2, 0, length_).numel() * static_cast<int64_t>(buffer->element_size());
  }
  return total;
}

int64_t LayerKVCache::allocated_bytes() const {
  int64_t total = 0;
  for (const torch::Tensor* buffer : {&keys_, &values_, &positions_, &mass_}) {
    if (buffer->defined()) total += buffer->numel() * static_cast<int64_t>(buffer->element_size());
  }
  return total;
}

int64_t LayerKVCache::full_bytes() const {
  if (!keys_.defined()) return 0;
  return 2 * keys_.size(0) * keys_.size(1) * position_ * head_dim_ * static_cast<int64_t>(keys_.element_size());
}

void LayerKVCache::clear() {
  keys_ = values_ = positions_ = mass_ = torch::Tensor();
  length_ = position_ = appended_ = 0;
  next_eviction_ = policy_.interval;
}

}  // namespace rakv::nn
