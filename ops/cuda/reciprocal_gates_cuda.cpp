// The RA and R-MLP gate folds on CUDA (kernels/cuda/reciprocal_gate_fold.cu) as autograd
// Functions. Under CUDA autocast the folded weight is written in autocast's dtype, the cast the
// GEMM would make.
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "kernel_glue.h"
#include "rakv/kernels/cuda/reciprocal_gate_fold.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

kc::GateFoldParams params(const torch::Tensor& weight, const torch::Tensor& w_std, const torch::Tensor& w_rec,
                          int64_t n_head, int64_t reciprocal_rank, torch::ScalarType folded_dtype) {
  kc::GateFoldParams p;
  p.weight = weight.data_ptr();
  p.w_std = w_std.data_ptr<float>();
  p.w_rec = w_rec.data_ptr<float>();
  p.n_embd = weight.size(1);
  p.n_head = n_head;
  p.reciprocal_rank = reciprocal_rank;
  p.gates = w_std.size(0);
  p.weight_type = *kernel_elem_type(weight.scalar_type());
  p.folded_type = *kernel_elem_type(folded_dtype);
  return p;
}

kc::MlpFoldParams mlp_params(const torch::Tensor& weight, const torch::Tensor& w_std, const torch::Tensor& rec,
                             int64_t split, torch::ScalarType folded_dtype) {
  kc::MlpFoldParams p;
  p.weight = weight.data_ptr();
  p.scale_std = w_std.data_ptr<float>();
  p.scale_rec = rec.data_ptr<float>();
  p.rows = weight.size(0);
  p.cols = weight.size(1);
  p.split = split;
  p.weight_type = *kernel_elem_type(weight.scalar_type());
  p.folded_type = *kernel_elem_type(folded_dtype);
  return p;
}

class GateFoldFunction : public torch::autograd::Function<GateFoldFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight_in,
                               const torch::Tensor& w_std_in, const torch::Tensor& w_rec_in, int64_t n_head,
                               int64_t reciprocal_rank, int64_t folded_dtype) {
    const c10::cuda::CUDAGuard guard(weight_in.device());
    const torch::Tensor weight = weight_in.contiguous();
    const torch::Tensor w_std = w_std_in.contiguous(), w_rec = w_rec_in.contiguous();
    const auto dtype = static_cast<torch::ScalarType>(folded_dtype);
    torch::Tensor folded = torch::empty(weight.sizes(), weight.options().dtype(dtype));
    kc::GateFoldParams p = params(weight, w_std, w_rec, n_head, reciprocal_rank, dtype);
    p.folded = folded.data_ptr();
    check_launch(kc::reciprocal_gate_fold_forward(p, current_stream(weight)),
                 "fold_reciprocal_gates forward");
    ctx->save_for_backward({weight, w_std, w_rec});
    ctx->saved_data["n_head"] = n_head;
    ctx->saved_data["reciprocal_rank"] = reciprocal_rank;
    ctx->saved_data["folded_dtype"] = folded_dtype;
    return folded;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& weight = saved[0];
    const c10::cuda::CUDAGuard guard(weight.device());
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["folded_dtype"].toInt());
    const torch::Tensor grad = grad_outputs[0].to(dtype).contiguous();
    torch::Tensor grad_weight = torch::empty_like(weight);
    torch::Tensor grad_std = torch::empty_like(saved[1]), grad_rec = torch::empty_like(saved[2]);
    torch::Tensor workspace = torch::empty({weight.size(1)}, weight.options().dtype(torch::kFloat32));
    kc::GateFoldParams p = params(weight, saved[1], saved[2], ctx->saved_data["n_head"].toInt(),
                                  ctx->saved_data["reciprocal_rank"].toInt(), dtype);
    p.grad_folded = grad.data_ptr();
    p.grad_weight = grad_weight.data_ptr();
    p.grad_w_std = grad_std.data_ptr<float>();
    p.grad_w_rec = grad_rec.data_ptr<float>();
    p.workspace = workspace.data_ptr<float>();
    check_launch(kc::reciprocal_gate_fold_backward(p, current_stream(weight)),
                 "fold_reciprocal_gates backward");
    return {grad_weight, grad_std, grad_rec, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class MlpFoldFunction : public torch::autograd::Function<MlpFoldFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight_in,
                               const torch::Tensor& w_std_in, const torch::Tensor& rec_in, int64_t split,
                               int64_t folded_dtype) {
    const c10::cuda::CUDAGuard guard(weight_in.device());
    const torch::Tensor weight = weight_in.contiguous();
    const torch::Tensor w_std = w_std_in.reshape({1}).contiguous(), rec = rec_in.reshape({1}).contiguous();
    const auto dtype = static_cast<torch::ScalarType>(folded_dtype);
    torch::Tensor folded = torch::empty(weight.sizes(), weight.options().dtype(dtype));
    kc::MlpFoldParams p = mlp_params(weight, w_std, rec, split, dtype);
    p.folded = folded.data_ptr();
    check_launch(kc::reciprocal_mlp_fold_forward(p, current_stream(weight)),
                 "fold_reciprocal_mlp_gates forward");
    ctx->save_for_backward({weight, w_std, rec});
    ctx->saved_data["split"] = split;
    ctx->saved_data["folded_dtype"] = folded_dtype;
    ctx->saved_data["std_shape"] = w_std_in.sizes().vec();
    ctx->saved_data["rec_shape"] = rec_in.sizes().vec();
    return folded;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& weight = saved[0];
    const c10::cuda::CUDAGuard guard(weight.device());
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["folded_dtype"].toInt());
    const torch::Tensor grad = grad_outputs[0].to(dtype).contiguous();
    torch::Tensor grad_weight = torch::empty_like(weight);
    torch::Tensor grad_std = torch::empty_like(saved[1]), grad_rec = torch::empty_like(saved[2]);
    torch::Tensor workspace = torch::empty({2 * weight.size(0)}, weight.options().dtype(torch::kFloat32));
    kc::MlpFoldParams p = mlp_params(weight, saved[1], saved[2], ctx->saved_data["split"].toInt(), dtype);
    p.grad_folded = grad.data_ptr();
    p.grad_weight = grad_weight.data_ptr();
    p.grad_std = grad_std.data_ptr<float>();
    p.grad_rec = grad_rec.data_ptr<float>();
    p.workspace = workspace.data_ptr<float>();
    check_launch(kc::reciprocal_mlp_fold_backward(p, current_stream(weight)),
                 "fold_reciprocal_mlp_gates backward");
    return {grad_weight, grad_std.reshape(ctx->saved_data["std_shape"].toIntVector()),
            grad_rec.reshape(ctx->saved_data["rec_shape"].toIntVector()), torch::Tensor(), torch::Tensor()};
  }
};

