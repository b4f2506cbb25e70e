// Block-level building blocks of the selection kernels: order-preserving keys of float32 values,
// block scans and reductions, and a radix select of the k-th largest key.
//
// Keys: the float bits mapped so that unsigned order is float order (negative values flipped,
// non-negative ones offset by the sign bit); -0 is mapped to +0 so that the two compare equal.
// NaN maps above +inf, so a row with a NaN still selects in-range positions (the caller reports
// the NaN through its status flag).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace rakv::kernels::cuda::detail {

// Three instructions: -0 + 0 = +0 (IEEE, round to nearest; kernels are built without fast-math,
// so denormals keep their order), then flip all bits of negatives, the sign bit of the rest.
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t b = __float_as_uint(f + 0.0f);
  return b ^ (static_cast<uint32_t>(static_cast<int32_t>(b) >> 31) | 0x80000000u);
}

// Programmatic dependent launch (sm_90): a kernel launched with the programmatic stream
// serialization attribute may start while its predecessor finishes; it must wait here before
// touching the predecessor's results. Without the attribute both are no-ops.
__device__ __forceinline__ void wait_for_predecessor() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void allow_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

__device__ __forceinline__ bool is_nan_float(float f) {
  return (__float_as_uint(f) & 0x7fffffffu) > 0x7f800000u;
}

__device__ __forceinline__ uint32_t lane_id() { return threadIdx.x & 31u; }

template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T x) {
  const uint32_t lane = lane_id();
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= static_cast<uint32_t>(o)) x += y;
  }
  return x;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Exclusive prefix sum over the block (thread order); `total` gets the block's sum.
// s_warp: BLOCK/32 shared elements. Every thread must call it; it ends with a barrier, so
// s_warp can be reused right away.
template <int BLOCK, typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T& total, T* s_warp) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "block size");
  constexpr int kWarps = BLOCK / 32;
  const uint32_t lane = lane_id(), warp = threadIdx.x >> 5;
  const T inclusive = warp_inclusive_scan(v);
  if (lane == 31) s_warp[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kWarps ? s_warp[lane] : T(0);
    w = warp_inclusive_scan(w);
    if (lane < kWarps) s_warp[lane] = w;
  }
  __syncthreads();
  const T before = warp > 0 ? s_warp[warp - 1] : T(0);
  total = s_warp[kWarps - 1];
  __syncthreads();
  return before + inclusive - v;
}

// Shared memory of block_select.
constexpr int kSelectBins = 2048;  // 11-bit digits: at most 3 passes over the keys
template <int BLOCK>
struct SelectSmem {
  uint32_t hist[kSelectBins];
  uint32_t scan[BLOCK / 32];
  uint32_t result[3];
};

struct SelectResult {
  uint32_t thr;   // the rank-th largest key (with stop_count: the bottom of its final bin)
  uint32_t take;  // how many keys of the final bin are inside the top `rank` (1 <= take <= ties)
  uint32_t ties;  // how many valid keys lie in the final bin (equal thr when it is exact)
  uint32_t top;   // the top of the final bin (== thr when exact)
};

