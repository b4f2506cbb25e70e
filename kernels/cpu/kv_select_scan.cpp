// Row scans of the selection kernels (declared in kv_select_scan.h): generic scalar versions
// and, for float32 rows, AVX2 versions that GCC's function multiversioning picks at load time.
// The AVX2 scans compute 8 order keys at a time and pack the selected lanes to the front with
// a 256-entry shuffle table (the "left pack"), so selecting positions costs about a cycle per
// element instead of a data-dependent branch or a serial store per element.
#include "kv_select_scan.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "vector_clones.h"

namespace rakv::kernels::detail {
namespace {

// counts[key(x[j]) >> shift] += 1 for j < n (the top digit). Two interleaved tables: runs of
// equal digits (common: neighbouring importance values share an exponent) would otherwise
// serialise on one counter's store-to-load latency.
template <typename T>
void histogram_top_digit_scalar(const T* x, int64_t n, int shift, int64_t* counts) {
  const int buckets = 1 << (8 * static_cast<int>(sizeof(KeyOf<T>)) - shift);
  uint32_t tables[2][kMaxBuckets];
  std::fill_n(tables[0], buckets, 0u);
  std::fill_n(tables[1], buckets, 0u);
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    ++tables[0][order_key(x[j]) >> shift];
    ++tables[1][order_key(x[j + 1]) >> shift];
  }
  if (j < n)
    ++tables[0][order_key(x[j]) >> shift];
  for (int b = 0; b < buckets; ++b)
    counts[b] += tables[0][b] + tables[1][b];
}

// Keys of x[0, n) with key >> match_shift == match, appended to keys in order; returns how many.
template <typename T>
int64_t compact_row_scalar(const T* x, int64_t n, int match_shift, KeyOf<T> match, KeyOf<T>* keys) {
  int64_t kept = 0;
  for (int64_t j = 0; j < n; ++j) {
    const KeyOf<T> key = order_key(x[j]);
    keys[kept] = key;
    kept += (key >> match_shift) == match;
  }
  return kept;
}

template <typename T>
int64_t select_positions_scalar(const T* x, int64_t begin, int64_t end, KeyOf<T> floor,
                                int64_t ties, KeyOf<T> ceiling, int64_t* out, int64_t count) {
  int64_t written = 0, ties_seen = 0;
  for (int64_t j = begin; j < end && written < count; ++j) {
    const KeyOf<T> key = order_key(x[j]);
    const bool tie = key == floor;
    out[written] = j;
    written += ((key > floor) & (key < ceiling)) | (tie & (ties_seen < ties));
    ties_seen += tie;
  }
  return written;
}

// GCC vector types: its auto-vectoriser leaves the scalar form of this reduction alone.
template <typename T>
RAKV_ALWAYS_INLINE bool has_nan_vectorised(const T* x, int64_t n) {
  using V [[gnu::vector_size(32)]] = T;
  constexpr int64_t lanes = sizeof(V) / sizeof(T);
  using Mask = decltype(V{} != V{});  // lanes of all ones where the comparison holds
  Mask unordered = {};
  int64_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    V v;
    std::memcpy(&v, x + j, sizeof(V));
    unordered |= v != v;
  }
  bool any = false;
  for (int64_t l = 0; l < lanes; ++l)
    any |= unordered[l] != 0;
  for (; j < n; ++j)
    any |= x[j] != x[j];
  return any;
}

RAKV_BASELINE_VERSION void histogram_top_digit_f32(const float* x, int64_t n, int shift,
                                                   int64_t* counts) {
  histogram_top_digit_scalar(x, n, shift, counts);
}
RAKV_BASELINE_VERSION int64_t compact_row_f32(const float* x, int64_t n, int match_shift,
                                              uint32_t match, uint32_t* keys) {
  return compact_row_scalar(x, n, match_shift, match, keys);
}
RAKV_BASELINE_VERSION int64_t select_positions_f32(const float* x, int64_t begin, int64_t end,
                                                   uint32_t floor, int64_t ties, uint32_t ceiling,
                                                   int64_t* out, int64_t count) {
  return select_positions_scalar(x, begin, end, floor, ties, ceiling, out, count);
}

#if RAKV_AVX2_VERSIONS
// kLeftPack[m]: the indices of the set bits of the 8-bit mask m, ascending (then zeros), the
// shuffle that packs a vector's selected lanes to the front.
struct LeftPackTable {
  uint8_t lanes[256][8];
  constexpr LeftPackTable() : lanes() {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int l = 0; l < 8; ++l) {
        if (m >> l & 1)
          lanes[m][n++] = static_cast<uint8_t>(l);
      }
    }
  }
};
constexpr LeftPackTable kLeftPack;

RAKV_AVX2_VERSION inline __m128i left_pack_lanes(unsigned mask) {
  return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kLeftPack.lanes[mask]));
}

// order_key of 8 floats, offset by 2^31 so that signed comparisons order them (AVX2 has no
// unsigned compare): bits ^ (negative ? 0x7fffffff : 0).
RAKV_AVX2_VERSION inline __m256i signed_order_keys(const float* x) {
  const __m256i bits = _mm256_castps_si256(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_setzero_ps()));
  return _mm256_xor_si256(bits, _mm256_srli_epi32(_mm256_srai_epi32(bits, 31), 1));
}

RAKV_AVX2_VERSION inline __m256i order_keys(const float* x) {
  return _mm256_xor_si256(signed_order_keys(x), _mm256_set1_epi32(INT32_MIN));
}

