// Threshold-sampling top-k of KV positions (`sampling`), framework-free: the audit's idea of
// estimating the k-th largest importance from a small sample, with the count made exact.
//
// Per row (eligible positions n, need to choose): a stratified uniform sample of s positions
// (one uniform draw in each of s equal strata, so every position is equally likely and long
// rows are covered evenly) gives tau = the k_s-th largest sample value, k_s = round(need s / n),
// and its neighbouring order statistics upper (k_s - 1-th) and lower (k_s + 1-th). One pass
// collects the candidates x >= tau (and, only if they are too few, a second one the band below,
// lower <= x < tau). Then exactly `need`:
// - too many candidates: drop by value (lowest first, ties: higher index first) among those
//   below `upper` (the boundary band), and if the band is too small, drop the rest of the excess
//   from the earliest candidates (recency);
// - too few: add by value (highest first, ties: lower index first) from the band below, and if
//   it is too small, the latest positions below `lower`.
// Value order is exact inside the band, so the result differs from `exact` only where the
// sample misplaced the threshold by more than one order-statistic gap.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "kv_select_row.h"

namespace rakv::kernels {
namespace detail {
namespace {

// Exact order of `exact`: higher value first, ties to the lower position.
template <typename T>
struct MoreImportant {
  const T* x;
  bool operator()(int64_t a, int64_t b) const { return x[a] > x[b] || (x[a] == x[b] && a < b); }
};

// From candidates (ascending, count > need) keeps `need` into out, ascending.
template <typename T>
void drop_excess(const T* x, const std::vector<int64_t>& candidates, int64_t count, int64_t need,
                 T upper, std::vector<int64_t>& band, int64_t* out) {
  const int64_t excess = count - need;
  band.clear();
  for (int64_t i = 0; i < count; ++i) {
    if (x[candidates[i]] < upper)
      band.push_back(candidates[i]);
  }
  int64_t written = 0;
  if (static_cast<int64_t>(band.size()) >= excess) {
    // Drop the `excess` least important of the band.
    const auto first_dropped = band.end() - excess;
    std::nth_element(band.begin(), first_dropped, band.end(), MoreImportant<T>{x});
    std::sort(first_dropped, band.end());
    auto dropped = first_dropped;
    for (int64_t i = 0; i < count; ++i) {
      if (dropped != band.end() && *dropped == candidates[i]) {
        ++dropped;
      } else {
        out[written++] = candidates[i];
      }
    }
  } else {
    // Drop the whole band, then the earliest candidates above it.
    int64_t skip = excess - static_cast<int64_t>(band.size());
    for (int64_t i = 0; i < count; ++i) {
      const int64_t j = candidates[i];
      if (x[j] < upper)
        continue;
      if (skip > 0) {
        --skip;
        continue;
      }
      out[written++] = j;
    }
  }
}

// Adds need - count positions to candidates (ascending, count < need) into out, ascending.
// below: the band lower <= x < tau, ascending, in a buffer of n (reordered and extended here).
template <typename T>
void fill_deficit(const T* x, int64_t n, const std::vector<int64_t>& candidates, int64_t count,
                  int64_t need, std::vector<int64_t>& below, int64_t below_count, T lower,
                  std::vector<int64_t>& merged, int64_t* out) {
  const int64_t deficit = need - count;
  const auto cand_end = candidates.begin() + count;
  if (below_count >= deficit) {
    // Add the `deficit` most important of the band.
    const auto chosen_end = below.begin() + deficit;
    std::nth_element(below.begin(), chosen_end, below.begin() + below_count, MoreImportant<T>{x});
    std::sort(below.begin(), chosen_end);
    std::merge(candidates.begin(), cand_end, below.begin(), chosen_end, out);
    return;
  }
  // Add the whole band, then the latest positions under it (collected after the band).
  merged.resize(count + below_count);
  std::merge(candidates.begin(), cand_end, below.begin(), below.begin() + below_count,
             merged.begin());
  const auto latest = below.begin() + below_count;
  int64_t extra = deficit - below_count;
  const auto latest_end = latest + extra;
  for (int64_t j = n - 1; extra > 0; --j) {
    if (x[j] < lower)
      latest[--extra] = j;
  }
  std::merge(merged.begin(), merged.end(), latest, latest_end, out);
}

template <typename T>
int64_t threshold_sampling_row(const T* x, int64_t n, int64_t need, int64_t sample_size,
                               RowRandom& random, int64_t* out, RowScratch<T>& scratch) {
  if (need == 0 || need == n || sample_size >= n) {
    return radix_select_row(x, n, need, out, 1, scratch);
  }
  if (has_nan(x, n))
    return first_nan(x, n);
  const int64_t s = sample_size;
  std::vector<T>& sample = scratch.values;
  sample.resize(s);
  for (int64_t i = 0; i < s; ++i) {
    const int64_t stratum = n * i / s;
    sample[i] = x[stratum + random.below(n * (i + 1) / s - stratum)];
  }
  const int64_t k_s = std::clamp<int64_t>(
      std::llround(static_cast<double>(need) * static_cast<double>(s) / static_cast<double>(n)), 1,
      s);
  std::nth_element(sample.begin(), sample.begin() + (k_s - 1), sample.end(), std::greater<T>());
  const T tau = sample[k_s - 1];
  constexpr T kInf = std::numeric_limits<T>::infinity();
  const T upper = k_s > 1 ? *std::min_element(sample.begin(), sample.begin() + (k_s - 1)) : kInf;
  const T lower = k_s < s ? *std::max_element(sample.begin() + k_s, sample.end()) : -kInf;

  // Candidates: key >= key(tau), i.e. above it or tied with it without limit.
  constexpr int64_t kAllTies = std::numeric_limits<int64_t>::max();
  std::vector<int64_t>& candidates = scratch.positions_a;
  candidates.resize(n);
  const int64_t count =
      select_positions(x, 0, n, order_key(tau), kAllTies, kNoCeiling<T>, candidates.data(), n);
  if (count == need) {
    std::copy(candidates.begin(), candidates.begin() + count, out);
  } else if (count > need) {
    drop_excess(x, candidates, count, need, upper, scratch.positions_c, out);
  } else {
    // The band below: key(lower) <= key < key(tau).
    std::vector<int64_t>& below = scratch.positions_b;
    below.resize(n);
    const int64_t below_count =
        select_positions(x, 0, n, order_key(lower), kAllTies, order_key(tau), below.data(), n);
    fill_deficit(x, n, candidates, count, need, below, below_count, lower, scratch.positions_c,
                 out);
  }
  return -1;
}

}  // namespace
}  // namespace detail

template <typename T>
NanPosition threshold_sampling_topk(const KvSelectParams<T>& p) {
  const detail::RowPlan plan = detail::plan_row(p.seqlen, p.k_keep, p.recency);
  const int64_t sample_size = std::min(p.sample_size, plan.eligible);
  return detail::for_each_row(p, [&](int64_t row, detail::RowScratch<T>& scratch) {
    return detail::select_row_with_recency(p, plan, row, [&](const T* x, int64_t* out) {
      detail::RowRandom random(p.seed, row);
      return detail::threshold_sampling_row(x, plan.eligible, plan.need, sample_size, random, out,
                                            scratch);
    });
  });
}

template NanPosition threshold_sampling_topk<float>(const KvSelectParams<float>&);
template NanPosition threshold_sampling_topk<double>(const KvSelectParams<double>&);

}  // namespace rakv::kernels
