// Streaming column mass (attention-mass importance of every key) on the CPU, framework-free.
//
// Why this shape: the importance of key j is sum_i P[i, j] over the counted queries, and P's
// normalisation is per row, so a row's log-sum-exp must be known before it can contribute to
// any column. Processing one tile of kQueryTile queries at a time, the tile's causal scores
// against every visible key go to a scratch buffer of kQueryTile x T values (O(T), never T x T);
// from it each row's max and sum of exp (the online-safe log-sum-exp: exp(s - max)) and then
// the column contributions exp(s - max) / sum are read back while still in cache. The score
// product, which dominates (D multiply-adds per score against one exp), runs once per score,
// not twice as in a two-pass recompute.
//
// Layout: keys are packed once per (b, h) into panels of kNr keys, [panel][D][kNr], so the
// micro-kernel streams kNr contiguous values per head dim; a query tile is packed (and scaled)
// into groups of kMr rows, [group][D][kMr]. Parallelism: OpenMP over the query tiles of one
// (b, h), largest (latest, most keys) first; every thread sums its columns into its own
// float64 row, reduced at the end of the head, so there are no races and the result does not
// depend on the schedule beyond float64 rounding.
#include "rakv/kernels/kv_importance.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "vector_clones.h"

namespace rakv::kernels {
namespace {

constexpr int64_t kMr = 6;               // query rows per micro-tile
constexpr int64_t kQueryTile = 4 * kMr;  // query rows per work item
constexpr int64_t kColumnVectors = 12;   // accumulator registers of the column pass

template <typename T>
constexpr int64_t kNr = 64 / static_cast<int64_t>(sizeof(T));  // keys per panel (2 AVX2 vectors)

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

using Float8 [[gnu::vector_size(32)]] = float;
using Int8 [[gnu::vector_size(32)]] = int32_t;
constexpr int64_t kFloatLanes = 8;

// Vector helpers take and return vectors by reference: a by-value 32-byte vector would change
// the ABI between the baseline and the AVX2 clone (-Wpsabi), though they always inline.
RAKV_ALWAYS_INLINE void load(Float8& x, const float* p) {
  std::memcpy(&x, p, sizeof(x));
}
RAKV_ALWAYS_INLINE void store(float* p, const Float8& x) {
  std::memcpy(p, &x, sizeof(x));
}

// Lanes at and after `valid` (may be <= 0) replaced by `fill`.
RAKV_ALWAYS_INLINE void keep_first_lanes(Float8& x, int64_t valid, float fill) {
  const Int8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const Int8 keep = lane < static_cast<int32_t>(std::clamp<int64_t>(valid, 0, kFloatLanes));
  x = keep ? x : Float8{} + fill;
}

// exp(x) lane-wise for x <= 0 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, 2^n
// from the exponent bits): no libm call, so it vectorises. Relative error ~2 ulp. Inputs are
// clamped to [-87, 0]; below -87 the result (< 1.7e-38) is negligible against a row sum >= 1.
RAKV_ALWAYS_INLINE void exp_nonpositive(Float8& x) {
  x = x < -87.0f ? Float8{} - 87.0f : x;
  x = x > 0.0f ? Float8{} : x;
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const Float8 n = (x * 1.44269504088896341f + kShifter) - kShifter;
  Float8 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Float8 p = Float8{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Int8 exponent_bits = (__builtin_convertvector(n, Int8) + 127) << 23;
  Float8 two_to_n;
  std::memcpy(&two_to_n, &exponent_bits, sizeof(two_to_n));
  x = p * two_to_n;
}

// scores[r, c] = sum_d q_group[d, r] * key_panel[d, c] for r < kMr, c < kNr: a kMr x kNr register
// tile (12 of the 16 AVX2 registers as accumulators). q_group: [D][kMr] (pre-scaled),
// key_panel: [D][kNr], scores: row stride ld. GCC vector types, because its auto-vectoriser
// spills the equivalent scalar loops.
template <typename T>
RAKV_ALWAYS_INLINE void score_micro_tile(const T* __restrict q_group, const T* __restrict key_panel,
                                         int64_t head_dim, T* __restrict scores, int64_t ld) {
  using V [[gnu::vector_size(32)]] = T;
  constexpr int64_t lanes = 32 / sizeof(T);
  static_assert(kNr<T> == 2 * lanes);
  // Zeroed lane by lane: `= {}` makes GCC clear the array through memory (rep stos) first.
  V acc[kMr][2];
  for (int64_t r = 0; r < kMr; ++r)
    acc[r][0] = acc[r][1] = V{};
  for (int64_t d = 0; d < head_dim; ++d) {
    V k0, k1;
    std::memcpy(&k0, key_panel + d * kNr<T>, sizeof(V));
    std::memcpy(&k1, key_panel + d * kNr<T> + lanes, sizeof(V));
    for (int64_t r = 0; r < kMr; ++r) {
      const T qv = q_group[d * kMr + r];
      acc[r][0] += qv * k0;
      acc[r][1] += qv * k1;
    }
  }
  for (int64_t r = 0; r < kMr; ++r) {
    std::memcpy(scores + r * ld, &acc[r][0], sizeof(V));
    std::memcpy(scores + r * ld + lanes, &acc[r][1], sizeof(V));
  }
}

// Row r of the tile (query i0 + r) sees keys 0 .. visible - 1. Turns its scores into
// exp(s - max) in place, zeroes the invisible tail up to n_keys (rounded up to whole vectors,
// which the buffer's row stride allows), and returns 1 / sum: the row's softmax weights are
// row[j] / sum, with log-sum-exp = max + log(sum) never formed.
RAKV_ALWAYS_INLINE float normalise_row(float* __restrict row, int64_t visible, int64_t n_keys) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  Float8 max8 = Float8{} - kInf;
  for (int64_t j = 0; j < visible; j += kFloatLanes) {
    Float8 x;
    load(x, row + j);
    if (j + kFloatLanes > visible)
      keep_first_lanes(x, visible - j, -kInf);
    max8 = x > max8 ? x : max8;
  }
  float row_max = -kInf;
  for (int64_t l = 0; l < kFloatLanes; ++l)
    row_max = std::max(row_max, max8[l]);
  Float8 sum8 = {};
  for (int64_t j = 0; j < n_keys; j += kFloatLanes) {
    Float8 x;
    load(x, row + j);
    x -= row_max;
    exp_nonpositive(x);
    if (j + kFloatLanes > visible)
      keep_first_lanes(x, visible - j, 0.0f);
    store(row + j, x);
    sum8 += x;
  }
  float sum = 0;
  for (int64_t l = 0; l < kFloatLanes; ++l)
    sum += sum8[l];
  return 1.0f / sum;
}

// float64 (the tests' precision): accuracy first, scalar libm exp.
RAKV_ALWAYS_INLINE double normalise_row(double* __restrict row, int64_t visible, int64_t n_keys) {
  double row_max = row[0];
  for (int64_t j = 1; j < visible; ++j)
    row_max = std::max(row_max, row[j]);
  double sum = 0;
  for (int64_t j = 0; j < visible; ++j) {
    row[j] = std::exp(row[j] - row_max);
    sum += row[j];
  }
  std::fill(row + visible, row + n_keys, 0.0);
  return 1.0 / sum;
}

// column[j] += sum_r weight[r] * rows[r, j] for j < n_keys, in blocks of kColumnVectors
// vectors whose accumulators stay in registers; each row is read contiguously. rows: [n_rows]
// with stride ld, readable up to n_keys rounded up to a whole vector.
template <typename T>
RAKV_ALWAYS_INLINE void accumulate_columns(const T* __restrict rows, int64_t ld, int64_t n_rows,
                                           const T* __restrict weight, int64_t n_keys,
                                           double* __restrict column) {
  using V [[gnu::vector_size(32)]] = T;
  constexpr int64_t lanes = sizeof(V) / sizeof(T);
  constexpr int64_t block = kColumnVectors * lanes;
  int64_t j0 = 0;
  for (; j0 + block <= n_keys; j0 += block) {
    V acc[kColumnVectors];  // zeroed lane by lane, as in score_micro_tile
    for (int64_t v = 0; v < kColumnVectors; ++v)
      acc[v] = V{};
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t v = 0; v < kColumnVectors; ++v) {
        V x;
        std::memcpy(&x, rows + r * ld + j0 + v * lanes, sizeof(V));
        acc[v] += x * weight[r];
      }
    }
    for (int64_t v = 0; v < kColumnVectors; ++v) {
      for (int64_t l = 0; l < lanes; ++l)
        column[j0 + v * lanes + l] += acc[v][l];
    }
  }
  for (; j0 < n_keys; j0 += lanes) {
    V acc = {};
    for (int64_t r = 0; r < n_rows; ++r) {
      V x;
      std::memcpy(&x, rows + r * ld + j0, sizeof(V));
      acc += x * weight[r];
    }
    for (int64_t l = 0; l < std::min(lanes, n_keys - j0); ++l)
      column[j0 + l] += acc[l];
  }
}

