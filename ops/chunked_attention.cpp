// Attention of query chunks over per-chunk key sets (PrunedKV's pruned chunks): one
// variable-length FlashAttention call on CUDA, masked attention per chunk elsewhere.
#include <torch/torch.h>

#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {
namespace {

// The masked path: q [B, H, Tq, D] over k, v [B, H, Lk, D], query i seeing keys 0 .. Lk - Tq + i.
torch::Tensor bottom_right_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                            const torch::Tensor& v) {
  const int64_t rows = q.size(2), keys = k.size(2);
  const torch::Tensor visible =
      torch::ones({rows, keys}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
          .tril(keys - rows);
  return masked_attention(q, k, v, visible);
}

}  // namespace

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
    // [B, H, L, D] -> [B * L, H, D]: sequences of one chunk are its batch rows, chunks follow
    // each other.
    const auto pack = [](const torch::Tensor& x) {
      return x.transpose(1, 2).reshape({-1, x.size(1), x.size(3)});
    };
    std::vector<torch::Tensor> q_parts, k_parts, v_parts;
    std::vector<int64_t> q_lengths, k_lengths;
    for (size_t c = 0; c < q.size(); ++c) {
      q_parts.push_back(pack(q[c]));
      k_parts.push_back(pack(k[c]));
      v_parts.push_back(pack(v[c]));
      q_lengths.insert(q_lengths.end(), q[c].size(0), q[c].size(2));
      k_lengths.insert(k_lengths.end(), k[c].size(0), k[c].size(2));
    }
    const torch::Tensor packed = cuda::packed_causal_attention_varlen(
        torch::cat(q_parts), torch::cat(k_parts), torch::cat(v_parts), q_lengths, k_lengths);
    if (packed.defined()) {
      std::vector<torch::Tensor> out;
      int64_t row = 0;
      for (const torch::Tensor& chunk : q) {
        const int64_t rows = chunk.size(0) * chunk.size(2);
        out.push_back(packed.narrow(0, row, rows)
                          .view({chunk.size(0), chunk.size(2), chunk.size(1), chunk.size(3)})
                          .transpose(1, 2));
        row += rows;
      }
      return out;
    }
  }
#endif
  std::vector<torch::Tensor> out;
  out.reserve(q.size());
  for (size_t c = 0; c < q.size(); ++c)
    out.push_back(bottom_right_causal_attention(q[c], k[c], v[c]));
  return out;
}

torch::Tensor packed_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, const std::vector<int64_t>& q_lengths,
                                      const std::vector<int64_t>& k_lengths) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && k.sizes() == v.sizes() && q.size(1) == k.size(1) &&
                  q.size(2) == k.size(2),
              "packed_causal_attention expects q [Nq, H, D] and k, v [Nk, H, D], got ", q.sizes(),
              ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type() &&
                  q.device() == k.device() && k.device() == v.device(),
              "packed_causal_attention: q, k and v must share one dtype and device");
  TORCH_CHECK(q_lengths.size() == k_lengths.size(), "packed_causal_attention: ",
              q_lengths.size(), " query lengths but ", k_lengths.size(), " key lengths");
  int64_t q_total = 0, k_total = 0;
  for (size_t s = 0; s < q_lengths.size(); ++s) {
    TORCH_CHECK(q_lengths[s] >= 0 && k_lengths[s] >= q_lengths[s],
                "packed_causal_attention: sequence ", s, " has ", q_lengths[s],
                " queries and ", k_lengths[s], " keys (needs 0 <= queries <= keys)");
    q_total += q_lengths[s];
    k_total += k_lengths[s];
  }
  TORCH_CHECK(q_total == q.size(0) && k_total == k.size(0), "packed_causal_attention: the "
              "lengths add up to ", q_total, " queries and ", k_total, " keys, but q has ",
              q.size(0), " rows and k ", k.size(0));
  if (q.size(0) == 0)
    return torch::empty_like(q);
#if defined(RAKV_WITH_CUDA)
  if (q.is_cuda()) {
    const torch::Tensor out = cuda::packed_causal_attention_varlen(q, k, v, q_lengths, k_lengths);
    if (out.defined())
      return out;
  }
#endif
  std::vector<torch::Tensor> out;
  int64_t q_row = 0, k_row = 0;
  for (size_t s = 0; s < q_lengths.size(); ++s) {
    const int64_t rows = q_lengths[s], keys = k_lengths[s];
    // [L, H, D] -> [1, H, L, D] and back.
    const auto heads_first = [](const torch::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
    out.push_back(bottom_right_causal_attention(heads_first(q.narrow(0, q_row, rows)),
                                                heads_first(k.narrow(0, k_row, keys)),
                                                heads_first(v.narrow(0, k_row, keys)))
                      .squeeze(0)
                      .transpose(0, 1));
    q_row += rows;
    k_row += keys;
  }
  return torch::cat(out, 0);
}

}  // namespace rakv::ops
