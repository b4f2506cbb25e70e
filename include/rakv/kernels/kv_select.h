// Selection of the KV positions to keep, per (b, h) row of an importance tensor (SPEC §3):
// an exact radix select, the threshold-sampling estimate (the audit's idea with the count
// corrected) and the audit's sampling code as written. Framework-free; the op layer
// (ops/kv_select.cpp) checks arguments, allocates and turns a reported NaN into an error.
//
// Shape vocabulary: B batch, H heads, T sequence length, n selected positions per row.
#pragma once

#include <cstdint>

namespace rakv::kernels {

// Filled by the op; the kernels trust it.
template <typename scalar_t>
struct KvSelectParams {
  const scalar_t* importance = nullptr;  // [B, H, T], float32 or float64, last dim contiguous
  int64_t importance_batch_stride = 0;   // in elements
  int64_t importance_head_stride = 0;    // in elements
  int64_t* indices = nullptr;            // [B, H, n] int64, contiguous (written), ascending rows

  int64_t batch = 0, heads = 0, seqlen = 0;
  int64_t k_keep = 0;  // positions to keep, 1 <= k_keep <= T
  // The last min(recency, k_keep) positions are always kept when T > recency (exact and
  // threshold sampling); the rest of k_keep is chosen among the earlier positions.
  int64_t recency = 0;
  int64_t sample_size = 0;  // sampling methods: values drawn per row, 1 <= sample_size <= T
  uint64_t seed = 0;        // sampling methods: the draw of row (b, h) depends on (seed, b, h)
  int num_threads = 1;
};

// Where a kernel met a NaN (the lowest position of the first such row), or nothing.
struct NanPosition {
  int64_t batch = -1, head = -1, position = -1;
  bool found() const { return position >= 0; }
};

// `exact`: the k_keep most important positions, ties to the lower index; n = k_keep. A radix
// select on order-preserving integer keys (8-bit digits) finds the threshold value and how
// many of its ties to take; one ascending scan then emits the positions already sorted.
// O(T) per row, OpenMP over rows, or over chunks of one row when there are fewer rows than
// threads. Reports a NaN anywhere in the rows.
template <typename scalar_t>
NanPosition radix_select_topk(const KvSelectParams<scalar_t>& params);

// `sampling`: estimates the threshold from a stratified uniform sample of the eligible
// positions, takes the candidates at or above it in one pass, then returns exactly k_keep:
// the excess or deficit is settled by value inside the boundary band (up to the neighbouring
// sample order statistic) and beyond it by recency. n = k_keep; its recall against `exact` is
// measured, not guaranteed. Rows whose sample would cover every eligible position use
// `exact`. Reports a NaN anywhere in the rows.
template <typename scalar_t>
NanPosition threshold_sampling_topk(const KvSelectParams<scalar_t>& params);

// `audit_sampling`: the audit document's code as written (finding 2): sample_size positions
// drawn uniformly with replacement, the top k_sample of their values, mapped back and sorted;
// recency ignored, duplicates kept. n = audit_sample_count(T, k_keep, sample_size), not k_keep
// (the audit's defect, reproduced on purpose). Reads, so reports NaN at, sampled positions only.
template <typename scalar_t>
NanPosition audit_sampling_topk(const KvSelectParams<scalar_t>& params);

// k_sample = max(1, int(k_keep * (sample_size / T))), in the reference's floating point.
int64_t audit_sample_count(int64_t seqlen, int64_t k_keep, int64_t sample_size);

}  // namespace rakv::kernels