struct TileShape {
  int64_t first_row;  // absolute position i0 of the tile's first query
  int64_t rows;       // valid queries in the tile, 1 .. kQueryTile
  int64_t head_dim;
  int64_t ld;  // row stride of the score buffer
};

// One query tile: scores against keys 0 .. i0 + rows - 1, row softmax, and the tile's column
// mass added to `column` (float64, [T]).
template <typename T>
RAKV_ALWAYS_INLINE void column_mass_of_tile_impl(const TileShape& s, const T* __restrict q_tile,
                                                 const T* __restrict key_panels,
                                                 T* __restrict scores, double* __restrict column) {
  constexpr int64_t nr = kNr<T>;
  const int64_t n_keys = s.first_row + s.rows;
  const int64_t n_groups = ceil_div(s.rows, kMr);
  for (int64_t p = 0; p < ceil_div(n_keys, nr); ++p) {
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t last_row = s.first_row + std::min((g + 1) * kMr, s.rows) - 1;
      if (p * nr > last_row)
        continue;  // the whole panel lies in the group's future
      score_micro_tile(q_tile + g * s.head_dim * kMr, key_panels + p * s.head_dim * nr, s.head_dim,
                       scores + g * kMr * s.ld + p * nr, s.ld);
    }
  }
  T weight[kQueryTile];
  for (int64_t r = 0; r < s.rows; ++r) {
    weight[r] = normalise_row(scores + r * s.ld, s.first_row + r + 1, n_keys);
  }
  accumulate_columns(scores, s.ld, s.rows, weight, n_keys, column);
}

