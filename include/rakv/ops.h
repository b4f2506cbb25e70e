// rakv's tensor operations: argument checks, CPU/CUDA dispatch and autograd. Every op here is
// also registered with the PyTorch dispatcher under the `rakv` namespace (ops/bindings.cpp), so
// that Python can call torch.ops.rakv.<name> once librakv is loaded.
//
// Shape vocabulary: B batch, T sequence length, C model width, H heads, D = C / H head dim,
// R reciprocal rank (last R dims of each head), D_std = D - R.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace rakv::ops {

// ---------------------------------------------------------------------------------------------
// Reciprocal Attention gates
// ---------------------------------------------------------------------------------------------

// Per-head scale s of the folded layout: s[h] = (g_std x D_std, g_rec x R) with
// g = sqrt(max(w, 1e-8)). w_std, w_rec: [1] (per layer) or [H] (per head), floating.
// Returns [H, D] in the gates' dtype; differentiable in both gates.
torch::Tensor reciprocal_gate_scale(const torch::Tensor& w_std, const torch::Tensor& w_rec,
                                    int64_t n_head, int64_t head_dim, int64_t reciprocal_rank);

// The `fused` gate scaling: since (q*s).(k*s) = (q*s^2).k, scaling the Q rows of the fused
// projection weight by s^2 gives the gated logits with no pass over activations (O(C^2) work,
// independent of T). c_attn_weight: [3C, C] rows [Qf; Kf; V]. Returns [3C, C]; differentiable in
// the weight and both gates.
torch::Tensor fold_reciprocal_gates(const torch::Tensor& c_attn_weight, const torch::Tensor& w_std,
                                    const torch::Tensor& w_rec, int64_t n_head,
                                    int64_t reciprocal_rank);

// Builds the folded RA projection from a plain checkpoint's per-head W_q, W_k, W_v (each [C, C],
// head h in rows h*D .. h*D+D-1): Qf = [W_q std rows; W_k last R rows], Kf = [W_k std rows; W_q
// last R rows], V = W_v. Returns [3C, C]. Unlike the reference, it does not multiply the rows by
// the gates (the forward applies them; doing both gated twice).
torch::Tensor repack_reciprocal_qkv(const torch::Tensor& w_q, const torch::Tensor& w_k,
                                    const torch::Tensor& w_v, int64_t n_head,
                                    int64_t reciprocal_rank);

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

// [B, T, C] -> [B, H, T, D] and back.
torch::Tensor split_heads(const torch::Tensor& x, int64_t n_head);
torch::Tensor merge_heads(const torch::Tensor& x);

// softmax(q k^T / sqrt(D) + causal mask) v. q, k, v: [B, H, T, D], same dtype and device.
// Uses LibTorch's scaled_dot_product_attention where the build has it (LibTorch >= 2.0), else
// the materialised form. `dropout_p` applies to the attention weights when > 0.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double dropout_p);

// Attention of Tq new queries against Tk >= Tq cached keys, where query i sits at absolute
// position Tk - Tq + i and sees keys 0 .. Tk - Tq + i. q: [B, H, Tq, D], k, v: [B, H, Tk, D].
torch::Tensor cached_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v);

}  // namespace rakv::ops
