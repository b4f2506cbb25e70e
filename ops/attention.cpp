// Causal attention on LibTorch: the fused SDPA kernels where the build has them (LibTorch 2.x,
// CPU and CUDA), else the materialised softmax (LibTorch 1.13, small T only).
#include <torch/torch.h>

#include "rakv/ops.h"

namespace rakv::ops {
namespace {

void check_qkv(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
               const char* op) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              " expects q, k, v of shape [B, H, T, D], got ", q.sizes(), ", ", k.sizes(), ", ",
              v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                  k.sizes() == v.sizes(),
              op, ": q, k, v shapes disagree: ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(), op,
              ": q, k, v dtypes differ");
  TORCH_CHECK(q.device() == k.device() && k.device() == v.device(), op,
              ": q, k, v are on different devices");
}

// Materialised attention with query i at absolute position offset + i.
torch::Tensor materialised_attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, int64_t offset, double dropout_p) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  const int64_t tq = q.size(-2);
  const int64_t tk = k.size(-2);
  const torch::Tensor future =
      torch::ones({tq, tk}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
          .triu(offset + 1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  torch::Tensor probs = torch::softmax(scores, -1);
  if (dropout_p > 0) probs = torch::dropout(probs, dropout_p, /*train=*/true);
  return torch::matmul(probs, v);
}

}  // namespace

torch::Tensor split_heads(const torch::Tensor& x, int64_t n_head) {
  TORCH_CHECK(x.dim() == 3 && n_head > 0 && x.size(2) % n_head == 0,
              "split_heads expects [B, T, C] with C ",
              "divisible by ", n_head, ", got ", x.sizes());
  return x.view({x.size(0), x.size(1), n_head, x.size(2) / n_head}).transpose(1, 2);
}

torch::Tensor merge_heads(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "merge_heads expects [B, H, T, D], got ", x.sizes());
  return x.transpose(1, 2).contiguous().view({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double dropout_p) {
  check_qkv(q, k, v, "causal_attention");
  TORCH_CHECK(q.size(2) == k.size(2), "causal_attention: q has ", q.size(2), " positions but k has ",
              k.size(2));
  TORCH_CHECK(dropout_p >= 0 && dropout_p < 1, "dropout must be in [0, 1), got ", dropout_p);
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout_p,
                                          /*is_causal=*/true);
#else
  return materialised_attention(q, k, v, 0, dropout_p);
#endif
}

torch::Tensor cached_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
  check_qkv(q, k, v, "cached_causal_attention");
  TORCH_CHECK(k.size(2) >= q.size(2), "cached_causal_attention: ", q.size(2),
              " queries but only ", k.size(2), " cached keys");
  return materialised_attention(q, k, v, k.size(2) - q.size(2), 0.0);
}

torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& visible) {
  check_qkv(q, k, v, "masked_attention");
  TORCH_CHECK(visible.scalar_type() == torch::kBool, "masked_attention: the visibility mask must be ",
              "bool, got ", visible.scalar_type());
  TORCH_CHECK(visible.dim() >= 2 && visible.size(-2) == q.size(2) && visible.size(-1) == k.size(2),
              "masked_attention: mask ", visible.sizes(), " does not cover ", q.size(2), " queries x ",
              k.size(2), " keys");
  // A query that sees nothing would make softmax 0/0: let it see key 0, then zero its output, so
  // that neither the output nor the gradients carry NaN.
  const torch::Tensor sees_any = visible.any(-1, /*keepdim=*/true);
  torch::Tensor mask = visible;
  if (!sees_any.all().item<bool>()) {
    mask = visible.logical_or(
        torch::logical_not(sees_any).logical_and(torch::arange(k.size(2), visible.options().dtype(torch::kInt64)) == 0));
  }
#if TORCH_VERSION_MAJOR >= 2
  torch::Tensor out = at::scaled_dot_product_attention(q, k, v, mask);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  scores = scores.masked_fill(torch::logical_not(mask), -std::numeric_limits<double>::infinity());
  torch::Tensor out = torch::matmul(torch::softmax(scores, -1), v);
#endif
  return out * sees_any.to(out.scalar_type());
}

}  // namespace rakv::ops
