// Fused softmax cross-entropy on the CPU (definition in include/rakv/kernels/cross_entropy.h).
// Rows are independent: OpenMP over rows, two passes per row (max, then the sum of exp) in the
// forward and one in the backward, all on the caller's logits with no [N, V] temporary.
#include "rakv/kernels/cross_entropy.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace rakv::kernels {
namespace {

// Below this many logits the work is not worth waking a thread team.
constexpr int64_t kMinElementsPerThread = 1 << 15;

int threads_for(int64_t elements, int requested) {
  const int64_t useful = std::max<int64_t>(1, elements / kMinElementsPerThread);
  return static_cast<int>(std::clamp<int64_t>(useful, 1, std::max(1, requested)));
}

bool counted(int64_t target, int64_t vocab) {
  return target >= 0 && target < vocab;
}

}  // namespace

template <typename scalar_t>
void cross_entropy_forward(const CrossEntropyParams<scalar_t>& p) {
#pragma omp parallel for schedule(static) num_threads(threads_for(p.rows* p.vocab, p.num_threads))
  for (int64_t row = 0; row < p.rows; ++row) {
    const scalar_t* x = p.logits + row * p.row_stride;
    double max = -std::numeric_limits<double>::infinity();
    bool nan = false;
    for (int64_t j = 0; j < p.vocab; ++j) {
      nan |= std::isnan(x[j]);
      max = std::max(max, static_cast<double>(x[j]));
    }
    double lse = std::numeric_limits<double>::quiet_NaN();
    if (!nan) {
      // exp in the logits' precision (float exp is several times faster than double's and
      // exact to an ulp), the sum in double.
      const scalar_t shift = std::isinf(max) ? scalar_t(0) : static_cast<scalar_t>(max);
      double sum = 0;
      for (int64_t j = 0; j < p.vocab; ++j)
        sum += std::exp(x[j] - shift);
      lse = static_cast<double>(shift) + std::log(sum);
    }
    const int64_t target = p.targets[row];
    double loss = 0;
    if (target != p.ignore_index) {
      loss = counted(target, p.vocab) ? lse - static_cast<double>(x[target])
                                      : std::numeric_limits<double>::quiet_NaN();
    }
    p.lse[row] = static_cast<scalar_t>(lse);
    p.loss[row] = static_cast<scalar_t>(loss);
  }
}

template <typename scalar_t>
void cross_entropy_backward(const CrossEntropyParams<scalar_t>& p) {
#pragma omp parallel for schedule(static) num_threads(threads_for(p.rows* p.columns, p.num_threads))
  for (int64_t row = 0; row < p.rows; ++row) {
    const scalar_t* x = p.logits + row * p.row_stride;
    scalar_t* grad = p.grad_logits + row * p.grad_row_stride;
    const int64_t target = p.targets[row];
    const bool ignored = target == p.ignore_index;
    // The forward's loss is NaN for a target out of range: so is its gradient.
    const double g = ignored || counted(target, p.vocab) ? static_cast<double>(p.grad_scale)
                                                         : std::numeric_limits<double>::quiet_NaN();
    const int64_t vocab = ignored ? 0 : p.vocab;
    const scalar_t lse = p.lse[row];
    for (int64_t j = 0; j < vocab; ++j) {
      const double softmax = std::exp(x[j] - lse);
      grad[j] = static_cast<scalar_t>(g * (softmax - (j == target ? 1.0 : 0.0)));
    }
    std::fill(grad + vocab, grad + p.columns, scalar_t(0));
  }
}

template void cross_entropy_forward<float>(const CrossEntropyParams<float>&);
template void cross_entropy_forward<double>(const CrossEntropyParams<double>&);
template void cross_entropy_backward<float>(const CrossEntropyParams<float>&);
template void cross_entropy_backward<double>(const CrossEntropyParams<double>&);

}  // namespace rakv::kernels