RAKV_VECTOR_CLONES void column_mass_of_tile(const TileShape& s, const float* q_tile,
                                            const float* key_panels, float* scores,
                                            double* column) {
  column_mass_of_tile_impl(s, q_tile, key_panels, scores, column);
}

RAKV_VECTOR_CLONES void column_mass_of_tile(const TileShape& s, const double* q_tile,
                                            const double* key_panels, double* scores,
                                            double* column) {
  column_mass_of_tile_impl(s, q_tile, key_panels, scores, column);
}

// Keys [T, D] (row stride k_row_stride) -> panels [ceil(T / kNr)][D][kNr], zero-padded.
template <typename T>
void pack_key_panel(const T* k, int64_t row_stride, int64_t seqlen, int64_t head_dim, int64_t panel,
                    T* panels) {
  constexpr int64_t nr = kNr<T>;
  T* out = panels + panel * head_dim * nr;
  for (int64_t c = 0; c < nr; ++c) {
    const int64_t j = panel * nr + c;
    for (int64_t d = 0; d < head_dim; ++d) {
      out[d * nr + c] = j < seqlen ? k[j * row_stride + d] : T(0);
    }
  }
}

// Queries i0 .. i0 + rows - 1 -> [kQueryTile / kMr][D][kMr], multiplied by scale, zero-padded.
template <typename T>
void pack_query_tile(const T* q, int64_t row_stride, const TileShape& s, T scale, T* tile) {
  for (int64_t r = 0; r < kQueryTile; ++r) {
    const int64_t g = r / kMr, lane = r % kMr;
    T* out = tile + g * s.head_dim * kMr + lane;
    const T* in = q + (s.first_row + r) * row_stride;
    for (int64_t d = 0; d < s.head_dim; ++d)
      out[d * kMr] = r < s.rows ? in[d] * scale : T(0);
  }
}

}  // namespace

