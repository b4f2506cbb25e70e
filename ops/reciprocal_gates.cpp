// Reciprocal Attention gate scaling: the per-head scale vector, its fold into the projection
// weight (`fused`: zero extra passes over activations), and the repack from plain Q/K/V weights.
#include <torch/torch.h>

#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {
namespace {

void check_gates(const torch::Tensor& w_std, const torch::Tensor& w_rec, int64_t n_head) {
  TORCH_CHECK(w_std.is_floating_point() && w_rec.is_floating_point(),
              "reciprocal gates must be floating point, got ", w_std.scalar_type(), " and ",
              w_rec.scalar_type());
  TORCH_CHECK(w_std.dim() == 1 && w_rec.dim() == 1 && w_std.sizes() == w_rec.sizes(),
              "reciprocal gates w_std and w_rec must both be [1] or [H], got ", w_std.sizes(),
              " and ", w_rec.sizes());
  TORCH_CHECK(w_std.size(0) == 1 || w_std.size(0) == n_head, "per-head gates have ",
              w_std.size(0), " entries but the layer has ", n_head, " heads");
}

void check_rank(int64_t head_dim, int64_t reciprocal_rank) {
  TORCH_CHECK(reciprocal_rank > 0 && reciprocal_rank < head_dim,
              "reciprocal rank R must satisfy 0 < R < head dim, got R = ", reciprocal_rank,
              " with head dim ", head_dim);
}

// [H, D] built from per-head values a (first D_std dims) and b (last R dims).
torch::Tensor per_head_pattern(const torch::Tensor& a, const torch::Tensor& b, int64_t n_head,
                               int64_t head_dim, int64_t reciprocal_rank) {
  const int64_t d_std = head_dim - reciprocal_rank;
  return torch::cat({a.reshape({-1, 1}).expand({n_head, d_std}),
                     b.reshape({-1, 1}).expand({n_head, reciprocal_rank})},
                    1);
}

}  // namespace

torch::Tensor reciprocal_gate_scale(const torch::Tensor& w_std, const torch::Tensor& w_rec,
                                    int64_t n_head, int64_t head_dim, int64_t reciprocal_rank) {
  check_gates(w_std, w_rec, n_head);
  check_rank(head_dim, reciprocal_rank);
  return per_head_pattern(torch::sqrt(torch::clamp_min(w_std, 1e-8)),
                          torch::sqrt(torch::clamp_min(w_rec, 1e-8)), n_head, head_dim,
                          reciprocal_rank);
}

torch::Tensor fold_reciprocal_gates(const torch::Tensor& c_attn_weight, const torch::Tensor& w_std,
                                    const torch::Tensor& w_rec, int64_t n_head,
                                    int64_t reciprocal_rank) {
  TORCH_CHECK(c_attn_weight.dim() == 2 && c_attn_weight.size(0) == 3 * c_attn_weight.size(1),
              "fold_reciprocal_gates expects the fused projection weight [3C, C], got ",
              c_attn_weight.sizes());
  // An integer weight would truncate the gate scales to 0 or 1 without a word.
  TORCH_CHECK(c_attn_weight.is_floating_point(),
              "fold_reciprocal_gates expects a floating-point weight, got ",
              c_attn_weight.scalar_type());
  const int64_t n_embd = c_attn_weight.size(1);
  TORCH_CHECK(n_head > 0 && n_embd % n_head == 0, "n_embd ", n_embd,
              " is not divisible by n_head ", n_head);
  check_gates(w_std, w_rec, n_head);
  const int64_t head_dim = n_embd / n_head;
  check_rank(head_dim, reciprocal_rank);
#if defined(RAKV_WITH_CUDA)
  if (c_attn_weight.is_cuda()) {
    torch::Tensor folded =
        cuda::fused_fold_reciprocal_gates(c_attn_weight, w_std, w_rec, n_head, reciprocal_rank);
    if (folded.defined()) return folded;
  }
#endif
  // s^2 = max(w, 1e-8): the square of the gate scale, applied once to the query rows.
  const torch::Tensor q_row_scale =
      per_head_pattern(torch::clamp_min(w_std, 1e-8), torch::clamp_min(w_rec, 1e-8), n_head,
                       head_dim, reciprocal_rank)
          .reshape({n_embd, 1})
          .to(c_attn_weight.scalar_type());
  const auto parts = c_attn_weight.split(n_embd, 0);
  return torch::cat({parts[0] * q_row_scale, parts[1], parts[2]}, 0);
}

