// Attention of query chunks over per-chunk key sets (PrunedKV's pruned chunks): one
// variable-length FlashAttention call on CUDA, masked attention per chunk elsewhere.
#include <torch/torch.h>

#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {

std::vector<torch::Tensor> chunked_causal_attention(const std::vector<torch::Tensor>& q,
                                                    const std::vector<torch::Tensor>& k,
                                                    const std::vector<torch::Tensor>& v) {
  TORCH_CHECK(q.size() == k.size() && k.size() == v.size(), "chunked_causal_attention: got ",
              q.size(), " query chunks but ", k.size(), " key and ", v.size(), " value sets");
  for (size_t c = 0; c < q.size(); ++c) {
    TORCH_CHECK(q[c].dim() == 4 && k[c].dim() == 4 && k[c].sizes() == v[c].sizes(),
                "chunked_causal_attention: chunk ", c,
                " expects q [B, H, Tq, D] and k, v [B, H, Lk, D], got ", q[c].sizes(), ", ",
                k[c].sizes(), ", ", v[c].sizes());
    TORCH_CHECK(q[c].size(0) == k[c].size(0) && q[c].size(1) == k[c].size(1) &&
                    q[c].size(3) == k[c].size(3),
                "chunked_causal_attention: chunk ", c, ": q ", q[c].sizes(), " and k ",
                k[c].sizes(), " disagree in B, H or D");
    TORCH_CHECK(k[c].size(2) >= q[c].size(2), "chunked_causal_attention: chunk ", c, " has ",
                q[c].size(2), " queries but only ", k[c].size(2),
                " keys (its own positions must be the last keys)");
    TORCH_CHECK(q[c].scalar_type() == q[0].scalar_type() &&
                    k[c].scalar_type() == q[0].scalar_type() &&
                    v[c].scalar_type() == q[0].scalar_type() && q[c].device() == q[0].device() &&
                    k[c].device() == q[0].device() && v[c].device() == q[0].device(),
                "chunked_causal_attention: every chunk must share one dtype and device");
  }
  if (q.empty())
    return {};
#if defined(RAKV_WITH_CUDA)
  if (q[0].is_cuda()) {
    std::vector<torch::Tensor> out = cuda::chunked_causal_attention_varlen(q, k, v);
    if (!out.empty())
      return out;
  }
#endif
  std::vector<torch::Tensor> out;
  out.reserve(q.size());
  for (size_t c = 0; c < q.size(); ++c) {
    const int64_t rows = q[c].size(2);
    const int64_t keys = k[c].size(2);
    const torch::Tensor visible =
        torch::ones({rows, keys}, torch::TensorOptions().dtype(torch::kBool).device(q[c].device()))
            .tril(keys - rows);
    out.push_back(masked_attention(q[c], k[c], v[c], visible));
  }
  return out;
}

}  // namespace rakv::ops