bool aligned16(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

torch::Tensor fused_fold_reciprocal_gates(const torch::Tensor& c_attn_weight, const torch::Tensor& w_std,
                                          const torch::Tensor& w_rec, int64_t n_head, int64_t reciprocal_rank) {
  const torch::ScalarType folded_dtype = autocast_output_dtype(c_attn_weight.scalar_type());
  const auto weight_type = kernel_elem_type(c_attn_weight.scalar_type());
  const auto folded_type = kernel_elem_type(folded_dtype);
  if (!weight_type || !folded_type || !w_std.is_cuda() || !w_rec.is_cuda() ||
      !kc::gate_fold_supports(c_attn_weight.size(1), *weight_type, *folded_type) ||
      !c_attn_weight.is_contiguous() || !aligned16(c_attn_weight)) {
    return {};
  }
  // The kernels read float32 gates; a cast (differentiable) is [G] elements.
  return GateFoldFunction::apply(c_attn_weight, w_std.to(torch::kFloat32), w_rec.to(torch::kFloat32), n_head,
                                 reciprocal_rank, static_cast<int64_t>(folded_dtype));
}

torch::Tensor fused_fold_reciprocal_mlp_gates(const torch::Tensor& c_proj_weight, const torch::Tensor& w_std,
                                              const torch::Tensor& rec_scale, int64_t split) {
  const torch::ScalarType folded_dtype = autocast_output_dtype(c_proj_weight.scalar_type());
  const auto weight_type = kernel_elem_type(c_proj_weight.scalar_type());
  const auto folded_type = kernel_elem_type(folded_dtype);
  if (!weight_type || !folded_type || !w_std.is_cuda() || !rec_scale.is_cuda() ||
      !kc::gate_fold_supports(c_proj_weight.size(1), *weight_type, *folded_type) || split % 4 != 0 ||
      !c_proj_weight.is_contiguous() || !aligned16(c_proj_weight)) {
    return {};
  }
  return MlpFoldFunction::apply(c_proj_weight, w_std.to(torch::kFloat32), rec_scale.to(torch::kFloat32), split,
                                static_cast<int64_t>(folded_dtype));
}

}  // namespace rakv::ops::cuda
