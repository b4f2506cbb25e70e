// Fused softmax cross-entropy of a language-model head on the GPU: the loss and its gradient
// straight from the half-precision logits, with no float32 copy of the [N, V] logits and no
// stored softmax. The forward reads the logits once (online max and sum per row); the backward
// reads them once more and writes the gradient once.
//
//   forward:  lse_i  = log sum_{j < vocab} exp(x_ij)
//             loss_i = lse_i - x_i,t_i       (0 where t_i == ignore_index; NaN where t_i is
//                                            neither ignore_index nor in [0, vocab))
//   backward: grad_ij = g * (exp(x_ij - lse_i) - [j == t_i])   for j < vocab
//             grad_ij = 0                                      for vocab <= j < columns,
//                                                              and on ignored rows
// with g = *grad_scale, the gradient of the caller's total with respect to every counted row's
// loss (1 / counted rows for a mean). Columns vocab .. columns-1 are padding (an LM head padded
// to a GEMM-friendly width): read by nobody, given a zero gradient.
//
// Shape vocabulary: N rows (tokens), `columns` logits per row of which the first `vocab` count.
#pragma once

#include <cstdint>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda {

struct CrossEntropyParams {
  const void* logits = nullptr;  // [N, columns] of `dtype`; row i at logits + i * row_stride
  int64_t row_stride = 0;        // elements, >= columns
  int64_t rows = 0;              // N >= 0
  int64_t columns = 0;           // >= vocab
  int64_t vocab = 0;             // >= 1
  ElemType dtype = ElemType::kBFloat16;
  const int64_t* targets = nullptr;  // [N] class ids
  int64_t ignore_index = -100;

  float* lse = nullptr;   // [N] float32: written by the forward, read by the backward
  float* loss = nullptr;  // [N] float32: written by the forward

  const float* grad_scale = nullptr;  // device scalar g (backward)
  void* grad_logits = nullptr;        // [N, columns] of `dtype` (backward, written)
  int64_t grad_row_stride = 0;        // elements, >= columns
};
// Rows are read with 16-byte vector loads when the logits (and grad_logits) are 16-byte aligned
// and the row strides and `columns` are multiples of 16 bytes; otherwise element by element.

int cross_entropy_forward(const CrossEntropyParams& params, Stream stream);
int cross_entropy_backward(const CrossEntropyParams& params, Stream stream);

}  // namespace rakv::kernels::cuda
