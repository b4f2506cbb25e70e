// Per-feature monotone piecewise-linear splines on the CPU (KVSplice), framework-free.
//
// Why this shape: a row holds D features with D different splines, so the natural vector axis
// is the feature. The tables are transposed once per call into segment-major arrays
// [K-1][D] (segment start on the input side, start on the output side, slope), and the segment
// of every feature is found branch-free: starting from segment 0, each interior knot k the
// input has reached replaces the running (start, start, slope) triple with segment k's. For
// sorted knots the last replacement is the segment that holds the input (segment 0 below the
// first knot and segment K-2 above the last, which gives the linear extension). Every step is
// a compare and three blends on a 32-byte vector of features (GCC vector types: the
// auto-vectoriser leaves the equivalent scalar selects alone), reading tables that stay in L1;
// the output is out_start + slope * (in - in_start), the exact segment formula (no intercept
// form, which would cancel for inputs far from zero). About 0.7 G elements/s per core in
// float32 on an AVX2 machine, for K = 7.
//
// The backward reduces into a float64 [D, K] table per thread (scattered by segment, which does
// not vectorise and only runs during fitting), summed in thread order at the end.
#include "rakv/kernels/spline.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vector_clones.h"

namespace rakv::kernels {
namespace {

// Below this many elements the work is not worth waking a thread team.
constexpr int64_t kMinElementsPerThread = 1 << 14;

// Segment-major copies of the tables for one direction: entry [j * D + d] is segment j of
// feature d. in_start / out_start are the segment's first knot on the input / output side.
template <typename T>
struct SegmentTables {
  std::vector<T> in_start, out_start, slope;
  int64_t features = 0, segments = 0;
};

template <typename T>
SegmentTables<T> segment_tables(const SplineParams<T>& p) {
  const bool forward = p.direction == SplineDirection::kForward;
  const T* in = forward ? p.knots : p.values;
  const T* out = forward ? p.values : p.knots;
  SegmentTables<T> s;
  s.features = p.features;
  s.segments = p.num_knots - 1;
  const auto size = static_cast<size_t>(s.segments * s.features);
  s.in_start.resize(size);
  s.out_start.resize(size);
  s.slope.resize(size);
  for (int64_t d = 0; d < p.features; ++d) {
    const T* in_row = in + d * p.num_knots;
    const T* out_row = out + d * p.num_knots;
    for (int64_t j = 0; j < s.segments; ++j) {
      const int64_t at = j * s.features + d;
      s.in_start[at] = in_row[j];
      s.out_start[at] = out_row[j];
      // The slope in float64: one rounding instead of two for float32 tables.
      s.slope[at] = static_cast<T>((static_cast<double>(out_row[j + 1]) - out_row[j]) /
                                   (static_cast<double>(in_row[j + 1]) - in_row[j]));
    }
  }
  return s;
}

// 32-byte GCC vectors (one AVX2 register; two SSE2 registers in the baseline clone) and the
// integer vectors their comparisons give.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type [[gnu::vector_size(32)]] = float;
  using mask [[gnu::vector_size(32)]] = int32_t;
};
template <>
struct Vec<double> {
  using type [[gnu::vector_size(32)]] = double;
  using mask [[gnu::vector_size(32)]] = int64_t;
};

// One feature's spline at x; the scalar tail of the vector loop.
template <typename T>
RAKV_ALWAYS_INLINE T apply_one(const SegmentTables<T>& s, int64_t d, T x) {
  int64_t at = d;
  for (int64_t j = 1; j < s.segments; ++j) {
    if (x >= s.in_start[j * s.features + d]) {
      at = j * s.features + d;
    }
  }
  return s.out_start[at] + s.slope[at] * (x - s.in_start[at]);
}

// Rows [row_begin, row_end) of the input through the spline, a vector of features at a time.
// Returns the number of non-finite inputs: x - x is 0 for finite x and NaN for NaN or Inf.
template <typename T>
RAKV_ALWAYS_INLINE int64_t apply_rows_impl(const SegmentTables<T>& s, const SplineParams<T>& p,
                                           int64_t row_begin, int64_t row_end) {
  using V = typename Vec<T>::type;
  using M = typename Vec<T>::mask;
  constexpr int64_t lanes = sizeof(V) / sizeof(T);
  const int64_t n = s.features;
  const int64_t vector_end = n - n % lanes;
  // By reference: a by-value 32-byte vector changes the ABI between the clones (-Wpsabi).
  const auto load = [](V& to, const T* from) { std::memcpy(&to, from, sizeof(V)); };
  M nonfinite_lanes = {};
  int64_t nonfinite = 0;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const T* x = p.input + row * p.input_row_stride;
    T* y = p.output + row * p.output_row_stride;
    for (int64_t d = 0; d < vector_end; d += lanes) {
      V xv, in_start, out_start, slope;
      load(xv, x + d);
      load(in_start, s.in_start.data() + d);
      load(out_start, s.out_start.data() + d);
      load(slope, s.slope.data() + d);
      for (int64_t j = 1; j < s.segments; ++j) {
        const int64_t at = j * n + d;
        V knot_in, knot_out, knot_slope;
        load(knot_in, s.in_start.data() + at);
        load(knot_out, s.out_start.data() + at);
        load(knot_slope, s.slope.data() + at);
        const M reached = xv >= knot_in;
        in_start = reached ? knot_in : in_start;
        out_start = reached ? knot_out : out_start;
        slope = reached ? knot_slope : slope;
      }
      const V yv = out_start + slope * (xv - in_start);
      std::memcpy(y + d, &yv, sizeof(V));
      const V zero_if_finite = xv - xv;
      nonfinite_lanes -= zero_if_finite != zero_if_finite;  // true lanes are -1
    }
    for (int64_t d = vector_end; d < n; ++d) {
      y[d] = apply_one(s, d, x[d]);
      nonfinite += !std::isfinite(x[d]);
    }
  }
  for (int64_t l = 0; l < lanes; ++l) {
    nonfinite += nonfinite_lanes[l];
  }
  return nonfinite;
}

