// Timing and recall of the KV top-k selection methods (`rakv topk`).
#include <torch/torch.h>

#include <sstream>

#include "rakv/apps/topk_bench.h"
#include "rakv/util/timing.h"

namespace rakv::apps {

double selection_recall(const torch::Tensor& selected, const torch::Tensor& reference) {
  TORCH_CHECK(selected.dim() == 3 && reference.dim() == 3 && selected.size(0) == reference.size(0) &&
                  selected.size(1) == reference.size(1),
              "selection_recall expects [B, H, n] and [B, H, k], got ", selected.sizes(), " and ",
              reference.sizes());
  const int64_t t = std::max(selected.max().item<int64_t>(), reference.max().item<int64_t>()) + 1;
  const auto rows = [&](const torch::Tensor& idx) {
    torch::Tensor marks = torch::zeros({idx.size(0), idx.size(1), t}, torch::TensorOptions().dtype(torch::kBool).device(idx.device()));
    return marks.scatter_(2, idx, true);
  };
  // Every row has the same k, so the mean of the per-row recalls is total hits / total positions:
  // counted in integers, an identical selection gives exactly 1 (a float64 mean on CUDA gave
  // 0.9999999999999998 and made the audit call identical exact selections incorrect).
  const int64_t hits = rows(selected).logical_and(rows(reference)).sum().item<int64_t>();
  return static_cast<double>(hits) / static_cast<double>(reference.numel());
}

std::vector<TopkBenchRow> run_topk_benchmark(const TopkBenchOptions& options) {
  TORCH_CHECK(options.seq_len >= 1 && options.batch >= 1 && options.heads >= 1, "topk: T, batch and heads must be >= 1");
  TORCH_CHECK(options.repeats >= 1, "topk: --repeats must be >= 1");
  torch::manual_seed(static_cast<int64_t>(options.seed));
  // Random importance in (0, 1]: never zeros, no ties in practice.
  const torch::Tensor importance =
      (torch::rand({options.batch, options.heads, options.seq_len}, torch::TensorOptions().device(options.device)) + 1e-6)
          .contiguous();
  const int64_t k = ops::kv_keep_count(options.seq_len, options.keep_ratio, options.k_min);
  const double torch_ms =
      util::time_operation([&] { torch::topk(importance, k, -1); }, options.warmup, options.repeats, options.device)
          .median_ms;
  const torch::Tensor exact = ops::kv_select(importance, k, options.recency, ops::TopkMethod::kExact,
                                             options.sample_fraction, options.seed);
  const auto measure = [&](ops::TopkMethod method, ops::NanPolicy nan_policy, std::string name) {
    torch::Tensor selected;
    const auto stats = util::time_operation(
        [&] {
          selected = ops::kv_select(importance, k, options.recency, method, options.sample_fraction, options.seed,
                                    nan_policy);
        },
        options.warmup, options.repeats, options.device);
    TopkBenchRow row;
    row.seq_len = options.seq_len;
    row.k = k;
    row.method = std::move(name);
    row.returned_k = selected.size(2);
    row.recall = selection_recall(selected, exact);
    row.median_ms = stats.median_ms;
    row.torch_topk_ms = torch_ms;
    return row;
  };
  // Timed like torch::topk, which checks nothing: without reading the NaN status back. On CUDA
  // the op's default does read it back (a host synchronisation per call), timed on its own row.
  std::vector<TopkBenchRow> rows;
  bool has_exact = false;
  for (ops::TopkMethod method : options.methods) {
    rows.push_back(measure(method, ops::NanPolicy::kPropagate, ops::to_string(method)));
    has_exact |= method == ops::TopkMethod::kExact;
  }
  if (has_exact && options.device.is_cuda())
    rows.push_back(measure(ops::TopkMethod::kExact, ops::NanPolicy::kError, kExactNanCheckedMethod));
  return rows;
}

std::string topk_csv_row(const TopkBenchRow& row) {
  std::ostringstream out;
  out << row.seq_len << "," << row.k << "," << row.method << "," << row.returned_k << "," << row.recall << ","
      << row.median_ms << "," << row.torch_topk_ms;
  return out.str();
}

}  // namespace rakv::apps
