// The one place where rakv's ops meet the PyTorch dispatcher: every schema of the `rakv`
// namespace and its implementations per dispatch key. Loading librakv registers them, so Python
// can call torch.ops.rakv.<name> after torch.ops.load_library("librakv.so").
#include <torch/library.h>

#include "rakv/ops.h"

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
}

// Ops written with differentiable LibTorch calls: autograd comes from their composition.
TORCH_LIBRARY_IMPL(rakv, CompositeImplicitAutograd, m) {
  m.impl("reciprocal_gate_scale", &rakv::ops::reciprocal_gate_scale);
  m.impl("fold_reciprocal_gates", &rakv::ops::fold_reciprocal_gates);
  m.impl("repack_reciprocal_qkv", &rakv::ops::repack_reciprocal_qkv);
  m.impl("causal_attention", &rakv::ops::causal_attention);
  m.impl("cached_causal_attention", &rakv::ops::cached_causal_attention);
}