torch::Tensor fold_reciprocal_mlp_gates(const torch::Tensor& c_proj_weight,
                                        const torch::Tensor& w_std, const torch::Tensor& rec_scale,
                                        int64_t split) {
  TORCH_CHECK(c_proj_weight.dim() == 2 && c_proj_weight.is_floating_point(),
              "fold_reciprocal_mlp_gates expects a floating down-projection weight [C, D_ff], got ",
              c_proj_weight.scalar_type(), " ", c_proj_weight.sizes());
  const int64_t hidden = c_proj_weight.size(1);
  TORCH_CHECK(split >= 0 && split <= hidden, "fold_reciprocal_mlp_gates: split ", split,
              " outside [0, ", hidden, "]");
  TORCH_CHECK(w_std.numel() == 1 && rec_scale.numel() == 1 && w_std.is_floating_point() &&
                  rec_scale.is_floating_point(),
              "fold_reciprocal_mlp_gates: w_std and rec_scale must be one floating value each, got ",
              w_std.sizes(), " and ", rec_scale.sizes());
#if defined(RAKV_WITH_CUDA)
  if (c_proj_weight.is_cuda()) {
    torch::Tensor folded = cuda::fused_fold_reciprocal_mlp_gates(c_proj_weight, w_std, rec_scale, split);
    if (folded.defined()) return folded;
  }
#endif
  return torch::cat({c_proj_weight.narrow(1, 0, split) * w_std.reshape({}),
                     c_proj_weight.narrow(1, split, hidden - split) * rec_scale.reshape({})},
                    1);
}

torch::Tensor repack_reciprocal_qkv(const torch::Tensor& w_q, const torch::Tensor& w_k,
                                    const torch::Tensor& w_v, int64_t n_head,
                                    int64_t reciprocal_rank) {
  TORCH_CHECK(w_q.dim() == 2 && w_q.size(0) == w_q.size(1) && w_k.sizes() == w_q.sizes() &&
                  w_v.sizes() == w_q.sizes(),
              "repack expects square W_q, W_k, W_v of equal shape [C, C], got ", w_q.sizes(),
              ", ", w_k.sizes(), ", ", w_v.sizes());
  const int64_t n_embd = w_q.size(0);
  TORCH_CHECK(n_head > 0 && n_embd % n_head == 0, "n_embd ", n_embd,
              " is not divisible by n_head ", n_head);
  const int64_t head_dim = n_embd / n_head;
  check_rank(head_dim, reciprocal_rank);
  const int64_t d_std = head_dim - reciprocal_rank;
  const auto per_head = [&](const torch::Tensor& w) { return w.reshape({n_head, head_dim, n_embd}); };
  const torch::Tensor q = per_head(w_q);
  const torch::Tensor k = per_head(w_k);
  const torch::Tensor q_folded =
      torch::cat({q.narrow(1, 0, d_std), k.narrow(1, d_std, reciprocal_rank)}, 1);
  const torch::Tensor k_folded =
      torch::cat({k.narrow(1, 0, d_std), q.narrow(1, d_std, reciprocal_rank)}, 1);
  return torch::cat({q_folded.reshape({n_embd, n_embd}), k_folded.reshape({n_embd, n_embd}), w_v},
                    0);
}

}  // namespace rakv::ops
