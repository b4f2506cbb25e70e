// kv_importance on CUDA: the streaming column-mass kernel (tensor cores, fp16/bf16; D = 64 or
// 128) with the device guard and current stream; other head dims take a chunked LibTorch path
// with the same O(chunk * T) memory bound.
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "kernel_glue.h"
#include "rakv/kernels/cuda/kv_importance.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

bool kernel_supports(const torch::Tensor& t) {
  const auto dtype = t.scalar_type();
  const bool half = dtype == torch::kHalf || dtype == torch::kBFloat16;
  if (!half && dtype != torch::kFloat32) return false;
  if (t.size(3) != 64 && t.size(3) != 128) return false;
  if (!half) return true;
  const auto aligned = [](int64_t v) { return v % 8 == 0; };
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && aligned(t.stride(0)) && aligned(t.stride(1)) &&
         aligned(t.stride(2));
}

// Chunks of queries against all keys, softmax rows in float32, column sums accumulated.
torch::Tensor chunked_importance(const torch::Tensor& q, const torch::Tensor& k, bool exposure_correction,
                                 int64_t window, double scale) {
  const int64_t t = q.size(2);
  const int64_t first = window > 0 && window < t ? t - window : 0;
  torch::Tensor mass = torch::zeros({q.size(0), q.size(1), t}, q.options().dtype(torch::kFloat32));
  constexpr int64_t kChunk = 256;
  for (int64_t start = first; start < t; start += kChunk) {
    const int64_t rows = std::min(kChunk, t - start);
    const int64_t end = start + rows;
    torch::Tensor scores = torch::matmul(q.narrow(2, start, rows), k.narrow(2, 0, end).transpose(-2, -1)).to(torch::kFloat32) * scale;
    scores.masked_fill_(torch::ones({rows, end}, scores.options().dtype(torch::kBool)).triu(start + 1),
                        -std::numeric_limits<float>::infinity());
    mass.narrow(2, 0, end).add_(torch::softmax(scores, -1).sum(2));
  }
  const torch::Tensor position = torch::arange(t, mass.options());
  const torch::Tensor denominator = exposure_correction ? (t - torch::maximum(position, torch::full_like(position, first)))
                                                        : torch::full_like(position, static_cast<double>(t - first));
  return mass / denominator;
}

}  // namespace

torch::Tensor kv_importance(const torch::Tensor& q_in, const torch::Tensor& k_in, bool exposure_correction,
                            int64_t window, double scale) {
  const c10::cuda::CUDAGuard guard(q_in.device());
  const double s = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q_in.size(3)));
  const torch::Tensor q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  const torch::Tensor k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  if (!kernel_supports(q) || !kernel_supports(k)) {
    return chunked_importance(q.contiguous(), k.contiguous(), exposure_correction, window, s);
  }
  torch::Tensor importance = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(torch::kFloat32));
  torch::Tensor lse = torch::empty_like(importance);
  kc::ColumnMassParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.q_batch_stride = q.stride(0);
  p.q_head_stride = q.stride(1);
  p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_head_stride = k.stride(1);
  p.k_row_stride = k.stride(2);
  p.importance = importance.data_ptr<float>();
  p.lse = lse.data_ptr<float>();
  p.B = q.size(0);
  p.H = q.size(1);
  p.T = q.size(2);
  p.D = static_cast<int32_t>(q.size(3));
  p.dtype = *kernel_elem_type(q.scalar_type());  // kernel_supports took float32, fp16, bf16 only
  p.scale = static_cast<float>(s);
  p.window = window;
  p.exposure_correction = exposure_correction;
  check_launch(kc::streaming_column_mass(p, current_stream(q)), "kv_importance");
  return importance;
}

}  // namespace rakv::ops::cuda