RAKV_AVX2_VERSION inline unsigned lane_mask(__m256i lanes) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(lanes)));
}

RAKV_AVX2_VERSION void histogram_top_digit_f32(const float* x, int64_t n, int shift,
                                               int64_t* counts) {
  const int buckets = 1 << (32 - shift);
  uint32_t tables[2][kMaxBuckets];
  std::fill_n(tables[0], buckets, 0u);
  std::fill_n(tables[1], buckets, 0u);
  alignas(32) uint32_t digits[8];
  const __m128i count = _mm_cvtsi32_si128(shift);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(digits),
                       _mm256_srl_epi32(order_keys(x + j), count));
    for (int l = 0; l < 8; l += 2) {
      ++tables[0][digits[l]];
      ++tables[1][digits[l + 1]];
    }
  }
  for (; j < n; ++j)
    ++tables[0][order_key(x[j]) >> shift];
  for (int b = 0; b < buckets; ++b)
    counts[b] += tables[0][b] + tables[1][b];
}

RAKV_AVX2_VERSION int64_t compact_row_f32(const float* x, int64_t n, int match_shift,
                                          uint32_t match, uint32_t* keys) {
  const __m128i count = _mm_cvtsi32_si128(match_shift);
  const __m256i wanted = _mm256_set1_epi32(static_cast<int32_t>(match));
  int64_t kept = 0, j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i key = order_keys(x + j);
    const unsigned mask = lane_mask(_mm256_cmpeq_epi32(_mm256_srl_epi32(key, count), wanted));
    const __m256i packed =
        _mm256_permutevar8x32_epi32(key, _mm256_cvtepu8_epi32(left_pack_lanes(mask)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys + kept), packed);
    kept += __builtin_popcount(mask);
  }
  return kept + compact_row_scalar(x + j, n - j, match_shift, match, keys + kept);
}

RAKV_AVX2_VERSION int64_t select_positions_f32(const float* x, int64_t begin, int64_t end,
                                               uint32_t floor, int64_t ties, uint32_t ceiling,
                                               int64_t* out, int64_t count) {
  const __m256i signed_floor = _mm256_set1_epi32(static_cast<int32_t>(floor ^ 0x80000000u));
  const __m256i signed_ceiling = _mm256_set1_epi32(static_cast<int32_t>(ceiling ^ 0x80000000u));
  int64_t written = 0, ties_seen = 0, j = begin;
  for (; j + 8 <= end && written < count; j += 8) {
    const __m256i key = signed_order_keys(x + j);
    unsigned take = lane_mask(_mm256_and_si256(_mm256_cmpgt_epi32(key, signed_floor),
                                               _mm256_cmpgt_epi32(signed_ceiling, key)));
    unsigned tie = lane_mask(_mm256_cmpeq_epi32(key, signed_floor));
    for (; tie != 0; tie &= tie - 1) {  // ties in position order while the budget lasts
      if (ties_seen++ < ties)
        take |= tie & -tie;
    }
    if (written + 8 <= count) {
      const __m128i lanes = left_pack_lanes(take);
      const __m256i base = _mm256_set1_epi64x(j);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + written),
                          _mm256_add_epi64(_mm256_cvtepu8_epi64(lanes), base));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + written + 4),
                          _mm256_add_epi64(_mm256_cvtepu8_epi64(_mm_srli_si128(lanes, 4)), base));
      written += __builtin_popcount(take);
    } else {
      for (; take != 0 && written < count; take &= take - 1) {
        out[written++] = j + __builtin_ctz(take);
      }
    }
  }
  return written + select_positions_scalar(x, j, end, floor, ties - std::min(ties, ties_seen),
                                           ceiling, out + written, count - written);
}
#endif  // RAKV_AVX2_VERSIONS

}  // namespace

void histogram_top_digit(const float* x, int64_t n, int shift, int64_t* counts) {
  histogram_top_digit_f32(x, n, shift, counts);
}
void histogram_top_digit(const double* x, int64_t n, int shift, int64_t* counts) {
  histogram_top_digit_scalar(x, n, shift, counts);
}

int64_t compact_row(const float* x, int64_t n, int match_shift, uint32_t match, uint32_t* keys) {
  return compact_row_f32(x, n, match_shift, match, keys);
}
int64_t compact_row(const double* x, int64_t n, int match_shift, uint64_t match, uint64_t* keys) {
  return compact_row_scalar(x, n, match_shift, match, keys);
}

int64_t select_positions(const float* x, int64_t begin, int64_t end, uint32_t floor, int64_t ties,
                         uint32_t ceiling, int64_t* out, int64_t count) {
  if (floor >= ceiling)
    return 0;
  return select_positions_f32(x, begin, end, floor, ties, ceiling, out, count);
}
int64_t select_positions(const double* x, int64_t begin, int64_t end, uint64_t floor, int64_t ties,
                         uint64_t ceiling, int64_t* out, int64_t count) {
  if (floor >= ceiling)
    return 0;
  return select_positions_scalar(x, begin, end, floor, ties, ceiling, out, count);
}

RAKV_VECTOR_CLONES bool has_nan(const float* x, int64_t n) {
  return has_nan_vectorised(x, n);
}
RAKV_VECTOR_CLONES bool has_nan(const double* x, int64_t n) {
  return has_nan_vectorised(x, n);
}

}  // namespace rakv::kernels::detail
