// ops::layer_norm: argument checks, then the fused CUDA kernels where they apply (ops/cuda) or
// LibTorch's layer_norm.
#include <torch/torch.h>

#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps) {
  TORCH_CHECK(x.defined() && weight.defined() && bias.defined(),
              "layer_norm: x, weight and bias must be defined");
  TORCH_CHECK(x.dim() >= 1 && x.is_floating_point(),
              "layer_norm: x must be a floating tensor [..., C], got ", x.scalar_type(), " ",
              x.sizes());
  const int64_t c = x.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == c && bias.sizes() == weight.sizes(),
              "layer_norm: weight and bias must be [", c, "], got ", weight.sizes(), " and ",
              bias.sizes());
  TORCH_CHECK(weight.device() == x.device() && bias.device() == x.device(),
              "layer_norm: weight and bias must be on x's device ", x.device());
  TORCH_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
#if defined(RAKV_WITH_CUDA)
  if (x.is_cuda()) {
    torch::Tensor fused = cuda::fused_layer_norm(x, weight, bias, eps);
    if (fused.defined()) return fused;
  }
#endif
  return torch::layer_norm(x, {c}, weight, bias, eps);
}

}  // namespace rakv::ops
