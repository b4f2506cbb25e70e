// kv_select and its helpers: the KV pruning budget, the top-k method names and the per-row
// selection of the positions to keep (SPEC §3): the device-independent argument checks, then the
// CPU kernels (kernels/cpu/kv_select_*.cpp, whose NaN report becomes an error) or, in CUDA
// builds, ops/cuda.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "rakv/kernels/kv_select.h"
#include "rakv/ops.h"

#if defined(RAKV_WITH_CUDA)
#include "cuda/cuda_ops.h"
#endif

namespace rakv::ops {
namespace {

constexpr int64_t kMinSampleSize = 64;  // the audit's max(64, int(T * 0.02))

template <typename scalar_t>
kernels::NanPosition select_cpu(const torch::Tensor& importance, torch::Tensor& indices,
                                int64_t k_keep, int64_t recency, TopkMethod method,
                                int64_t sample_size, uint64_t seed) {
  kernels::KvSelectParams<scalar_t> p;
  p.importance = importance.data_ptr<scalar_t>();
  p.importance_batch_stride = importance.stride(0);
  p.importance_head_stride = importance.stride(1);
  p.indices = indices.data_ptr<int64_t>();
  p.batch = importance.size(0);
  p.heads = importance.size(1);
  p.seqlen = importance.size(2);
  p.k_keep = k_keep;
  p.recency = recency;
  p.sample_size = sample_size;
  p.seed = seed;
  p.num_threads = kv_kernel_threads();
  switch (method) {
    case TopkMethod::kExact:
      return kernels::radix_select_topk(p);
    case TopkMethod::kSampling:
      return kernels::threshold_sampling_topk(p);
    case TopkMethod::kAuditSampling:
      return kernels::audit_sampling_topk(p);
  }
  TORCH_CHECK(false, "kv_select: unhandled top-k method ", static_cast<int>(method));
}

}  // namespace

int kv_kernel_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int threads = std::atoi(env);  // OpenMP's own syntax: a leading count
    if (threads > 0)
      return threads;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int64_t kv_keep_count(int64_t T, double keep_ratio, int64_t k_min) {
  TORCH_CHECK(T >= 1, "kv_keep_count: T must be >= 1, got ", T);
  TORCH_CHECK(keep_ratio > 0 && keep_ratio <= 1,
              "kv_keep_count: keep_ratio must be in (0, 1], got ", keep_ratio);
  TORCH_CHECK(k_min >= 1, "kv_keep_count: k_min must be >= 1, got ", k_min);
  const auto scaled = static_cast<int64_t>(std::floor(static_cast<double>(T) * keep_ratio));
  return std::min(T, std::max(k_min, scaled));
}

TopkMethod parse_topk_method(const std::string& name) {
  if (name == "exact")
    return TopkMethod::kExact;
  if (name == "sampling")
    return TopkMethod::kSampling;
  if (name == "audit_sampling")
    return TopkMethod::kAuditSampling;
  TORCH_CHECK(false, "unknown top-k method '", name,
              "' (expected exact, sampling or audit_sampling)");
}

std::string to_string(TopkMethod method) {
  switch (method) {
    case TopkMethod::kExact:
      return "exact";
    case TopkMethod::kSampling:
      return "sampling";
    case TopkMethod::kAuditSampling:
      return "audit_sampling";
  }
  TORCH_CHECK(false, "unknown top-k method ", static_cast<int>(method));
}

torch::Tensor kv_select(const torch::Tensor& importance_in, int64_t k_keep, int64_t recency,
                        TopkMethod method, double sample_fraction, uint64_t seed,
                        NanPolicy nan_policy) {
  TORCH_CHECK(importance_in.defined(), "kv_select: importance must be defined");
  TORCH_CHECK(importance_in.dim() == 3, "kv_select expects importance of shape [B, H, T], got ",
              importance_in.sizes());
  TORCH_CHECK(importance_in.is_floating_point(), "kv_select expects floating importance, got ",
              importance_in.scalar_type());
  const int64_t seqlen = importance_in.size(2);
  TORCH_CHECK(seqlen >= 1,
              "kv_select: importance has no positions (T = 0): ", importance_in.sizes());
  TORCH_CHECK(k_keep >= 1 && k_keep <= seqlen, "kv_select: k_keep must be in [1, T = ", seqlen,
              "], got ", k_keep);
  TORCH_CHECK(recency >= 0, "kv_select: recency must be >= 0, got ", recency);
  const bool sampled = method != TopkMethod::kExact;
  TORCH_CHECK(!sampled || (sample_fraction > 0 && sample_fraction <= 1),
              "kv_select: sample_fraction must be in (0, 1] for ", to_string(method), ", got ",
              sample_fraction);
  if (importance_in.is_cuda()) {
#if defined(RAKV_WITH_CUDA)
    return cuda::kv_select(importance_in, k_keep, recency, method, sample_fraction, seed,
                           nan_policy);
#else
    TORCH_CHECK(false, "kv_select: importance is on ", importance_in.device(),
                " but this build of rakv has no CUDA kernels (configure with -DRAKV_CUDA=ON)");
#endif
  }
  TORCH_CHECK(importance_in.is_cpu(), "kv_select: unsupported device ", importance_in.device());
  TORCH_CHECK(importance_in.scalar_type() == torch::kFloat32 ||
                  importance_in.scalar_type() == torch::kFloat64,
              "kv_select on the CPU supports float32 and float64 importance, got ",
              importance_in.scalar_type());

  const torch::Tensor importance =
      importance_in.stride(2) == 1 ? importance_in : importance_in.contiguous();
  const int64_t sample_size =
      sampled ? std::min(seqlen, std::max(kMinSampleSize,
                                          static_cast<int64_t>(std::floor(
                                              static_cast<double>(seqlen) * sample_fraction))))
              : 0;
  const int64_t per_row = method == TopkMethod::kAuditSampling
                              ? kernels::audit_sample_count(seqlen, k_keep, sample_size)
                              : k_keep;
  torch::Tensor indices = torch::empty({importance.size(0), importance.size(1), per_row},
                                       importance.options().dtype(torch::kInt64));
  if (indices.numel() == 0)
    return indices;
  kernels::NanPosition nan;
  AT_DISPATCH_FLOATING_TYPES(importance.scalar_type(), "kv_select", [&] {
    nan = select_cpu<scalar_t>(importance, indices, k_keep, recency, method, sample_size, seed);
  });
  TORCH_CHECK(!nan.found(), "kv_select: importance contains NaN at [", nan.batch, ", ", nan.head,
              ", ", nan.position, "]");
  return indices;
}

}  // namespace rakv::ops
