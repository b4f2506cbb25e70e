// Scans over one importance row for the selection kernels (kv_select_*.cpp): radix-key
// histograms, key compaction and position selection by key range. Values are compared through
// order-preserving unsigned keys, so that the radix select and the emitting scans agree on ties
// and on -0 == +0. float32 rows run AVX2 versions where the CPU has them (chosen at load time);
// float64 rows (the tests' precision) run the scalar ones.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace rakv::kernels::detail {

// The unsigned integer type of a value's radix key.
template <typename T>
using KeyOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

// a < b (as numbers, -0 == +0) iff order_key(a) < order_key(b): flip all bits of negatives,
// the sign bit of the rest. NaNs land above +inf (positive sign) or below -inf (negative sign).
template <typename T>
inline KeyOf<T> order_key(T x) {
  using K = KeyOf<T>;
  constexpr int kSignShift = 8 * sizeof(K) - 1;
  const K bits = std::bit_cast<K>(x + T(0));  // + 0 turns -0 into +0
  return bits ^ ((K(0) - (bits >> kSignShift)) | (K(1) << kSignShift));
}

// The largest key: a positive NaN, so "key < kNoCeiling" excludes nothing of a NaN-free row.
template <typename T>
constexpr KeyOf<T> kNoCeiling = std::numeric_limits<KeyOf<T>>::max();

// Radix digits are at most this wide (the top one of a float: sign, 8 exponent bits and 2
// mantissa bits, so a binade of importance values spreads over 4 buckets).
constexpr int kMaxDigitBits = 11;
constexpr int kMaxBuckets = 1 << kMaxDigitBits;
// compact_row's output needs n + kVectorSlack keys of room: the AVX2 path stores whole vectors.
constexpr int64_t kVectorSlack = 8;

// counts[order_key(x[j]) >> shift] += 1 for j < n; shift leaves at most kMaxDigitBits bits.
void histogram_top_digit(const float* x, int64_t n, int shift, int64_t* counts);
void histogram_top_digit(const double* x, int64_t n, int shift, int64_t* counts);

// Appends to keys, in order, the keys of x[0, n) with key >> match_shift == match; returns how
// many. keys: room for n + kVectorSlack.
int64_t compact_row(const float* x, int64_t n, int match_shift, uint32_t match, uint32_t* keys);
int64_t compact_row(const double* x, int64_t n, int match_shift, uint64_t match, uint64_t* keys);

// Writes to out, ascending, the positions j in [begin, end) with floor < key(x[j]) < ceiling,
// and those with key(x[j]) == floor while fewer than `ties` of them have been seen; nothing when
// floor >= ceiling. Stops after `count` (the exact number when known, else the room in out).
// Returns how many it wrote.
int64_t select_positions(const float* x, int64_t begin, int64_t end, uint32_t floor, int64_t ties,
                         uint32_t ceiling, int64_t* out, int64_t count);
int64_t select_positions(const double* x, int64_t begin, int64_t end, uint64_t floor, int64_t ties,
                         uint64_t ceiling, int64_t* out, int64_t count);

// Whether x[0, n) holds a NaN (vectorised; first_nan then finds where).
bool has_nan(const float* x, int64_t n);
bool has_nan(const double* x, int64_t n);

}  // namespace rakv::kernels::detail
