// Per-feature monotone piecewise-linear splines on the CPU (KVSplice, SPEC §4), framework-free.
//
// Feature d of a row is mapped through the spline that interpolates the points
// (knots[d, j], values[d, j]), j = 0 .. K-1, linearly between knots and extended linearly by the
// first and last segments outside [knots[d, 0], knots[d, K-1]]. With both tables strictly
// increasing along j the map is strictly increasing and its inverse is the same kind of spline
// with the two tables swapped, so one kernel evaluates both directions. The KVSplice
// parameterisation (softplus slopes, normalisation, scale and shift) lives in the op layer: the
// kernel only sees the resulting knot outputs `values`, which is also what its backward
// differentiates.
//
// Shape vocabulary: N rows (tokens x heads), D features (head dim), K knots per feature.
#pragma once

#include <cstdint>

namespace rakv::kernels {

enum class SplineDirection {
  kForward,  // input x, output g(x): segments found among `knots`
  kInverse,  // input y, output g^-1(y): segments found among `values`
};

// Filled by the op (ops/spline.cpp); the kernels trust it: tables finite and strictly increasing
// along K, K >= 2, rows' last dim contiguous, outputs not aliasing inputs.
template <typename scalar_t>
struct SplineParams {
  const scalar_t* knots = nullptr;   // [D, K], contiguous: spline inputs at the knots
  const scalar_t* values = nullptr;  // [D, K], contiguous: spline outputs at the knots
  int64_t features = 0;              // D
  int64_t num_knots = 0;             // K >= 2
  SplineDirection direction = SplineDirection::kForward;

  int64_t rows = 0;                 // N
  const scalar_t* input = nullptr;  // [N, D]: x (forward) or y (inverse)
  int64_t input_row_stride = 0;     // in elements
  scalar_t* output = nullptr;       // [N, D] (spline_apply only, written)
  int64_t output_row_stride = 0;

  // spline_backward only. grad_output: [N, D], the gradient of the loss wrt the output.
  const scalar_t* grad_output = nullptr;
  int64_t grad_output_row_stride = 0;
  scalar_t* grad_input = nullptr;  // [N, D] (written), or null when not needed
  int64_t grad_input_row_stride = 0;
  scalar_t* grad_values = nullptr;  // [D, K], contiguous (written), or null when not needed

  int num_threads = 1;
};

// output = g(input) (kForward) or g^-1(input) (kInverse), row by row. Returns the number of
// non-finite (NaN or +-Inf) inputs seen; their outputs are unspecified.
template <typename scalar_t>
int64_t spline_apply(const SplineParams<scalar_t>& params);

// Backward of spline_apply for the same params: grad_input = grad_output * d output / d input and
// grad_values[d, j] = sum over rows of grad_output * d output / d values[d, j] (knots are
// constants). Rows are reduced in float64 per thread, then in thread order, so the result is
// deterministic for a given thread count. Returns the number of non-finite inputs seen.
template <typename scalar_t>
int64_t spline_backward(const SplineParams<scalar_t>& params);

}  // namespace rakv::kernels
