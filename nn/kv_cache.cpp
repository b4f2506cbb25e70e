// Growable per-layer key/value cache for generation.
#include <torch/torch.h>

#include "rakv/nn/attention_layer.h"

namespace rakv::nn {

void LayerKVCache::append(const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes(),
              "KV cache append expects k and v of equal shape [B, H, T, D], got ", k.sizes(),
              " and ", v.sizes());
  const int64_t added = k.size(2);
  if (!keys_.defined()) {
    const int64_t capacity = std::max<int64_t>(16, added);
    keys_ = torch::empty({k.size(0), k.size(1), capacity, k.size(3)}, k.options());
    values_ = torch::empty_like(keys_);
  }
  TORCH_CHECK(k.size(0) == keys_.size(0) && k.size(1) == keys_.size(1) &&
                  k.size(3) == keys_.size(3),
              "KV cache append: shape ", k.sizes(), " does not match the cache ", keys_.sizes());
  if (length_ + added > keys_.size(2)) {
    const int64_t capacity = std::max(2 * keys_.size(2), length_ + added);
    auto grow = [&](const torch::Tensor& old) {
      torch::Tensor bigger =
          torch::empty({old.size(0), old.size(1), capacity, old.size(3)}, old.options());
      bigger.narrow(2, 0, length_).copy_(old.narrow(2, 0, length_));
      return bigger;
    };
    keys_ = grow(keys_);
    values_ = grow(values_);
  }
  keys_.narrow(2, length_, added).copy_(k);
  values_.narrow(2, length_, added).copy_(v);
  length_ += added;
}

void LayerKVCache::keep_positions(const torch::Tensor& keep) {
  TORCH_CHECK(keys_.defined(), "KV cache: keep_positions on an empty cache");
  TORCH_CHECK(keep.dim() == 3 && keep.size(0) == keys_.size(0) && keep.size(1) == keys_.size(1) &&
                  keep.scalar_type() == torch::kInt64,
              "KV cache keep_positions expects int64 [B, H, n], got ", keep.sizes(), " ",
              keep.scalar_type());
  const int64_t n = keep.size(2);
  TORCH_CHECK(n <= length_, "KV cache: cannot keep ", n, " of ", length_, " positions");
  const torch::Tensor index = keep.unsqueeze(-1).expand({-1, -1, -1, keys_.size(3)});
  const torch::Tensor k = keys().gather(2, index);
  const torch::Tensor v = values().gather(2, index);
  keys_.narrow(2, 0, n).copy_(k);
  values_.narrow(2, 0, n).copy_(v);
  length_ = n;
}

void LayerKVCache::clear() {
  keys_ = torch::Tensor();
  values_ = torch::Tensor();
  length_ = 0;
}

torch::Tensor LayerKVCache::keys() const { return keys_.narrow(2, 0, length_); }
torch::Tensor LayerKVCache::values() const { return values_.narrow(2, 0, length_); }

int64_t LayerKVCache::bytes() const {
  if (!keys_.defined()) return 0;
  return 2 * keys_.size(0) * keys_.size(1) * length_ * keys_.size(3) *
         static_cast<int64_t>(keys_.element_size());
}

}  // namespace rakv::nn