RAKV_VECTOR_CLONES int64_t apply_rows(const SegmentTables<float>& s, const SplineParams<float>& p,
                                      int64_t row_begin, int64_t row_end) {
  return apply_rows_impl(s, p, row_begin, row_end);
}

RAKV_VECTOR_CLONES int64_t apply_rows(const SegmentTables<double>& s, const SplineParams<double>& p,
                                      int64_t row_begin, int64_t row_end) {
  return apply_rows_impl(s, p, row_begin, row_end);
}

// Threads for `rows` rows of D features: one per kMinElementsPerThread elements, at most
// params.num_threads.
int team_size(int num_threads, int64_t rows, int64_t features) {
  const int64_t by_work = std::max<int64_t>(1, rows * features / kMinElementsPerThread);
  return static_cast<int>(std::clamp<int64_t>(by_work, 1, std::max(num_threads, 1)));
}

// Runs rows_fn(thread, row_begin, row_end) on `threads` threads, each on one contiguous block
// of rows, and returns the sum of what they return (their non-finite input counts).
template <typename RowsFn>
int64_t parallel_over_rows(int threads, int64_t rows, const RowsFn& rows_fn) {
  int64_t nonfinite = 0;
#pragma omp parallel num_threads(threads) reduction(+ : nonfinite)
  {
    const int64_t team = omp_get_num_threads();
    const int64_t tid = omp_get_thread_num();
    nonfinite += rows_fn(tid, rows * tid / team, rows * (tid + 1) / team);
  }
  return nonfinite;
}

// Backward of rows [row_begin, row_end) into grad_values (float64 [D, K], accumulated).
template <typename T>
int64_t backward_rows(const SplineParams<T>& p, int64_t row_begin, int64_t row_end,
                      double* grad_values) {
  const bool forward = p.direction == SplineDirection::kForward;
  const T* in_table = forward ? p.knots : p.values;
  const T* out_table = forward ? p.values : p.knots;
  const int64_t k = p.num_knots;
  int64_t nonfinite = 0;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const T* x = p.input + row * p.input_row_stride;
    const T* g = p.grad_output + row * p.grad_output_row_stride;
    for (int64_t d = 0; d < p.features; ++d) {
      const T* in_row = in_table + d * k;
      const T* out_row = out_table + d * k;
      const double xd = x[d];
      nonfinite += !std::isfinite(xd);
      int64_t j = 0;
      for (int64_t i = 1; i + 1 < k; ++i) {
        j += xd >= in_row[i];
      }
      const double in_width = static_cast<double>(in_row[j + 1]) - in_row[j];
      const double out_width = static_cast<double>(out_row[j + 1]) - out_row[j];
      const double slope = out_width / in_width;
      // u: the input's position in its segment (outside [0, 1] on the extended end segments).
      const double u = (xd - in_row[j]) / in_width;
      const double grad_in = g[d] * slope;
      if (p.grad_input != nullptr) {
        p.grad_input[row * p.grad_input_row_stride + d] = static_cast<T>(grad_in);
      }
      if (grad_values == nullptr) {
        continue;
      }
      // Forward: out = (1 - u) v_j + u v_{j+1}, so d out / d v = (1 - u, u). Inverse: the
      // values are the knots of the input side; by the implicit function theorem on
      // g(out) = in, d out / d v = -(1 - u, u) / g'(out) = -(1 - u, u) * slope.
      const double weight = forward ? g[d] : -grad_in;
      grad_values[d * k + j] += weight * (1 - u);
      grad_values[d * k + j + 1] += weight * u;
    }
  }
  return nonfinite;
}

}  // namespace

template <typename T>
int64_t spline_apply(const SplineParams<T>& p) {
  if (p.rows == 0 || p.features == 0) {
    return 0;
  }
  const SegmentTables<T> tables = segment_tables(p);
  return parallel_over_rows(
      team_size(p.num_threads, p.rows, p.features), p.rows,
      [&](int64_t, int64_t begin, int64_t end) { return apply_rows(tables, p, begin, end); });
}

template <typename T>
int64_t spline_backward(const SplineParams<T>& p) {
  const int64_t table_size = p.features * p.num_knots;
  const int threads = team_size(p.num_threads, p.rows, p.features);
  const bool want_values = p.grad_values != nullptr;
  std::vector<double> partial(want_values ? static_cast<size_t>(threads * table_size) : 0, 0.0);
  const int64_t nonfinite =
      parallel_over_rows(threads, p.rows, [&](int64_t tid, int64_t begin, int64_t end) {
        return backward_rows(p, begin, end,
                             want_values ? partial.data() + tid * table_size : nullptr);
      });
  if (want_values) {
    for (int64_t i = 0; i < table_size; ++i) {
      double sum = 0;
      for (int64_t t = 0; t < threads; ++t) {
        sum += partial[t * table_size + i];
      }
      p.grad_values[i] = static_cast<T>(sum);
    }
  }
  return nonfinite;
}

template int64_t spline_apply<float>(const SplineParams<float>&);
template int64_t spline_apply<double>(const SplineParams<double>&);
template int64_t spline_backward<float>(const SplineParams<float>&);
template int64_t spline_backward<double>(const SplineParams<double>&);

}  // namespace rakv::kernels
