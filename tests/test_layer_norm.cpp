// ops::layer_norm on the CPU (LibTorch's kernel behind rakv's checks): output and gradients of
// x, weight and bias against a float64 reference written out by its formula; bad inputs. The
// fused CUDA kernels are tested in tests/cuda/test_layer_norm.cu and test_cuda_ops.cpp.
#include <torch/torch.h>

#include "rakv/ops.h"
#include "test_helpers.h"

namespace {

using rakv::testing::expect_error_containing;
using rakv::testing::relative_error;

torch::Tensor reference_layer_norm(const torch::Tensor& x, const torch::Tensor& w,
                                   const torch::Tensor& b, double eps) {
  const torch::Tensor mean = x.mean(-1, true);
  const torch::Tensor var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / torch::sqrt(var + eps) * w + b;
}

TEST(LayerNorm, MatchesItsFormulaWithGradients) {
  torch::manual_seed(41);
  for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const torch::Tensor x0 = torch::randn({3, 5, 24}, torch::kFloat64) * 2 + 0.5;
    const torch::Tensor w0 = torch::randn({24}, torch::kFloat64) + 1;
    const torch::Tensor b0 = torch::randn({24}, torch::kFloat64);
    const torch::Tensor dy = torch::randn({3, 5, 24}, torch::kFloat64);
    // Copies: for float64, to(dtype) would return x0 itself.
    const torch::Tensor x = x0.clone().to(dtype).requires_grad_(true);
    const torch::Tensor w = w0.clone().to(dtype).requires_grad_(true);
    const torch::Tensor b = b0.clone().to(dtype).requires_grad_(true);
    const torch::Tensor y = rakv::ops::layer_norm(x, w, b, 1e-5);
    y.backward(dy.to(dtype));
    const torch::Tensor xr = x0.clone().requires_grad_(true);
    const torch::Tensor wr = w0.clone().requires_grad_(true);
    const torch::Tensor br = b0.clone().requires_grad_(true);
    reference_layer_norm(xr, wr, br, 1e-5).backward(dy);
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-5;
    EXPECT_LT(relative_error(y, reference_layer_norm(x0, w0, b0, 1e-5)), tol);
    EXPECT_LT(relative_error(x.grad(), xr.grad()), tol);
    EXPECT_LT(relative_error(w.grad(), wr.grad()), tol);
    EXPECT_LT(relative_error(b.grad(), br.grad()), tol);
  }
}

TEST(LayerNorm, BadInputsAreRejectedWithAClearMessage) {
  const torch::Tensor x = torch::randn({4, 8});
  const torch::Tensor w = torch::ones({8}), b = torch::zeros({8});
  expect_error_containing([&] { rakv::ops::layer_norm(x, torch::ones({7}), b, 1e-5); },
                          "weight and bias must be [8]");
  expect_error_containing([&] { rakv::ops::layer_norm(x.to(torch::kInt64), w, b, 1e-5); },
                          "x must be a floating tensor");
  expect_error_containing([&] { rakv::ops::layer_norm(x, w, b, -1.0); }, "eps must be >= 0");
}

}  // namespace
