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

}  // namespace rakv::kernels::cuda::detail
