// Column attention mass per chunk of queries: the statistic behind causal KV pruning, where the
// keys that queries of chunk c may see are chosen from the attention paid by the queries before
// it. Computed chunk by chunk with LibTorch ops (memory O(B H chunk T), never B H T^2).
#include <torch/torch.h>

#include "rakv/ops.h"

namespace rakv::ops {

torch::Tensor kv_chunk_column_mass(const torch::Tensor& q, const torch::Tensor& k, int64_t chunk) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes(),
              "kv_chunk_column_mass expects q and k of equal ", "shape [B, H, T, D], got ",
              q.sizes(), " and ", k.sizes());
  TORCH_CHECK(q.is_floating_point() && q.scalar_type() == k.scalar_type(),
              "kv_chunk_column_mass expects floating q and k of one dtype, got ", q.scalar_type(),
              " and ", k.scalar_type());
  TORCH_CHECK(chunk >= 1, "kv_chunk_column_mass: chunk must be >= 1, got ", chunk);
  torch::NoGradGuard no_grad;
  const int64_t t = q.size(2);
  const int64_t chunks = (t + chunk - 1) / chunk;
  // Half-precision inputs keep the scores in their dtype and let softmax accumulate in float32:
  // the [chunk, T] score block is the whole memory traffic here, so no float32 copy of it is made.
  const auto accumulate = q.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const torch::Tensor scaled_q = q * (1.0 / std::sqrt(static_cast<double>(q.size(3))));
  torch::Tensor mass =
      torch::zeros({q.size(0), q.size(1), chunks, t}, q.options().dtype(accumulate));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t start = c * chunk;
    const int64_t rows = std::min(chunk, t - start);
    const int64_t end = start + rows;
    torch::Tensor scores =
        torch::matmul(scaled_q.narrow(2, start, rows), k.narrow(2, 0, end).transpose(-2, -1));
    // Only the chunk's own block crosses the diagonal: mask it alone.
    const torch::Tensor future =
        torch::ones({rows, rows}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
            .triu(1);
    scores.narrow(3, start, rows).masked_fill_(future, -std::numeric_limits<double>::infinity());
    mass.select(2, c).narrow(2, 0, end).copy_(torch::softmax(scores, -1, accumulate).sum(2));
  }
  return mass;
}

}  // namespace rakv::ops
