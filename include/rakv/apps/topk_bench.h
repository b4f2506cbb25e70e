// `rakv topk`: times the KV top-k selection methods on random importance rows against LibTorch's
// torch::topk in the same run, with the count each returns and its recall against `exact`.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "rakv/ops.h"

namespace rakv::apps {

struct TopkBenchOptions {
  int64_t seq_len = 16384;  // T
  int64_t batch = 8;
  int64_t heads = 12;
  double keep_ratio = 0.38;
  int64_t k_min = 64;
  int64_t recency = 64;
  double sample_fraction = 0.02;
  std::vector<ops::TopkMethod> methods = {ops::TopkMethod::kExact, ops::TopkMethod::kSampling,
                                          ops::TopkMethod::kAuditSampling};
  int warmup = 2;
  int repeats = 10;
  uint64_t seed = 1;
  torch::Device device = torch::kCPU;
};

// The row of the exact method on CUDA with its NaN check (ops::NanPolicy::kError, the op's
// default: a host synchronisation per call). The methods' own rows are timed without it, like
// torch::topk, which checks nothing.
inline constexpr const char* kExactNanCheckedMethod = "exact_nan_checked";

struct TopkBenchRow {
  int64_t seq_len = 0;
  int64_t k = 0;           // k_keep asked for
  std::string method;      // a TopkMethod's name, or kExactNanCheckedMethod
  int64_t returned_k = 0;  // positions returned per row
  double recall = 0;       // mean over rows of |selected ∩ exact| / k
  double median_ms = 0;
  double torch_topk_ms = 0;  // torch::topk(importance, k) median, same run and input
};

// The CSV header of `rakv topk --csv`.
inline constexpr const char* kTopkCsvHeader =
    "T,k,method,returned_k,recall,median_ms,torch_topk_ms";

std::vector<TopkBenchRow> run_topk_benchmark(const TopkBenchOptions& options);
// Fraction of the `reference` indices (int64 [B, H, k]) found in `selected`, over all rows (equal
// to the mean per-row recall; counted in integers, so identical selections give exactly 1).
// selected: int64 [B, H, n].
double selection_recall(const torch::Tensor& selected, const torch::Tensor& reference);
std::string topk_csv_row(const TopkBenchRow& row);

}  // namespace rakv::apps
