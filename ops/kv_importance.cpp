// kv_importance: attention-mass importance of every key (SPEC §3): the device-independent
// argument checks, then the streaming CPU kernel (kernels/cpu/kv_importance.cpp) or, in CUDA
// builds, ops/cuda.
#include <torch/torch.h>

#include <cmath>

#include "rakv/kernels/kv_importance.h"
#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {
namespace {

// Fails with the index of the first NaN of `t` (a [B, H, T, D] input) when it has one. A
// finite sum (one pass, no temporary of t's size) rules NaN out; only otherwise is it searched.
void check_no_nan(const torch::Tensor& t, const char* name) {
  if (std::isfinite(t.sum(torch::kFloat64).item<double>()))
    return;
  const torch::Tensor nan = t.isnan();
  if (!nan.any().item<bool>())
    return;
  const torch::Tensor at = nan.nonzero()[0];
  TORCH_CHECK(false, "kv_importance: ", name, " contains NaN at [", at[0].item<int64_t>(), ", ",
              at[1].item<int64_t>(), ", ", at[2].item<int64_t>(), ", ", at[3].item<int64_t>(), "]");
}

template <typename scalar_t>
void streaming_column_mass_cpu(const torch::Tensor& q, const torch::Tensor& k,
                               torch::Tensor& importance, int64_t window, bool exposure_correction,
                               double scale) {
  kernels::KvImportanceParams<scalar_t> p;
  p.q = q.data_ptr<scalar_t>();
  p.k = k.data_ptr<scalar_t>();
  p.importance = importance.data_ptr<scalar_t>();
  p.q_batch_stride = q.stride(0);
  p.q_head_stride = q.stride(1);
  p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_head_stride = k.stride(1);
  p.k_row_stride = k.stride(2);
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.seqlen = q.size(2);
  p.head_dim = q.size(3);
  p.window = window;
  p.exposure_correction = exposure_correction;
  p.scale = scale;
  p.num_threads = kv_kernel_threads();
  kernels::streaming_column_mass(p);
}

}  // namespace

torch::Tensor kv_importance(const torch::Tensor& q_in, const torch::Tensor& k_in,
                            bool exposure_correction, int64_t window, double scale) {
  TORCH_CHECK(q_in.defined() && k_in.defined(), "kv_importance: q and k must be defined");
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 4,
              "kv_importance expects q and k of shape [B, H, T, D], got ", q_in.sizes(), " and ",
              k_in.sizes());
  TORCH_CHECK(q_in.sizes() == k_in.sizes(), "kv_importance: q and k shapes differ: ", q_in.sizes(),
              " and ", k_in.sizes());
  TORCH_CHECK(q_in.scalar_type() == k_in.scalar_type(),
              "kv_importance: q and k dtypes differ: ", q_in.scalar_type(), " and ",
              k_in.scalar_type());
  TORCH_CHECK(q_in.is_floating_point(), "kv_importance expects floating q and k, got ",
              q_in.scalar_type());
  TORCH_CHECK(q_in.device() == k_in.device(), "kv_importance: q is on ", q_in.device(),
              " but k on ", k_in.device());
  TORCH_CHECK(q_in.size(3) >= 1, "kv_importance: head dim D must be >= 1, got ", q_in.sizes());
  TORCH_CHECK(window >= 0, "kv_importance: window must be >= 0 (0: every query counts), got ",
              window);
  TORCH_CHECK(std::isfinite(scale), "kv_importance: scale must be finite, got ", scale);
  if (q_in.numel() > 0) {
    check_no_nan(q_in, "q");
    check_no_nan(k_in, "k");
  }
  if (q_in.is_cuda()) {
#if defined(RAKV_WITH_CUDA)
    return cuda::kv_importance(q_in, k_in, exposure_correction, window, scale);
#else
    TORCH_CHECK(false, "kv_importance: q and k are on ", q_in.device(),
                " but this build of rakv has no CUDA kernels (configure with -DRAKV_CUDA=ON)");
#endif
  }
  TORCH_CHECK(q_in.is_cpu(), "kv_importance: unsupported device ", q_in.device());
  TORCH_CHECK(q_in.scalar_type() == torch::kFloat32 || q_in.scalar_type() == torch::kFloat64,
              "kv_importance on the CPU supports float32 and float64, got ", q_in.scalar_type());

  const int64_t seqlen = q_in.size(2);
  torch::Tensor importance = torch::zeros({q_in.size(0), q_in.size(1), seqlen}, q_in.options());
  if (importance.numel() == 0)
    return importance;
  // The kernel reads rows with a unit stride along D; any batch, head and row strides.
  const torch::Tensor q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  const torch::Tensor k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  const int64_t counted = window == 0 ? seqlen : std::min(window, seqlen);
  const double resolved_scale = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "kv_importance", [&] {
    streaming_column_mass_cpu<scalar_t>(q, k, importance, counted, exposure_correction,
                                        resolved_scale);
  });
  return importance;
}

}  // namespace rakv::ops
