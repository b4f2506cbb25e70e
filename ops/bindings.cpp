// The one place where rakv's ops meet the PyTorch dispatcher: every schema of the `rakv`
// namespace and its implementations per dispatch key. Loading librakv registers them, so Python
// can call torch.ops.rakv.<name> after torch.ops.load_library("librakv.so").
#include <torch/library.h>

#include <string>

#include "rakv/ops.h"

namespace {

// kv_select with schema types: the top-k method by name, the seed as int.
torch::Tensor kv_select_by_name(const torch::Tensor& importance, int64_t k_keep, int64_t recency,
                                c10::string_view method, double sample_fraction, int64_t seed) {
  return rakv::ops::kv_select(importance, k_keep, recency,
                              rakv::ops::parse_topk_method(std::string(method)), sample_fraction,
                              static_cast<uint64_t>(seed));
}

}  // namespace

TORCH_LIBRARY(rakv, m) {
  m.def(
      "reciprocal_gate_scale(Tensor w_std, Tensor w_rec, int n_head, int head_dim, "
      "int reciprocal_rank) -> Tensor");
  m.def(
      "fold_reciprocal_gates(Tensor c_attn_weight, Tensor w_std, Tensor w_rec, int n_head, "
      "int reciprocal_rank) -> Tensor");
  m.def(
      "repack_reciprocal_qkv(Tensor w_q, Tensor w_k, Tensor w_v, int n_head, "
      "int reciprocal_rank) -> Tensor");
  m.def("causal_attention(Tensor q, Tensor k, Tensor v, float dropout_p) -> Tensor");
  m.def("cached_causal_attention(Tensor q, Tensor k, Tensor v) -> Tensor");
  m.def("monotone_spline(Tensor x, Tensor knots, Tensor values) -> Tensor");
  m.def("monotone_spline_inverse(Tensor y, Tensor knots, Tensor values) -> Tensor");
  m.def(
      "monotone_spline_knot_values(Tensor knots, Tensor delta, Tensor scale_raw, Tensor shift) "
      "-> Tensor");
  m.def("monotone_spline_eval(Tensor input, Tensor knots, Tensor values, bool inverse) -> Tensor");
  m.def(
      "monotone_spline_backward(Tensor grad_output, Tensor input, Tensor knots, Tensor values, "
      "bool inverse) -> (Tensor, Tensor)");
  m.def(
      "kv_importance(Tensor q, Tensor k, bool exposure_correction, int window, float scale) "
      "-> Tensor");
  m.def(
      "kv_select(Tensor importance, int k_keep, int recency, str method, float sample_fraction, "
      "int seed) -> Tensor");
  m.def(
      "cross_entropy_loss(Tensor logits, Tensor targets, int vocab_size=0, int ignore_index=-100) "
      "-> Tensor");
  m.def(
      "cross_entropy_forward(Tensor logits, Tensor targets, int vocab_size, int ignore_index) "
      "-> (Tensor, Tensor)");
  m.def(
      "cross_entropy_backward(Tensor grad_scale, Tensor logits, Tensor targets, Tensor lse, "
      "int vocab_size, int ignore_index) -> Tensor");
  // No tensor argument to dispatch on: one kernel for every backend.
  m.def("kv_keep_count(int T, float keep_ratio, int k_min) -> int", &rakv::ops::kv_keep_count);
}

// Ops written with differentiable LibTorch calls: autograd comes from their composition.
TORCH_LIBRARY_IMPL(rakv, CompositeImplicitAutograd, m) {
  m.impl("reciprocal_gate_scale", &rakv::ops::reciprocal_gate_scale);
  m.impl("fold_reciprocal_gates", &rakv::ops::fold_reciprocal_gates);
  m.impl("repack_reciprocal_qkv", &rakv::ops::repack_reciprocal_qkv);
  m.impl("causal_attention", &rakv::ops::causal_attention);
  m.impl("cached_causal_attention", &rakv::ops::cached_causal_attention);
  m.impl("monotone_spline_knot_values", &rakv::ops::monotone_spline_knot_values);
  // Autograd through a torch::autograd::Function whose forward and backward call the CPU
  // kernels below.
  m.impl("monotone_spline", &rakv::ops::monotone_spline);
  m.impl("monotone_spline_inverse", &rakv::ops::monotone_spline_inverse);
  m.impl("cross_entropy_loss", &rakv::ops::cross_entropy_loss);
}

// CPU kernels (kernels/cpu) without autograd.
TORCH_LIBRARY_IMPL(rakv, CPU, m) {
  m.impl("monotone_spline_eval", &rakv::ops::monotone_spline_eval);
  m.impl("monotone_spline_backward", &rakv::ops::monotone_spline_backward);
  m.impl("kv_importance", &rakv::ops::kv_importance);
  m.impl("kv_select", &kv_select_by_name);
  m.impl("cross_entropy_forward", &rakv::ops::cross_entropy_forward);
  m.impl("cross_entropy_backward", &rakv::ops::cross_entropy_backward);
}

#if defined(RAKV_WITH_CUDA)
// The same entry points pick the kernels of kernels/cuda for CUDA tensors (ops/cuda).
TORCH_LIBRARY_IMPL(rakv, CUDA, m) {
  m.impl("kv_importance", &rakv::ops::kv_importance);
  m.impl("kv_select", &kv_select_by_name);
  m.impl("cross_entropy_forward", &rakv::ops::cross_entropy_forward);
  m.impl("cross_entropy_backward", &rakv::ops::cross_entropy_backward);
}
#endif
