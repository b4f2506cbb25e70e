// kv_select on CUDA: the radix / sampling selection kernels of kernels/cuda, with the device
// guard, the current stream, a workspace from the caching allocator, and the kernels' NaN report
// turned into an error naming the first NaN.
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include "cuda_ops.h"
#include "rakv/kernels/cuda/kv_select.h"

namespace rakv::ops::cuda {
namespace {

namespace kc = rakv::kernels::cuda;

void check_launch(int status, const char* what, int64_t rows, int64_t t, int64_t k_keep,
                  int64_t recency) {
  TORCH_CHECK(status == 0, what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)),
              " ", kc::last_error_detail(), " (rows ", rows, ", T ", t, ", k_keep ", k_keep,
              ", recency ", recency, ")");
}

// The audit's code as written (SPEC §3 `audit_sampling`), on LibTorch ops: a uniform sample with
// replacement, a top-k of k * sample / T over it, mapped back, sorted for a stable output.
torch::Tensor audit_sampling(const torch::Tensor& importance, int64_t k_keep,
                             double sample_fraction, uint64_t seed) {
  const int64_t t = importance.size(2);
  const int64_t sample =
      std::min(t, std::max<int64_t>(64, static_cast<int64_t>(t * sample_fraction)));
  const int64_t k_sample =
      std::max<int64_t>(1, static_cast<int64_t>(k_keep * (static_cast<double>(sample) / t)));
  auto generator = at::make_generator<at::CUDAGeneratorImpl>(importance.device().index());
  generator.set_current_seed(seed);
  const torch::Tensor sample_index =
      torch::randint(0, t, {importance.size(0), importance.size(1), sample}, generator,
                     importance.options().dtype(torch::kInt64));
  const torch::Tensor local = std::get<1>(importance.gather(2, sample_index).topk(k_sample, -1));
  return std::get<0>(sample_index.gather(2, local).sort(-1));
}

}  // namespace

torch::Tensor kv_select(const torch::Tensor& importance_in, int64_t k_keep, int64_t recency,
                        TopkMethod method, double sample_fraction, uint64_t seed,
                        NanPolicy nan_policy) {
  const c10::cuda::CUDAGuard guard(importance_in.device());
  // The kernels report launch errors through cudaGetLastError; one left pending by earlier work
  // must not be blamed on them.
  const cudaError_t pending = cudaGetLastError();
  TORCH_CHECK(pending == cudaSuccess,
              "kv_select: a CUDA error was pending before the call: ", cudaGetErrorString(pending));
  // Each tensor op costs host time before the kernels start (the GPU idles in a lone call): skip
  // the conversions when there is nothing to convert.
  const torch::Tensor importance = importance_in.scalar_type() == torch::kFloat32 && importance_in.is_contiguous()
                                       ? importance_in
                                       : importance_in.to(torch::kFloat32).contiguous();
  if (method == TopkMethod::kAuditSampling)
    return audit_sampling(importance, k_keep, sample_fraction, seed);
  const int64_t rows = importance.size(0) * importance.size(1);
  const int64_t t = importance.size(2);
  torch::Tensor out = torch::empty({importance.size(0), importance.size(1), k_keep},
                                   importance.options().dtype(torch::kInt64));
  // The row status and the kernels' workspace in one allocation (the workspace 256-byte aligned).
  const int64_t status_bytes = (rows * 4 + 255) / 256 * 256;
  torch::Tensor scratch =
      torch::empty({status_bytes + static_cast<int64_t>(kc::kv_select_workspace_bytes(rows, t))},
                   importance.options().dtype(torch::kUInt8));
  uint8_t* const scratch_base = scratch.data_ptr<uint8_t>();
  const auto stream = c10::cuda::getCurrentCUDAStream(importance.device().index()).stream();
  const auto fill = [&](kc::SelectionParams& p) {
    p.importance = importance.data_ptr<float>();
    p.row_stride = t;
    p.rows = rows;
    p.T = t;
    p.k_keep = k_keep;
    p.recency = recency;
    p.out = out.data_ptr<int64_t>();
    p.out_row_stride = k_keep;
    p.row_status = reinterpret_cast<int32_t*>(scratch_base);
    p.workspace = scratch_base + status_bytes;
  };
  if (method == TopkMethod::kExact) {
    kc::ExactSelectParams p;
    fill(p);
    check_launch(kc::kv_select_exact(p, stream), "kv_select (CUDA, exact)", rows, t, k_keep,
                 recency);
  } else {
    kc::SamplingSelectParams p;
    fill(p);
    p.sample_fraction = sample_fraction;
    p.seed = seed;
    check_launch(kc::kv_select_sampling(p, stream), "kv_select (CUDA, sampling)", rows, t, k_keep,
                 recency);
  }
  if (nan_policy == NanPolicy::kError &&
      scratch.narrow(0, 0, rows * 4).view(torch::kInt32).bitwise_and(kc::kRowStatusNaN).any().item<bool>()) {
    const torch::Tensor at = importance.isnan().nonzero()[0].cpu();
    TORCH_CHECK(false, "kv_select: importance contains NaN at [", at[0].item<int64_t>(), ", ",
                at[1].item<int64_t>(), ", ", at[2].item<int64_t>(), "]");
  }
  return out;
}

}  // namespace rakv::ops::cuda