// The rank-th largest (1-based) of the valid keys in [kmin, kmax]; key_at(i, key) -> bool gives
// element i's key and whether it takes part. Precondition: at least `rank` valid keys lie in
// [kmin, kmax]. Each pass histograms the remaining key range [base, top] into at most 2048 bins
// whose width adapts to the range (so the first pass spreads the data over the bins between the
// smallest and largest key instead of over the top exponent bits), then narrows the range to the
// bin that holds the rank-th key: at most ceil(32 / 11) = 3 passes, fewer for narrow ranges.
// With stop_count > 0 it stops as soon as the bin holding the rank-th key holds at most
// stop_count keys, and returns that bin's bounds [thr, top] (a bracket, not the exact key).
// Every thread of the block must call it.
template <int BLOCK, class KeyAt>
__device__ SelectResult block_select(int64_t n, uint32_t rank, uint32_t kmin, uint32_t kmax,
                                     KeyAt key_at, SelectSmem<BLOCK>& sm, uint32_t stop_count = 0) {
  static_assert(kSelectBins % BLOCK == 0, "bins per thread");
  constexpr int kPerThread = kSelectBins / BLOCK;
  uint32_t base = kmin, top = kmax, remaining = rank;
  for (;;) {
    const uint32_t span = top - base;
    const int bits = span ? 32 - __clz(span) : 0;
    const int shift = bits > 11 ? bits - 11 : 0;
    const uint32_t nbins = (span >> shift) + 1u;
    for (uint32_t b = threadIdx.x; b < nbins; b += BLOCK) sm.hist[b] = 0;
    if (threadIdx.x == 0) {
      sm.result[0] = 0;
      sm.result[1] = 0;
      sm.result[2] = 0;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += BLOCK) {
      uint32_t key;
      if (key_at(i, key) && key >= base && key <= top) atomicAdd(&sm.hist[(key - base) >> shift], 1u);
    }
    __syncthreads();
    // Bins in descending order: thread t owns reversed positions [t*kPerThread, (t+1)*kPerThread).
    uint32_t local[kPerThread];
    uint32_t sum = 0;
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      const uint32_t r = threadIdx.x * kPerThread + q;
      local[q] = r < nbins ? sm.hist[nbins - 1u - r] : 0u;
      sum += local[q];
    }
    uint32_t total;
    uint32_t above = block_exclusive_scan<BLOCK>(sum, total, sm.scan);
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      if (above < remaining && remaining <= above + local[q]) {
        sm.result[0] = nbins - 1u - (threadIdx.x * kPerThread + q);
        sm.result[1] = above;
        sm.result[2] = local[q];
      }
      above += local[q];
    }
    __syncthreads();
    const uint32_t digit = sm.result[0], count_above = sm.result[1], count = sm.result[2];
    __syncthreads();
    remaining -= count_above;
    base += digit << shift;
    const uint32_t width = (1u << shift) - 1u;
    top = (top - base > width) ? base + width : top;
    if (shift == 0 || count <= stop_count) return {base, remaining, count, top};
  }
}

// ------------------------------------------------------------------------------------------------
// A leaner radix select for the per-row steps: the same passes and results as block_select, with
// up to two ranks selected together (passes whose key ranges coincide share one histogram), three
// block barriers per pass instead of seven (each thread zeroes the bins it has read, and every warp
// sums the warp totals itself), and the keys given by the caller as a per-thread enumeration.
// ------------------------------------------------------------------------------------------------

template <int BLOCK, int NR>
struct MultiSelectSmem {
  uint32_t hist[NR][kSelectBins];  // zero between selects (the caller clears it once)
  uint32_t warp_tot[NR][BLOCK / 32];
  uint32_t result[NR][3];
};

// The histogram geometry of a pass over the key range [base, top].
__device__ __forceinline__ void select_pass_bins(uint32_t base, uint32_t top, int& shift,
                                                 uint32_t& nbins) {
  const uint32_t span = top - base;
  const int bits = span ? 32 - __clz(span) : 0;
  shift = bits > 11 ? bits - 11 : 0;
  nbins = (span >> shift) + 1u;
}

// Zeroes the histograms (no barrier: the caller has one before the select).
template <int BLOCK, int NR>
__device__ __forceinline__ void multi_select_clear(MultiSelectSmem<BLOCK, NR>& sm) {
  for (int i = threadIdx.x; i < NR * kSelectBins; i += BLOCK) (&sm.hist[0][0])[i] = 0u;
}

