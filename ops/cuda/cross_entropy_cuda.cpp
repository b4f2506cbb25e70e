// cross_entropy_forward / _backward on CUDA: the fused kernels of kernels/cuda/cross_entropy.cu
// with the device guard and the current stream. No host synchronisation: the gradient scale is
// read by the kernel from device memory, and an out-of-range target shows as a NaN loss.
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "kernel_glue.h"
#include "rakv/kernels/cuda/cross_entropy.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

kc::CrossEntropyParams params(const torch::Tensor& logits, const torch::Tensor& targets,
                              int64_t vocab_size, int64_t ignore_index) {
  kc::CrossEntropyParams p;
  p.logits = logits.data_ptr();
  p.row_stride = logits.stride(0);
  p.rows = logits.size(0);
  p.columns = logits.size(1);
  p.vocab = vocab_size;
  p.dtype = *kernel_elem_type(logits.scalar_type());  // float64 was refused by the op
  p.targets = targets.data_ptr<int64_t>();
  p.ignore_index = ignore_index;
  return p;
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> cross_entropy_forward(const torch::Tensor& logits,
                                                               const torch::Tensor& targets,
                                                               int64_t vocab_size,
                                                               int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  torch::Tensor loss = torch::empty({logits.size(0)}, logits.options().dtype(torch::kFloat32));
  torch::Tensor lse = torch::empty_like(loss);
  kc::CrossEntropyParams p = params(logits, targets, vocab_size, ignore_index);
  p.loss = loss.data_ptr<float>();
  p.lse = lse.data_ptr<float>();
  check_launch(kc::cross_entropy_forward(p, current_stream(logits)), "cross_entropy_forward");
  return {loss, lse};
}

torch::Tensor cross_entropy_backward(const torch::Tensor& grad_scale, const torch::Tensor& logits,
                                     const torch::Tensor& targets, const torch::Tensor& lse,
                                     int64_t vocab_size, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const torch::Tensor scale = grad_scale.to(torch::kFloat32).reshape({1}).contiguous();
  torch::Tensor grad = torch::empty({logits.size(0), logits.size(1)}, logits.options());
  kc::CrossEntropyParams p = params(logits, targets, vocab_size, ignore_index);
  p.lse = lse.data_ptr<float>();
  p.grad_scale = scale.data_ptr<float>();
  p.grad_logits = grad.data_ptr();
  p.grad_row_stride = grad.stride(0);
  check_launch(kc::cross_entropy_backward(p, current_stream(logits)), "cross_entropy_backward");
  return grad;
}

}  // namespace rakv::ops::cuda
