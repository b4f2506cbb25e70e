// Dtype dispatch shared by the ops that call float/double CPU kernels.
#pragma once

#include <torch/types.h>

namespace rakv::ops::detail {

// Calls f(float{}) or f(double{}) for `dtype` (already checked to be float32 or float64).
template <typename F>
void dispatch_float_or_double(torch::ScalarType dtype, const F& f) {
  if (dtype == torch::kFloat64) {
    f(double{});
  } else {
    f(float{});
  }
}

}  // namespace rakv::ops::detail
