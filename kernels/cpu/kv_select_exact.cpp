// Exact top-k selection of KV positions by radix select, framework-free.
//
// Why: torch::topk returns values and indices in value order through a partial sort; pruning
// needs only the set, in position order. With each value mapped to an order-preserving
// unsigned key (kv_select_scan.h), the threshold search is a most-significant-digit radix
// select: a histogram of the top 11 bits says which bucket holds the need-th largest key; only
// that bucket's keys are kept (compacted) and the search repeats on the next digit, on a set
// that shrinks by ~2^11 per level. It ends with the exact threshold key and how many of its ties
// to take, or earlier when a whole bucket is taken. One ascending scan then emits every
// position above the threshold plus the first ties: sorted by construction, ties to the lower
// index, no sort. Per row: a histogram pass, a compaction pass and the emit pass over the row
// (vectorised for float32), and small passes over the shrinking bucket.
//
// A row is split into chunks processed by separate threads (histograms merged, chunks' output
// offsets from their counts) when there are fewer rows than threads; otherwise threads take
// whole rows.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "kv_select_row.h"
#include "kv_select_scan.h"

namespace rakv::kernels {
namespace detail {
namespace {

// The digit below bit `end` (exclusive): bits [shift, end), as wide as `population` keys need
// (about 8 per bucket, 4 to kMaxDigitBits bits): short rows and small buckets then do not pay
// for clearing and scanning 2^11 counters per level.
struct Digit {
  int shift;
  int bits;
};
Digit digit_below(int end, int64_t population) {
  const int wanted = std::clamp(
      static_cast<int>(std::bit_width(static_cast<uint64_t>(population))) - 3, 4, kMaxDigitBits);
  const int bits = std::min(end, wanted);
  return {end - bits, bits};
}

// counts[(key >> shift) & (2^bits - 1)] += 1 over keys[0, n).
template <typename Key>
void histogram_keys(const Key* keys, int64_t n, Digit digit, int64_t* counts) {
  const Key mask = (Key(1) << digit.bits) - 1;
  for (int64_t i = 0; i < n; ++i)
    ++counts[(keys[i] >> digit.shift) & mask];
}

// Keeps, in place and in order, the keys with key >> match_shift == match; returns how many.
template <typename Key>
int64_t compact_keys(Key* keys, int64_t n, int match_shift, Key match) {
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Key key = keys[i];
    keys[kept] = key;
    kept += (key >> match_shift) == match;
  }
  return kept;
}

// ---------------------------------------------------------------------------------------------
// The select: phases over chunks of one row, serial decisions in between.
// ---------------------------------------------------------------------------------------------

template <typename T>
class RadixSelect {
 public:
  using Key = KeyOf<T>;
  static constexpr int kKeyBits = 8 * sizeof(Key);

  // x[0, n): the row; need in [1, n). Per chunk c: a key buffer buffers[c] (grown here) and
  // the counters histograms[c * kMaxBuckets, (c + 1) * kMaxBuckets).
  RadixSelect(const T* x, int64_t n, int64_t need, int n_chunks, std::vector<Key>* buffers,
              int64_t* histograms)
      : x_(x), remaining_(need), digit_(digit_below(kKeyBits, n)), chunks_(n_chunks) {
    for (int c = 0; c < n_chunks; ++c) {
      Chunk& chunk = chunks_[c];
      chunk.begin = n * c / n_chunks;
      chunk.end = n * (c + 1) / n_chunks;
      chunk.buffer = &buffers[c];
      const auto capacity = static_cast<size_t>(chunk.end - chunk.begin + kVectorSlack);
      if (chunk.buffer->size() < capacity)
        chunk.buffer->resize(capacity);
      chunk.histogram = histograms + c * kMaxBuckets;
    }
  }

