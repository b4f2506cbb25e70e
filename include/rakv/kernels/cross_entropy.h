// Fused softmax cross-entropy of a language-model head on the CPU, framework-free: per-row
// log-sum-exp and loss, and the gradient softmax - one_hot, without storing the softmax.
//
//   forward:  lse_i  = log sum_{j < vocab} exp(x_ij)
//             loss_i = lse_i - x_i,t_i      (0 where t_i == ignore_index, NaN where t_i is
//                                           neither ignore_index nor in [0, vocab))
//   backward: grad_ij = g * (exp(x_ij - lse_i) - [j == t_i]) for j < vocab; 0 for the padding
//             columns vocab <= j < columns and on ignored rows
// with g = grad_scale (1 / counted rows for a mean). The CUDA kernels
// (include/rakv/kernels/cuda/cross_entropy.h) compute the same quantities.
//
// Shape vocabulary: N rows (tokens), `columns` logits per row of which the first `vocab` count.
#pragma once

#include <cstdint>

namespace rakv::kernels {

// Filled by the op (ops/cross_entropy.cpp); the kernels trust it.
template <typename scalar_t>
struct CrossEntropyParams {
  const scalar_t* logits = nullptr;          // [N, columns], row i at logits + i * row_stride
  int64_t row_stride = 0;                    // elements, >= columns
  int64_t rows = 0, columns = 0, vocab = 0;  // 1 <= vocab <= columns
  const int64_t* targets = nullptr;          // [N]
  int64_t ignore_index = -100;

  scalar_t* lse = nullptr;   // [N]: written by the forward, read by the backward
  scalar_t* loss = nullptr;  // [N]: written by the forward

  scalar_t grad_scale = 0;          // g (backward)
  scalar_t* grad_logits = nullptr;  // [N, columns] (backward, written)
  int64_t grad_row_stride = 0;      // elements, >= columns
  int num_threads = 1;
};

// float and double; exponentials in scalar_t, row sums in double.
template <typename scalar_t>
void cross_entropy_forward(const CrossEntropyParams<scalar_t>& params);
template <typename scalar_t>
void cross_entropy_backward(const CrossEntropyParams<scalar_t>& params);

}  // namespace rakv::kernels