template <typename T>
void streaming_column_mass(const KvImportanceParams<T>& p) {
  const int64_t seqlen = p.seqlen, head_dim = p.head_dim, window = p.window;
  if (p.batch * p.heads * seqlen == 0)
    return;
  constexpr int64_t nr = kNr<T>;
  const int64_t n_panels = ceil_div(seqlen, nr);
  const int64_t ld = n_panels * nr;
  const int64_t first_query = seqlen - window;
  const int64_t n_tiles = ceil_div(window, kQueryTile);
  // A thread per tile at most, and enough work per thread to pay for waking it (each tile's
  // scores cost up to T D multiply-adds per query).
  constexpr int64_t kMinMultiplyAddsPerThread = int64_t{1} << 22;
  const int64_t work = p.batch * p.heads * window * seqlen * head_dim;
  const int threads = static_cast<int>(std::clamp<int64_t>(
      p.num_threads, 1, std::min(n_tiles, std::max<int64_t>(work / kMinMultiplyAddsPerThread, 1))));
  const T scale = static_cast<T>(p.scale);

  std::vector<T> key_panels(n_panels * head_dim * nr);
  std::vector<double> columns(static_cast<size_t>(threads) * seqlen);

#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    std::vector<T> q_tile(kQueryTile * head_dim);
    std::vector<T> scores(kQueryTile * ld);
    double* column = columns.data() + tid * seqlen;
    for (int64_t bh = 0; bh < p.batch * p.heads; ++bh) {
      const int64_t b = bh / p.heads, h = bh % p.heads;
      const T* q = p.q + b * p.q_batch_stride + h * p.q_head_stride;
      const T* k = p.k + b * p.k_batch_stride + h * p.k_head_stride;
      T* out = p.importance + bh * seqlen;

#pragma omp for schedule(static)
      for (int64_t panel = 0; panel < n_panels; ++panel) {
        pack_key_panel(k, p.k_row_stride, seqlen, head_dim, panel, key_panels.data());
      }
      std::fill(column, column + seqlen, 0.0);

      // Latest tiles first: they see the most keys (dynamic scheduling balances the triangle).
#pragma omp for schedule(dynamic, 1)
      for (int64_t u = 0; u < n_tiles; ++u) {
        const int64_t i0 = first_query + (n_tiles - 1 - u) * kQueryTile;
        const TileShape shape{i0, std::min(kQueryTile, seqlen - i0), head_dim, ld};
        pack_query_tile(q, p.q_row_stride, shape, scale, q_tile.data());
        column_mass_of_tile(shape, q_tile.data(), key_panels.data(), scores.data(), column);
      }

#pragma omp for schedule(static)
      for (int64_t j = 0; j < seqlen; ++j) {
        double mass = 0;
        for (int t = 0; t < threads; ++t)
          mass += columns[t * seqlen + j];
        const int64_t seen_by = p.exposure_correction ? std::min(seqlen - j, window) : window;
        out[j] = seen_by > 0 ? static_cast<T>(mass / static_cast<double>(seen_by)) : T(0);
      }
    }
  }
}

template void streaming_column_mass<float>(const KvImportanceParams<float>&);
template void streaming_column_mass<double>(const KvImportanceParams<double>&);

}  // namespace rakv::kernels