  // Per chunk: histogram of the top digit; NaNs (top or bottom bucket) located.
  void histogram_top(int c);
  // Serial: picks the bucket holding the remaining need-th key. Returns true when the
  // threshold is settled (or a NaN was found); then the chunks' output ranges are known.
  bool choose_bucket();
  // Per chunk: keeps the chosen bucket's keys and histograms their next digit.
  void compact(int c);
  // Per chunk: writes the chunk's selected positions at out + its offset, ascending.
  void emit(int c, int64_t* out) const {
    const Chunk& chunk = chunks_[c];
    select_positions(x_, chunk.begin, chunk.end, threshold_, chunk.ties, kNoCeiling<T>,
                     out + chunk.offset, chunk.above + chunk.ties);
  }

  // The first NaN position of the row, or -1.
  int64_t nan_position() const {
    for (const Chunk& chunk : chunks_) {
      if (chunk.nan >= 0)
        return chunk.nan;
    }
    return -1;
  }

 private:
  struct Chunk {
    int64_t begin = 0, end = 0;
    std::vector<Key>* buffer = nullptr;
    int64_t size = 0;              // keys of the current bucket in buffer
    int64_t* histogram = nullptr;  // counts of the current digit
    int64_t above = 0;             // keys known to lie above the threshold
    int64_t ties = 0;              // keys equal to the threshold key to take (at most)
    int64_t offset = 0;            // first output slot
    int64_t nan = -1;
  };

  const T* x_;
  int64_t remaining_;  // still to take from the current bucket
  Digit digit_;        // the digit choose_bucket decides next
  Digit matched_{};    // the digit compact matches on
  Key prefix_ = 0;     // digits chosen so far
  Key threshold_ = 0;
  std::vector<Chunk> chunks_;
};

template <typename T>
void RadixSelect<T>::histogram_top(int c) {
  Chunk& chunk = chunks_[c];
  std::fill_n(chunk.histogram, 1 << digit_.bits, 0);
  histogram_top_digit(x_ + chunk.begin, chunk.end - chunk.begin, digit_.shift, chunk.histogram);
  if (chunk.histogram[0] + chunk.histogram[(1 << digit_.bits) - 1] > 0) {
    const int64_t at = first_nan(x_ + chunk.begin, chunk.end - chunk.begin);
    if (at >= 0)
      chunk.nan = chunk.begin + at;
  }
}

template <typename T>
bool RadixSelect<T>::choose_bucket() {
  if (nan_position() >= 0)
    return true;
  int64_t above = 0;
  int bucket = (1 << digit_.bits) - 1;
  for (;; --bucket) {
    int64_t count = 0;
    for (const Chunk& chunk : chunks_)
      count += chunk.histogram[bucket];
    if (above + count >= remaining_)
      break;
    above += count;
  }
  remaining_ -= above;
  prefix_ |= static_cast<Key>(bucket) << digit_.shift;
  int64_t in_bucket = 0;
  for (Chunk& chunk : chunks_) {
    for (int b = bucket + 1; b < (1 << digit_.bits); ++b)
      chunk.above += chunk.histogram[b];
    in_bucket += chunk.histogram[bucket];
  }
  if (remaining_ < in_bucket && digit_.shift > 0) {
    matched_ = digit_;
    digit_ = digit_below(digit_.shift, in_bucket);
    return false;
  }
  // Settled. Either the bucket is one key (the last digit) whose first `remaining_` ties in
  // position order are taken, or the bucket is taken whole: every key in it is >= its lowest
  // key prefix_, so "above prefix_, or equal with a tie budget of the bucket's count" takes
  // exactly the bucket.
  threshold_ = prefix_;
  const bool whole_bucket = remaining_ == in_bucket;
  int64_t offset = 0;
  for (Chunk& chunk : chunks_) {
    chunk.ties = chunk.histogram[bucket];
    if (!whole_bucket) {
      chunk.ties = std::min(chunk.ties, remaining_);
      remaining_ -= chunk.ties;
    }
    chunk.offset = offset;
    offset += chunk.above + chunk.ties;
  }
  return true;
}

template <typename T>
void RadixSelect<T>::compact(int c) {
  Chunk& chunk = chunks_[c];
  const Key match = prefix_ >> matched_.shift;
  Key* keys = chunk.buffer->data();
  const bool from_row = matched_.shift + matched_.bits == kKeyBits;
  chunk.size =
      from_row ? compact_row(x_ + chunk.begin, chunk.end - chunk.begin, matched_.shift, match, keys)
               : compact_keys(keys, chunk.size, matched_.shift, match);
  std::fill_n(chunk.histogram, 1 << digit_.bits, 0);
  histogram_keys(keys, chunk.size, digit_, chunk.histogram);
}

}  // namespace

template <typename T>
int64_t radix_select_row(const T* x, int64_t n, int64_t need, int64_t* out, int chunks,
                         RowScratch<T>& scratch) {
  if (need == 0 || need == n) {
    const int64_t at = first_nan(x, n);
    if (need == n)
      write_range(out, 0, n);
    return at;
  }
  using Key = KeyOf<T>;
  if (chunks <= 1) {
    scratch.histograms.resize(kMaxBuckets);
    RadixSelect<T> select(x, n, need, 1, &scratch.keys, scratch.histograms.data());
    select.histogram_top(0);
    while (!select.choose_bucket())
      select.compact(0);
    if (select.nan_position() < 0)
      select.emit(0, out);
    return select.nan_position();
  }
  std::vector<std::vector<Key>> buffers(chunks);
  std::vector<int64_t> histograms(static_cast<size_t>(chunks) * kMaxBuckets);
  RadixSelect<T> select(x, n, need, chunks, buffers.data(), histograms.data());
  bool settled = false;
#pragma omp parallel num_threads(chunks)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    for (int c = tid; c < chunks; c += team)
      select.histogram_top(c);
#pragma omp barrier
    for (;;) {
#pragma omp single
      settled = select.choose_bucket();
      if (settled)
        break;
      for (int c = tid; c < chunks; c += team)
        select.compact(c);
#pragma omp barrier
    }
    if (select.nan_position() < 0) {
      for (int c = tid; c < chunks; c += team)
        select.emit(c, out);
    }
  }
  return select.nan_position();
}

}  // namespace detail