// For each active end e: the rank[e]-th largest valid key in [kmin, kmax] (block_select's result,
// with the same stop_count rule). for_each_key(f) calls f(key) for each valid key this thread
// contributes (every valid key exactly once over the block). Preconditions: the histograms are
// zero and a barrier separates their zeroing from this call; with first_built, histogram 0 already
// holds the first pass of end 0 over [kmin, kmax] (NR == 1), followed by a barrier. Leaves the
// histograms zero. Every thread of the block must call it.
template <int BLOCK, int NR, class ForEachKey>
__device__ __forceinline__ void block_select_multi(const uint32_t (&rank)[NR], const bool (&active)[NR],
                                                   uint32_t kmin, uint32_t kmax, ForEachKey for_each_key,
                                                   MultiSelectSmem<BLOCK, NR>& sm, uint32_t stop_count,
                                                   bool first_built, SelectResult (&res)[NR]) {
  static_assert(NR == 1 || NR == 2, "one or two ranks");
  static_assert(kSelectBins % BLOCK == 0, "bins per thread");
  constexpr int kPerThread = kSelectBins / BLOCK;
  constexpr int kWarps = BLOCK / 32;
  const uint32_t lane = lane_id(), warp = threadIdx.x >> 5;
  uint32_t base[NR], top[NR], rem[NR];
  bool live[NR];
#pragma unroll
  for (int e = 0; e < NR; ++e) {
    base[e] = kmin;
    top[e] = kmax;
    rem[e] = rank[e];
    live[e] = active[e];
    res[e] = {0u, 0u, 0u, 0u};
  }
  bool first = true;
  for (;;) {
    bool any = false;
#pragma unroll
    for (int e = 0; e < NR; ++e) any |= live[e];
    if (!any) return;
    int shift[NR];
    uint32_t nbins[NR];
#pragma unroll
    for (int e = 0; e < NR; ++e) select_pass_bins(base[e], top[e], shift[e], nbins[e]);
    // End 1 reads end 0's histogram when both cover the same range.
    const bool share = NR == 2 && live[0] && live[NR - 1] && base[0] == base[NR - 1] && top[0] == top[NR - 1];
    if (!(first && first_built)) {
      for_each_key([&](uint32_t key) {
#pragma unroll
        for (int e = 0; e < NR; ++e) {
          if (e == 1 && share) continue;
          if (live[e] && key >= base[e] && key <= top[e]) atomicAdd(&sm.hist[e][(key - base[e]) >> shift[e]], 1u);
        }
      });
      __syncthreads();
    }
    first = false;
    // Bins in descending order: thread t owns reversed positions [t*kPerThread, (t+1)*kPerThread).
    uint32_t local[NR][kPerThread], sum[NR];
#pragma unroll
    for (int e = 0; e < NR; ++e) {
      const int h = (e == 1 && share) ? 0 : e;
      sum[e] = 0;
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        const uint32_t r = threadIdx.x * kPerThread + q;
        local[e][q] = live[e] && r < nbins[e] ? sm.hist[h][nbins[e] - 1u - r] : 0u;
        sum[e] += local[e][q];
      }
    }
#pragma unroll
    for (int e = 0; e < NR; ++e) {
      if (e == 1 && share) continue;
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        const uint32_t r = threadIdx.x * kPerThread + q;
        if (live[e] && r < nbins[e]) sm.hist[e][nbins[e] - 1u - r] = 0u;
      }
    }
    uint32_t incl[NR];
#pragma unroll
    for (int e = 0; e < NR; ++e) {
      incl[e] = warp_inclusive_scan(sum[e]);
      if (lane == 31) sm.warp_tot[e][warp] = incl[e];
    }
    if (threadIdx.x == 0) {
#pragma unroll
      for (int e = 0; e < NR; ++e) sm.result[e][0] = sm.result[e][1] = sm.result[e][2] = 0u;
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < NR; ++e) {
      const uint32_t w = lane < static_cast<uint32_t>(kWarps) && lane < warp ? sm.warp_tot[e][lane] : 0u;
      uint32_t above = __reduce_add_sync(0xffffffffu, w) + incl[e] - sum[e];
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        if (live[e] && above < rem[e] && rem[e] <= above + local[e][q]) {
          sm.result[e][0] = nbins[e] - 1u - (threadIdx.x * kPerThread + q);
          sm.result[e][1] = above;
          sm.result[e][2] = local[e][q];
        }
        above += local[e][q];
      }
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < NR; ++e) {
      if (!live[e]) continue;
      const uint32_t digit = sm.result[e][0], count_above = sm.result[e][1], count = sm.result[e][2];
      rem[e] -= count_above;
      base[e] += digit << shift[e];
      const uint32_t width = (1u << shift[e]) - 1u;
      top[e] = (top[e] - base[e] > width) ? base[e] + width : top[e];
      if (shift[e] == 0 || count <= stop_count) {
        res[e] = {base[e], rem[e], count, top[e]};
        live[e] = false;
      }
    }
  }
}

}  // namespace rakv::kernels::cuda::detail
