// The fused LayerNorm on CUDA (kernels/cuda/layer_norm.cu) as an autograd Function: the forward
// saves x, weight and the row statistics; the backward returns dx, dweight and dbias from one
// pass over x and dy.
#include <ATen/autocast_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "rakv/kernels/cuda/layer_norm.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

std::optional<kc::ElemType> elem_type(torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return kc::ElemType::kFloat32;
  if (dtype == torch::kBFloat16) return kc::ElemType::kBFloat16;
  if (dtype == torch::kHalf) return kc::ElemType::kFloat16;
  return std::nullopt;
}

// What the next layer reads: autocast's dtype for a float32 x under CUDA autocast.
torch::ScalarType output_dtype(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat32 && at::autocast::is_autocast_enabled(at::kCUDA)) {
    return at::autocast::get_autocast_dtype(at::kCUDA);
  }
  return x.scalar_type();
}

kc::LayerNormParams params(const torch::Tensor& x, const torch::Tensor& weight, torch::ScalarType y_dtype,
                           double eps) {
  kc::LayerNormParams p;
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.rows = x.numel() / x.size(-1);
  p.cols = static_cast<int32_t>(x.size(-1));
  p.eps = static_cast<float>(eps);
  p.x_type = *elem_type(x.scalar_type());
  p.weight_type = *elem_type(weight.scalar_type());
  p.y_type = *elem_type(y_dtype);
  return p;
}

void check_status(int status, const char* what) {
  TORCH_CHECK(status == 0, what, " (CUDA) failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)), " ",
              kc::last_error_detail());
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
    check_status(kc::layer_norm_forward(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
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
    check_status(kc::layer_norm_backward(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
                 "layer_norm backward");
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               double eps) {
  const auto x_type = elem_type(x.scalar_type());
  const auto w_type = elem_type(weight.scalar_type());
  const torch::ScalarType y_dtype = output_dtype(x);
  const auto y_type = elem_type(y_dtype);
  if (!x_type || !w_type || !y_type || bias.scalar_type() != weight.scalar_type() ||
      !kc::layer_norm_supports(x.size(-1), *x_type, *w_type, *y_type)) {
    return {};
  }
  return LayerNormFunction::apply(x, weight, bias, eps, static_cast<int64_t>(y_dtype));
}

}  // namespace rakv::ops::cuda
