// Reciprocal Attention with three interchangeable gate-scaling implementations.
#include <torch/torch.h>

#include "rakv/nn/reciprocal_attention.h"
#include "rakv/ops.h"

namespace rakv::nn {

GateScaling parse_gate_scaling(const std::string& name) {
  if (name == "split_cat") return GateScaling::kSplitCat;
  if (name == "scale_tensor") return GateScaling::kScaleTensor;
  if (name == "fused") return GateScaling::kFused;
  TORCH_CHECK(false, "unknown gate scaling '", name, "' (expected split_cat, scale_tensor or fused)");
}

std::string to_string(GateScaling scaling) {
  switch (scaling) {
    case GateScaling::kSplitCat: return "split_cat";
    case GateScaling::kScaleTensor: return "scale_tensor";
    case GateScaling::kFused: return "fused";
  }
  return "?";
}

ReciprocalAttentionImpl::ReciprocalAttentionImpl(const ReciprocalAttentionOptions& options)
    : options_(options) {
  TORCH_CHECK(options.n_head > 0 && options.n_embd % options.n_head == 0, "n_embd (",
              options.n_embd, ") must be divisible by n_head (", options.n_head, ")");
  head_dim_ = options.n_embd / options.n_head;
  TORCH_CHECK(options.reciprocal_rank > 0 && options.reciprocal_rank < head_dim_,
              "RA needs 0 < R < head dim, got R = ", options.reciprocal_rank, " with head dim ",
              head_dim_, " (n_embd ", options.n_embd, " / n_head ", options.n_head, ")");
  TORCH_CHECK(options.dropout >= 0 && options.dropout < 1, "dropout must be in [0, 1), got ",
              options.dropout);
  const int64_t c = options.n_embd;
  c_attn = register_module("c_attn", torch::nn::Linear(torch::nn::LinearOptions(c, 3 * c).bias(false)));
  c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(c, c).bias(false)));
  const int64_t gates = options.per_head_gates ? options.n_head : 1;
  w_std = register_parameter("w_std", torch::full({gates}, 0.9));
  w_rec = register_parameter("w_rec", torch::full({gates}, 0.1));
  if (options.self_restart) {
    self_restart_alpha = register_parameter("self_restart_alpha", torch::full({options.n_head}, 0.05));
  }
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> ReciprocalAttentionImpl::gated_qkv(
    const torch::Tensor& x) {
  const int64_t h = options_.n_head;
  const int64_t r = options_.reciprocal_rank;
  const int64_t d_std = head_dim_ - r;
  torch::Tensor qkv;
  if (options_.gate_scaling == GateScaling::kFused) {
    qkv = torch::nn::functional::linear(
        x, ops::fold_reciprocal_gates(c_attn->weight, w_std, w_rec, h, r));
  } else {
    qkv = c_attn(x);
  }
  const auto parts = qkv.split(options_.n_embd, -1);
  torch::Tensor q = ops::split_heads(parts[0], h);
  torch::Tensor k = ops::split_heads(parts[1], h);
  torch::Tensor v = ops::split_heads(parts[2], h);
  if (options_.gate_scaling == GateScaling::kSplitCat) {
    const std::vector<int64_t> gate_shape = {1, w_std.size(0), 1, 1};
    const torch::Tensor g_std = torch::sqrt(torch::clamp_min(w_std, 1e-8)).view(gate_shape);
    const torch::Tensor g_rec = torch::sqrt(torch::clamp_min(w_rec, 1e-8)).view(gate_shape);
    const torch::Tensor q_std = q.narrow(-1, 0, d_std);
    const torch::Tensor k_low = q.narrow(-1, d_std, r);
    const torch::Tensor k_std = k.narrow(-1, 0, d_std);
    const torch::Tensor q_low = k.narrow(-1, d_std, r);
    q = torch::cat({q_std * g_std, k_low * g_rec}, -1);
    k = torch::cat({k_std * g_std, q_low * g_rec}, -1);
  } else if (options_.gate_scaling == GateScaling::kScaleTensor) {
    const torch::Tensor s =
        ops::reciprocal_gate_scale(w_std, w_rec, h, head_dim_, r).view({1, h, 1, head_dim_});
    q = q * s;
    k = k * s;
  }
  return {q, k, v};
}

torch::Tensor ReciprocalAttentionImpl::apply_self_restart(const torch::Tensor& out,
                                                          const torch::Tensor& v) const {
  if (!options_.self_restart) return out;
  const torch::Tensor a = self_restart_alpha.clamp(0.0, 0.5).view({1, options_.n_head, 1, 1});
  return (1 - a) * out + a * v;
}

torch::Tensor ReciprocalAttentionImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options_.n_embd, "RA expects x [B, T, ",
              options_.n_embd, "], got ", x.sizes());
  const auto [q, k, v] = gated_qkv(x);
  const double p = is_training() ? options_.dropout : 0.0;
  const torch::Tensor out = apply_self_restart(ops::causal_attention(q, k, v, p), v);
  return torch::dropout(c_proj(ops::merge_heads(out)), options_.dropout, is_training());
}

torch::Tensor ReciprocalAttentionImpl::forward_cached(const torch::Tensor& x, LayerKVCache& cache) {
  const auto [q, k, v] = gated_qkv(x);
  cache.append(k, v);
  const torch::Tensor out = apply_self_restart(cache.attend(q), v);
  return c_proj(ops::merge_heads(out));
}

torch::Tensor ReciprocalAttentionImpl::logits(const torch::Tensor& x) {
  const auto [q, k, v] = gated_qkv(x);
  return torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
}

void ReciprocalAttentionImpl::load_plain_qkv(const torch::Tensor& w_q, const torch::Tensor& w_k,
                                             const torch::Tensor& w_v) {
  const torch::Tensor packed =
      ops::repack_reciprocal_qkv(w_q, w_k, w_v, options_.n_head, options_.reciprocal_rank);
  TORCH_CHECK(packed.sizes() == c_attn->weight.sizes(), "repacked weight ", packed.sizes(),
              " does not fit c_attn ", c_attn->weight.sizes());
  torch::NoGradGuard no_grad;
  c_attn->weight.copy_(packed);
}

void ReciprocalAttentionImpl::freeze_reciprocal_gates() {
  torch::NoGradGuard no_grad;
  w_rec.fill_(0.0);
  w_rec.set_requires_grad(false);
}

void ReciprocalAttentionImpl::unfreeze_reciprocal_gates() {
  {
    torch::NoGradGuard no_grad;
    w_rec.fill_(0.1);
  }
  w_rec.set_requires_grad(true);
}

}  // namespace rakv::nn
