// The audit document's sampling "top-k" (`audit_sampling`), reproduced as written so that its
// table can be re-measured; never used by a model. Its code:
//   sample_idx = torch.randint(0, T, (B, H, sample_size))          # with replacement
//   k_sample = max(1, int(k_keep * (sample_size / T)))
//   _, local_idx = torch.topk(gather(importance, sample_idx), k_sample)
//   idx = gather(sample_idx, local_idx)
// returns k_sample positions, not k_keep (124 of 6225 at T = 16384 with a 2% sample): the
// defect this kernel keeps. Output rows are sorted ascending; duplicates stay; no recency.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kv_select_row.h"

namespace rakv::kernels {

int64_t audit_sample_count(int64_t seqlen, int64_t k_keep, int64_t sample_size) {
  const double fraction = static_cast<double>(sample_size) / static_cast<double>(seqlen);
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(k_keep) * fraction));
}

template <typename T>
NanPosition audit_sampling_topk(const KvSelectParams<T>& p) {
  const int64_t s = p.sample_size;
  const int64_t k_sample = audit_sample_count(p.seqlen, p.k_keep, s);
  return detail::for_each_row(p, [&](int64_t row, detail::RowScratch<T>& scratch) -> int64_t {
    const T* x = detail::row_values(p, row);
    detail::RowRandom random(p.seed, row);
    std::vector<int64_t>& drawn = scratch.positions_a;
    std::vector<int64_t>& order = scratch.positions_b;
    std::vector<T>& values = scratch.values;
    drawn.resize(s);
    values.resize(s);
    for (int64_t i = 0; i < s; ++i)
      drawn[i] = random.below(p.seqlen);
    for (int64_t i = 0; i < s; ++i)
      values[i] = x[drawn[i]];  // independent loads overlap
    if (detail::has_nan(values.data(), s)) {
      int64_t first = p.seqlen;
      for (int64_t i = 0; i < s; ++i) {
        if (std::isnan(values[i]))
          first = std::min(first, drawn[i]);
      }
      return first;
    }
    // Top k_sample of the sampled values (ties to the earlier draw), mapped back, sorted.
    order.resize(s);
    std::iota(order.begin(), order.end(), int64_t{0});
    std::nth_element(order.begin(), order.begin() + (k_sample - 1), order.end(),
                     [&](int64_t a, int64_t b) {
                       return values[a] > values[b] || (values[a] == values[b] && a < b);
                     });
    int64_t* out = p.indices + row * k_sample;
    for (int64_t i = 0; i < k_sample; ++i)
      out[i] = drawn[order[i]];
    std::sort(out, out + k_sample);
    return -1;
  });
}

template NanPosition audit_sampling_topk<float>(const KvSelectParams<float>&);
template NanPosition audit_sampling_topk<double>(const KvSelectParams<double>&);

}  // namespace rakv::kernels
