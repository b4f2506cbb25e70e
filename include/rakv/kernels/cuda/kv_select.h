// Batched top-k selection of KV-cache positions on the GPU (SPEC §3, "Top-k selection methods").
//
// Every row of an importance matrix [rows = B*H, T] keeps k_keep positions: when T > recency the
// last r = min(recency, k_keep) positions always, and the other need = k_keep - r slots go to the
// eligible positions [0, E), E = T - r (when T <= recency, r = 0 and E = T). The output row lists
// the kept positions in ascending order, so the recency block ends it.
//
//  - kv_select_exact: the need most important eligible positions, ties broken by lower index.
//  - kv_select_sampling: the corrected sampling estimate (see SamplingSelectParams); exactly
//    `need` distinct eligible positions, deterministic for a seed.
//
// NaN: a row holding a NaN gets kRowStatusNaN in row_status (the op raises); its output is still
// k_keep in-range positions (NaN ranks above +inf), never out-of-bounds writes.
//
// Shape vocabulary: B batch, H heads, T sequence length; rows = B * H.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda {

// Bits of row_status[row]. Only kRowStatusNaN is an error.
constexpr int32_t kRowStatusNaN = 1;       // the row holds a NaN
constexpr int32_t kRowStatusFallback = 2;  // informational: the fast bracket missed and the
                                           // row ran the slow exact pass (still correct)

// Which implementation kv_select_exact runs (tests and benchmarks force one; ops use kAuto).
enum class SelectPath : int32_t {
  kAuto = 0,          // single block per row when E <= 32768 and the row fits, else multi-block
  kSingleBlock = 1,   // one block per row, the row held in shared memory (E <= 49152)
  kMultiBlock = 2,    // sample bracket + two passes over the row, several blocks per row
  kMultiBlockFallback = 3,  // kMultiBlock with the bracket disabled (tests the slow exact pass)
};

// What both selection methods read and write.
struct SelectionParams {
  const float* importance = nullptr;  // [rows, T] fp32; row r starts at importance + r*row_stride,
                                      // its T values contiguous
  int64_t row_stride = 0;             // elements between rows (>= T)
  int64_t rows = 0;                   // B * H
  int64_t T = 0;                      // 1 <= T <= 65535 * 8192 (536862720)
  int64_t k_keep = 0;                 // 0 <= k_keep <= T
  int64_t recency = 0;                // >= 0 (64 in the spec)
  int64_t* out = nullptr;             // [rows, k_keep] int64, ascending positions per row
  int64_t out_row_stride = 0;         // elements between output rows (>= k_keep)
  int32_t* row_status = nullptr;      // [rows] int32, written (kRowStatus* bits)
  void* workspace = nullptr;          // kv_select_workspace_bytes(rows, T) bytes, 256-byte
                                      // aligned, any contents (the launch initialises it)
};

struct ExactSelectParams : SelectionParams {
  SelectPath path = SelectPath::kAuto;
};

// The corrected sampling selection (SPEC §3 `sampling`), per row:
//  1. n_s = min(E, max(min_samples, floor(E * sample_fraction))) stratified-uniform sample
//     positions: sample j lies in stratum [j*E/n_s, (j+1)*E/n_s), at sampling_position() below.
//  2. k_s = clamp(round(need * n_s / E), 1, n_s); tau = the k_s-th largest sample value,
//     upper = the (k_s-1)-th largest (none when k_s = 1), lower = the (k_s+1)-th (none when
//     k_s = n_s). Candidates: values >= tau; c = their count.
//  3. c == need: the candidates. c > need (excess d): drop the d smallest candidates below
//     `upper` in exact value order (ties: the higher index goes first); if fewer than d lie below
//     `upper`, drop them all and then the lowest-index remaining candidates. c < need (deficit
//     a): add the a largest non-candidates at or above `lower` (ties: lower index first); if
//     fewer than a lie there, add them all and then the highest-index remaining positions.
// Values are compared as float32 (-0 == +0). When the band between lower and upper overflows
// the workspace (extreme ties) the row falls back to the exact selection (kRowStatusFallback).
struct SamplingSelectParams : SelectionParams {
  double sample_fraction = 0.02;  // (0, 1]
  int64_t min_samples = 64;       // >= 1; the sample size is capped at E and at 49152
  uint64_t seed = 0;
};

// Bytes of scratch memory a selection of `rows` rows of length T needs (both methods).
size_t kv_select_workspace_bytes(int64_t rows, int64_t T);

int kv_select_exact(const ExactSelectParams& params, Stream stream);
int kv_select_sampling(const SamplingSelectParams& params, Stream stream);

// The deterministic sample position of kv_select_sampling: sample j (0 <= j < n_s) of `row` among
// E eligible positions. Exposed so that a CPU implementation can draw the same sample.
constexpr uint64_t sampling_mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
constexpr int64_t sampling_position(uint64_t seed, int64_t row, int64_t j, int64_t n_s, int64_t E) {
  const uint64_t h = sampling_mix64(seed ^ sampling_mix64(static_cast<uint64_t>(row) * 0x100000001b3ull +
                                                          static_cast<uint64_t>(j)));
  return static_cast<int64_t>((static_cast<uint64_t>(j) * static_cast<uint64_t>(E) +
                               h % static_cast<uint64_t>(E)) / static_cast<uint64_t>(n_s));
}

}  // namespace rakv::kernels::cuda
