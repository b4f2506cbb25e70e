// Attention-mass importance of every key (SPEC §3), streamed: never materialises the T x T
// probabilities. For each query tile the causal scores against all visible keys go to an O(T)
// scratch row, which gives each row's log-sum-exp and then its column contributions
// exp(s - lse); one GEMM-like pass per tile instead of the two a recompute-based scheme needs.
//
// Shape vocabulary: B batch, H heads, T sequence length, D head dim.
#pragma once

#include <cstdint>

namespace rakv::kernels {

// Filled by the op (ops/kv_importance.cpp); the kernel trusts it.
template <typename scalar_t>
struct KvImportanceParams {
  const scalar_t* q = nullptr;     // [B, H, T, D], float32 or float64, last dim contiguous
  const scalar_t* k = nullptr;     // [B, H, T, D], same dtype, last dim contiguous
  scalar_t* importance = nullptr;  // [B, H, T], contiguous (written)

  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;  // in elements
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;  // in elements

  int64_t batch = 0, heads = 0, seqlen = 0, head_dim = 0;
  // Counted queries: the last `window` rows, 1 <= window <= T (T for plain importance).
  int64_t window = 0;
  // Divide key j's mass by the number of counted queries that see it (min(T - j, window))
  // instead of by `window`.
  bool exposure_correction = false;
  double scale = 0;  // multiplies q . k (1 / sqrt(D) for standard attention)
  int num_threads = 1;
};

// importance[b, h, j] = sum over counted queries i >= j of softmax_causal(q k^T * scale)[i, j],
// divided as `exposure_correction` says. Memory: O(T * (D + threads * 24)) scratch.
template <typename scalar_t>
void streaming_column_mass(const KvImportanceParams<scalar_t>& params);

}  // namespace rakv::kernels
