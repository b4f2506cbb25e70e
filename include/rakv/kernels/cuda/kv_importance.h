// Streaming attention-mass importance of every key on the GPU (SPEC §3), FlashAttention-style:
// never materialises the T x T probabilities (memory O(B H T)).
//
//   pass 1 (row pass):    lse_i = log2 sum_{j <= i} 2^(s_ij * log2 e)   for every counted query i
//   pass 2 (column pass): mass_j = sum over counted queries i >= j of exp(s_ij - lse_i)
//   importance_j = mass_j / denom_j
// with s_ij = scale * q_i . k_j, the causal mask j <= i, counted queries i >= T - window
// (window <= 0 or >= T: all T queries, SnapKV-style otherwise), and denom_j = the number of
// counted queries that see key j (exposure_correction: T - max(j, T - window)) or the number of
// counted queries (T or window). fp16/bf16 inputs run on the tensor cores (mma.sync m16n8k16,
// fp32 accumulation); fp32 inputs run a plain reference kernel (for tests, O(T^2 D) per head).
//
// Shape vocabulary: B batch, H heads, T sequence length, D head dim.
#pragma once

#include <cstdint>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda {

struct ColumnMassParams {
  const void* q = nullptr;  // [B, H, T, D] of `dtype`; element (b,h,t,d) at
                            // q + b*q_batch_stride + h*q_head_stride + t*q_row_stride + d
  const void* k = nullptr;  // [B, H, T, D] of `dtype`, strides below
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;  // elements
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;  // elements
  float* importance = nullptr;  // [B, H, T] fp32 contiguous, written
  float* lse = nullptr;         // [B, H, T] fp32 contiguous scratch (row log-sum-exp, base 2)
  int64_t B = 0, H = 0, T = 0;
  int32_t D = 0;                // 64 or 128
  ElemType dtype = ElemType::kFloat16;
  float scale = 0.f;            // multiplies q . k (1/sqrt(D) for standard attention)
  int64_t window = 0;           // <= 0: every query counts; else the last min(window, T)
  bool exposure_correction = false;
  int32_t kernel_variant = 0;   // 0 (use this); 1, 2: earlier tile shapes, fp16 only (benchmarks)
};
// Alignment the launcher checks: fp16/bf16 q and k 16-byte aligned with row strides a multiple
// of 8 elements (the tiles are copied with 16-byte cp.async); fp32 needs 4-byte alignment only.

int streaming_column_mass(const ColumnMassParams& params, Stream stream);

}  // namespace rakv::kernels::cuda
