// The fused LayerNorm on CUDA (kernels/cuda/layer_norm.cu) as an autograd Function: the forward
// saves x, weight and the row statistics; the backward returns dx, dweight and dbias from one
// pass over x and dy.
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "kernel_glue.h"
#include "rakv/kernels/cuda/layer_norm.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

kc::LayerNormParams params(const torch::Tensor& x, const torch::Tensor& weight, torch::ScalarType y_dtype,
                           double eps) {
  kc::LayerNormParams p;
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.rows = x.numel() / x.size(-1);
  p.cols = static_cast<int32_t>(x.size(-1));
  p.eps = static_cast<float>(eps);
  p.x_type = *kernel_elem_type(x.scalar_type());
  p.weight_type = *kernel_elem_type(weight.scalar_type());
  p.y_type = *kernel_elem_type(y_dtype);
  return p;
}

class LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& weight_in, const torch::Tensor& bias_in, double eps,
                               int64_t y_dtype) {
    const c10::cuda::CUDAGuard guard(x_in.device());
    const torch::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
    const auto y_type = static_cast<torch::ScalarType>(y_dtype);
    torch::Tensor y = torch::empty(x.sizes(), x.options().dtype(y_type));
    const int64_t rows = x.numel() / x.size(-1);
    torch::Tensor mean = torch::empty({rows}, x.options().dtype(torch::kFloat32));
    torch::Tensor rstd = torch::empty_like(mean);
    kc::LayerNormParams p = params(x, weight, y_type, eps);
    p.bias = bias.data_ptr();
    p.y = y.data_ptr();
    p.mean = mean.data_ptr<float>();
    p.rstd = rstd.data_ptr<float>();
    check_launch(kc::layer_norm_forward(p, current_stream(x)),
                 "layer_norm forward");
    ctx->save_for_backward({x, weight, mean, rstd});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["y_dtype"] = y_dtype;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& weight = saved[1];
    const c10::cuda::CUDAGuard guard(x.device());
    const auto y_type = static_cast<torch::ScalarType>(ctx->saved_data["y_dtype"].toInt());
    const torch::Tensor dy = grad_outputs[0].to(y_type).contiguous();
    torch::Tensor dx = torch::empty_like(x);
    torch::Tensor dweight = torch::empty_like(weight), dbias = torch::empty_like(weight);
    torch::Tensor workspace = torch::empty(
        {static_cast<int64_t>(kc::layer_norm_backward_workspace_floats(x.numel() / x.size(-1), x.size(-1)))},
        x.options().dtype(torch::kFloat32));
    kc::LayerNormParams p = params(x, weight, y_type, ctx->saved_data["eps"].toDouble());
    p.mean = saved[2].data_ptr<float>();
    p.rstd = saved[3].data_ptr<float>();
    p.dy = dy.data_ptr();
    p.dx = dx.data_ptr();
    p.dweight = dweight.data_ptr();
    p.dbias = dbias.data_ptr();
    p.workspace = workspace.data_ptr<float>();
    check_launch(kc::layer_norm_backward(p, current_stream(x)),
                 "layer_norm backward");
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               double eps) {
  const auto x_type = kernel_elem_type(x.scalar_type());
  const auto w_type = kernel_elem_type(weight.scalar_type());
  const torch::ScalarType y_dtype = autocast_output_dtype(x.scalar_type());
  const auto y_type = kernel_elem_type(y_dtype);
  if (!x_type || !w_type || !y_type || bias.scalar_type() != weight.scalar_type() ||
      !kc::layer_norm_supports(x.size(-1), *x_type, *w_type, *y_type)) {
    return {};
  }
  return LayerNormFunction::apply(x, weight, bias, eps, static_cast<int64_t>(y_dtype));
}

}  // namespace rakv::ops::cuda