template <typename T>
NanPosition radix_select_topk(const KvSelectParams<T>& p) {
  const int64_t rows = p.batch * p.heads;
  const detail::RowPlan plan = detail::plan_row(p.seqlen, p.k_keep, p.recency);
  const auto select_row = [&](int64_t row, detail::RowScratch<T>& scratch, int chunks) {
    return detail::select_row_with_recency(p, plan, row, [&](const T* x, int64_t* out) {
      return detail::radix_select_row(x, plan.eligible, plan.need, out, chunks, scratch);
    });
  };
  // Few long rows: every thread works on each row in turn.
  constexpr int64_t kMinChunk = 16384;
  if (rows < p.num_threads && p.seqlen >= 2 * kMinChunk) {
    const int chunks =
        static_cast<int>(std::min<int64_t>(p.num_threads, plan.eligible / kMinChunk));
    detail::RowScratch<T> scratch;
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t at = select_row(row, scratch, chunks);
      if (at >= 0)
        return {row / p.heads, row % p.heads, at};
    }
    return {};
  }
  return detail::for_each_row(
      p, [&](int64_t row, detail::RowScratch<T>& scratch) { return select_row(row, scratch, 1); });
}

template NanPosition radix_select_topk<float>(const KvSelectParams<float>&);
template NanPosition radix_select_topk<double>(const KvSelectParams<double>&);
template int64_t detail::radix_select_row<float>(const float*, int64_t, int64_t, int64_t*, int,
                                                 detail::RowScratch<float>&);
template int64_t detail::radix_select_row<double>(const double*, int64_t, int64_t, int64_t*, int,
                                                  detail::RowScratch<double>&);

}  // namespace rakv::kernels
