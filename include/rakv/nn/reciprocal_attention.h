// Reciprocal Attention (SPEC §1). The fused projection produces per head
//   Qf = [Q_std | K_low],  Kf = [K_std | Q_low]  (D_std = D - R dims, then R dims),
// so that Qf'.Kf' = w_std <Q_std,i, K_std,j> + w_rec <K_low,i, Q_low,j>: the last R dims carry
// the key-to-query (reciprocal) term. Gates w_std, w_rec (scalar or per head, init 0.9 / 0.1)
// enter through g = sqrt(max(w, 1e-8)) on both sides; optional self-restart mixes in V.
#pragma once

#include <torch/nn/modules/linear.h>

#include <string>

#include "rakv/nn/attention_layer.h"

namespace rakv::nn {

// How the gates are applied; all three give the same outputs and gradients.
enum class GateScaling {
  kSplitCat,     // the reference: slice Q_std/K_low/K_std/Q_low, scale four slices, concatenate
  kScaleTensor,  // the audit: build s [H, D] once, Qf * s and Kf * s (two passes over Q and K)
  kFused,        // rakv: s^2 folded into the Q rows of the projection weight (O(C^2), no pass)
};
GateScaling parse_gate_scaling(const std::string& name);
std::string to_string(GateScaling scaling);

struct ReciprocalAttentionOptions {
  int64_t n_embd = 128;
  int64_t n_head = 4;
  int64_t reciprocal_rank = 4;  // R, 0 < R < head dim
  bool per_head_gates = false;
  bool self_restart = false;
  double dropout = 0.0;
  GateScaling gate_scaling = GateScaling::kFused;
};

class ReciprocalAttentionImpl : public AttentionLayer {
 public:
  explicit ReciprocalAttentionImpl(const ReciprocalAttentionOptions& options);

  // x: [B, T, C] -> [B, T, C].
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_cached(const torch::Tensor& x, LayerKVCache& cache) override;

  // The gated attention logits Qf'.Kf'^T / sqrt(D) before the causal mask: [B, H, T, T]
  // (materialised; for tests and analysis).
  torch::Tensor logits(const torch::Tensor& x);

  // Replaces c_attn's weight with the repack of plain per-head W_q, W_k, W_v ([C, C] each);
  // the gates are not multiplied in (see ops::repack_reciprocal_qkv).
  void load_plain_qkv(const torch::Tensor& w_q, const torch::Tensor& w_k, const torch::Tensor& w_v);

  // Gate warm-up: freezing sets w_rec = 0 and stops its gradient; unfreezing sets w_rec = 0.1
  // and resumes training it.
  void freeze_reciprocal_gates();
  void unfreeze_reciprocal_gates();
  bool reciprocal_gates_frozen() const { return !w_rec.requires_grad(); }

  void set_gate_scaling(GateScaling scaling) { options_.gate_scaling = scaling; }
  const ReciprocalAttentionOptions& options() const { return options_; }

  torch::nn::Linear c_attn{nullptr};  // [3C, C]: rows Qf, Kf, V (folded layout)
  torch::nn::Linear c_proj{nullptr};  // [C, C]
  torch::Tensor w_std;                // [1] or [H]
  torch::Tensor w_rec;                // [1] or [H]
  torch::Tensor self_restart_alpha;   // [H] when self_restart, else undefined

 private:
  // Gated q, k and plain v, each [B, H, T, D], by the selected gate-scaling implementation.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> gated_qkv(const torch::Tensor& x);
  torch::Tensor apply_self_restart(const torch::Tensor& out, const torch::Tensor& v) const;

  ReciprocalAttentionOptions options_;
  int64_t head_dim_;
};
TORCH_MODULE(ReciprocalAttention);

}  // namespace rakv::nn
