// Shared pieces of the KV selection kernels (kv_select_*.cpp): the recency split of a row, the
// per-row random stream of the sampling methods, the row loop with NaN reporting, and the exact
// radix select of one row, which the threshold sampling reuses for its exact fallback.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kv_select_scan.h"
#include "rakv/kernels/kv_select.h"

namespace rakv::kernels::detail {

// A row of T positions keeps `forced` trailing positions unconditionally (the recency window)
// and chooses `need` more among the `eligible` positions before them.
struct RowPlan {
  int64_t eligible;
  int64_t need;
  int64_t forced;
};

inline RowPlan plan_row(int64_t seqlen, int64_t k_keep, int64_t recency) {
  const int64_t forced = recency > 0 && seqlen > recency ? std::min(recency, k_keep) : 0;
  return {seqlen - forced, k_keep - forced, forced};
}

// Writes first, first + 1, ..., first + count - 1.
inline void write_range(int64_t* out, int64_t first, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    out[i] = first + i;
}

// splitmix64 (Steele, Lea, Flood 2014): a fast, well-mixed 64-bit stream. One per row, seeded
// from (seed, row), so results do not depend on the number of threads.
class RowRandom {
 public:
  RowRandom(uint64_t seed, int64_t row) : state_(seed) {
    state_ = next() ^ static_cast<uint64_t>(row);
    next();
  }
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by Lemire's multiply-shift (bias < n / 2^64).
  int64_t below(int64_t n) {
    return static_cast<int64_t>(
        (static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >> 64);
  }

 private:
  uint64_t state_;
};

// First NaN of x[0, n), or -1.
template <typename T>
int64_t first_nan(const T* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    if (std::isnan(x[j]))
      return j;
  }
  return -1;
}

// Per-thread scratch of the row kernels, grown on demand and reused across rows.
template <typename T>
struct RowScratch {
  std::vector<KeyOf<T>> keys;
  std::vector<int64_t> histograms;
  std::vector<int64_t> positions_a, positions_b, positions_c;
  std::vector<T> values;
};

// Runs row_fn(row, scratch) -> NaN position (or -1) for every (b, h) row with OpenMP, and
// reports the NaN of the lowest row that had one.
template <typename T, typename RowFn>
NanPosition for_each_row(const KvSelectParams<T>& p, RowFn&& row_fn) {
  const int64_t rows = p.batch * p.heads;
  std::vector<int64_t> nan_at(rows, -1);
  // A thread per row at most, and enough elements per thread to pay for waking it.
  constexpr int64_t kMinElementsPerThread = 32768;
  const int64_t useful = std::min(rows, rows * p.seqlen / kMinElementsPerThread);
  const int threads =
      static_cast<int>(std::clamp<int64_t>(p.num_threads, 1, std::max<int64_t>(useful, 1)));
#pragma omp parallel num_threads(threads)
  {
    RowScratch<T> scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t row = 0; row < rows; ++row)
      nan_at[row] = row_fn(row, scratch);
  }
  for (int64_t row = 0; row < rows; ++row) {
    if (nan_at[row] >= 0)
      return {row / p.heads, row % p.heads, nan_at[row]};
  }
  return {};
}

template <typename T>
const T* row_values(const KvSelectParams<T>& p, int64_t row) {
  return p.importance + (row / p.heads) * p.importance_batch_stride +
         (row % p.heads) * p.importance_head_stride;
}

// Row `row` of p: writes its forced recency positions at the end of its output, lets
// choose(x, out) -> NaN position or -1 fill the first plan.need slots from the eligible
// prefix, and reports the row's first NaN (the chooser's, else one in the forced window).
template <typename T, typename ChooseFn>
int64_t select_row_with_recency(const KvSelectParams<T>& p, const RowPlan& plan, int64_t row,
                                ChooseFn&& choose) {
  int64_t* out = p.indices + row * p.k_keep;
  write_range(out + plan.need, plan.eligible, plan.forced);
  const T* x = row_values(p, row);
  const int64_t at = choose(x, out);
  if (at >= 0 || plan.forced == 0)
    return at;
  const int64_t forced_nan = first_nan(x + plan.eligible, plan.forced);
  return forced_nan >= 0 ? plan.eligible + forced_nan : -1;
}

// The `need` largest of x[0, n) (ties to the lower index), written to out ascending; 0 <= need
// <= n. `chunks` > 1 splits the row over that many OpenMP threads (call it outside any parallel
// region). Returns the first NaN's position, or -1 (out is then unspecified).
template <typename T>
int64_t radix_select_row(const T* x, int64_t n, int64_t need, int64_t* out, int chunks,
                         RowScratch<T>& scratch);

}  // namespace rakv::kernels::detail
