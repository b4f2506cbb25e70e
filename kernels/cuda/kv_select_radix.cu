// Exact batched top-k of KV positions (SPEC §3 `exact`): radix select of the threshold key, then
// an ascending, order-preserving compaction (ties to the lower position). Two implementations:
//
//  - single block per row (E <= 16384 by default): the row's keys live in shared memory; the
//    select makes at most 3 passes over them and the compaction one, so the row is read from
//    device memory once and the output written once, in one launch.
//  - multi-block (longer rows; kv_select_common.cuh): a Floyd-Rivest style bracket from a sample
//    (1024 groups of 8 adjacent values, about 6% of the row's sectors) puts the k-th value
//    between two sample order statistics with a margin of 6 binomial standard deviations; one
//    pass classifies the row against the bracket, the band (a few percent of the row) is
//    selected exactly from the band buffer, and a second pass over the 1-bit mask writes the
//    output. Rows whose bracket missed run the exact select over the whole row (correct, slow).
#include <cmath>

#include "dispatch.cuh"
#include "kv_select_common.cuh"
#include "kv_select_exact_resolve.cuh"
#include "rakv/kernels/cuda/kv_select.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int kSingleThreads = 1024;
// Auto picks one block per row up to here: on an H200, [96, 32768] took 26.2 us single-block
// against 36.9 us multi-block (docs/perf/h200.md); keys beyond 128 KiB of shared memory go multi.
constexpr int64_t kSingleBlockDefaultMaxE = 32768;
constexpr int64_t kSingleBlockMaxE = 49152;  // 192 KiB of keys in shared memory
constexpr int kSampleGroups = 1024;          // bracket sample: groups of 8 adjacent values
constexpr int kSampleGroupLen = 8;
constexpr int64_t kBandAllMaxE = 8192;       // shorter rows put every position in the band

// ------------------------------------------------------------------------------------------------
// Single block per row
// ------------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kSingleThreads)
    exact_single_block_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E,
                              int64_t need, int64_t recent, int64_t* __restrict__ out,
                              int64_t out_row_stride, int32_t* __restrict__ row_status) {
  extern __shared__ uint4 smem_keys[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(smem_keys);
  __shared__ SelectSmem<kSingleThreads> sm;
  __shared__ unsigned long long s_scan[kSingleThreads / 32];
  __shared__ uint32_t s_min, s_max;

  const int64_t row = blockIdx.x;
  const float* in = importance + row * row_stride;
  int64_t* out_row = out + row * out_row_stride;
  if (threadIdx.x == 0) {
    s_min = 0xffffffffu;
    s_max = 0u;
  }

  // Load: 16-byte loads where the row is aligned, 4 in flight per thread.
  uint32_t kmin = 0xffffffffu, kmax = 0u;
  bool nan = false;
  const bool aligned = (reinterpret_cast<uintptr_t>(in) & 15u) == 0;
  const int64_t E4 = aligned ? (E & ~int64_t(3)) : 0;
#pragma unroll 4
  for (int64_t i = threadIdx.x * 4; i < E4; i += kSingleThreads * 4) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(in + i));
    uint4 k;
    k.x = float_key(v.x);
    k.y = float_key(v.y);
    k.z = float_key(v.z);
    k.w = float_key(v.w);
    nan |= is_nan_float(v.x) | is_nan_float(v.y) | is_nan_float(v.z) | is_nan_float(v.w);
    kmin = min(kmin, min(min(k.x, k.y), min(k.z, k.w)));
    kmax = max(kmax, max(max(k.x, k.y), max(k.z, k.w)));
    *reinterpret_cast<uint4*>(keys + i) = k;
  }
  for (int64_t i = E4 + threadIdx.x; i < E; i += kSingleThreads) {
    const float v = __ldg(in + i);
    const uint32_t k = float_key(v);
    nan |= is_nan_float(v);
    kmin = min(kmin, k);
    kmax = max(kmax, k);
    keys[i] = k;
  }
  kmin = __reduce_min_sync(0xffffffffu, kmin);
  kmax = __reduce_max_sync(0xffffffffu, kmax);
  __syncthreads();  // s_min/s_max initialised
  if (lane_id() == 0) {
    atomicMin(&s_min, kmin);
    atomicMax(&s_max, kmax);
  }
  nan = __syncthreads_or(nan);
  if (threadIdx.x == 0) row_status[row] = nan ? kRowStatusNaN : 0;

  if (need > 0) {
    const bool all = need == E;
    uint32_t thr = 0, take = 0;
    if (!all) {
      const SelectResult s = block_select<kSingleThreads>(
          E, static_cast<uint32_t>(need), s_min, s_max,
          [&](int64_t i, uint32_t& key) {
            key = keys[i];
            return true;
          },
          sm);
      thr = s.thr;
      take = s.take;
    }
    // Compaction, tiles of 4 consecutive keys per thread: a kept key's slot is
    // (#greater before it) + min(#ties before it, take).
    unsigned long long carry = 0;  // (greater << 32) | ties, before the tile
    for (int64_t t0 = 0; t0 < E; t0 += kSingleThreads * 4) {
      const int64_t i = t0 + threadIdx.x * 4;
      uint32_t k[4];
      if (i + 3 < E) {
        const uint4 v = *reinterpret_cast<const uint4*>(keys + i);  // conflict-free 16-byte read
        k[0] = v.x;
        k[1] = v.y;
        k[2] = v.z;
        k[3] = v.w;
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) k[q] = i + q < E ? keys[i + q] : 0u;
      }
      uint32_t gt = 0, ties = 0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const bool valid = i + q < E;
        gt += valid && (all || k[q] > thr);
        ties += valid && !all && k[q] == thr;
      }
      unsigned long long total;
      const unsigned long long before =
          carry + block_exclusive_scan<kSingleThreads>(
                      (static_cast<unsigned long long>(gt) << 32) | ties, total, s_scan);
      int64_t g = static_cast<int64_t>(before >> 32);
      int64_t t = static_cast<int64_t>(before & 0xffffffffull);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const bool valid = i + q < E;
        if (!valid) continue;
        if (all || k[q] > thr) {
          const int64_t s = g + (t < take ? t : take);
          if (s < need) out_row[s] = i + q;
          ++g;
        } else if (k[q] == thr) {
          if (t < take && g + t < need) out_row[g + t] = i + q;
          ++t;
        }
      }
      carry += total;
    }
  }
  for (int64_t t = threadIdx.x; t < recent; t += kSingleThreads) out_row[need + t] = E + t;
}

// ------------------------------------------------------------------------------------------------
// Multi-block: step 1 (bracket) and step 3 (resolve)
// ------------------------------------------------------------------------------------------------

// Group g's first position: uniform over the starts in stratum [g*E/groups, (g+1)*E/groups) whose
// address is 32-byte aligned (`lead` = positions before the row's first aligned address), so
// that each group is one DRAM sector, read with two 16-byte loads (an unaligned group spans two
// sectors 7 times in 8).
__device__ __forceinline__ int64_t sample_group_start(int64_t row, int64_t g, int64_t groups,
                                                      int64_t E, int64_t lead) {
  const int64_t s0 = g * E / groups, s1 = (g + 1) * E / groups;
  const int64_t a0 = s0 + (((lead - s0) % kSampleGroupLen) + kSampleGroupLen) % kSampleGroupLen;
  const uint32_t starts = static_cast<uint32_t>((s1 - kSampleGroupLen - a0) / kSampleGroupLen + 1);
  const uint64_t h = sampling_mix64(0x5eed5eedull ^ sampling_mix64(static_cast<uint64_t>(row) * 0x100000001b3ull +
                                                                  static_cast<uint64_t>(g)));
  return a0 + kSampleGroupLen * static_cast<int64_t>(static_cast<uint32_t>(h >> 32) % starts);
}

__global__ void __launch_bounds__(kRowThreads)
    exact_bracket_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E,
                         int64_t need, SelectWorkspace ws, int32_t* __restrict__ row_status,
                         bool force_fallback) {
  __shared__ MultiSelectSmem<kRowThreads, 2> sm;
  __shared__ uint32_t s_wmin[kRowThreads / 32], s_wmax[kRowThreads / 32];
  // Launched as a dependent of whatever precedes it, which may still be writing the row: wait
  // for it before allowing classify, which reads the row before waiting for this grid's results.
  wait_for_predecessor();
  allow_dependents();
  const int64_t row = blockIdx.x;
  const float* in = importance + row * row_stride;
  RowState st{};
  st.tau = 0;
  if (need == 0) {
    st.mode = kModeNone;
    st.def_min = kNoKey;
    st.band_min = kNoKey;
  } else if (need == E) {
    st.mode = kModeAll;
    st.def_min = 0;
    st.band_min = 0;
  } else if (E <= kBandAllMaxE || force_fallback) {
    st.mode = kModeBand;  // every position is a band entry (or, forced, the fallback runs)
    st.def_min = kNoKey;
    st.band_min = force_fallback ? kNoKey : 0;
  } else {
    static_assert(kSampleGroups <= kRowThreads, "one sample group per thread");
    st.mode = kModeBand;
    const int64_t groups = E / 64 < kSampleGroups ? E / 64 : kSampleGroups;
    const int64_t n = groups * kSampleGroupLen;
    // Each thread keeps its group's keys in registers.
    const bool has_group = threadIdx.x < groups;
    uint32_t k[kSampleGroupLen];
    uint32_t kmin = 0xffffffffu, kmax = 0u;
    if (has_group) {
      const int64_t lead = static_cast<int64_t>((32u - (reinterpret_cast<uintptr_t>(in) & 31u)) & 31u) / 4;
      const int64_t p = sample_group_start(row, threadIdx.x, groups, E, lead);
      float v[kSampleGroupLen];
      const float4 a = __ldcs(reinterpret_cast<const float4*>(in + p));
      const float4 b = __ldcs(reinterpret_cast<const float4*>(in + p + 4));
      v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
#pragma unroll
      for (int q = 0; q < kSampleGroupLen; ++q) {
        k[q] = float_key(v[q]);
        kmin = min(kmin, k[q]);
        kmax = max(kmax, k[q]);
      }
    }
    multi_select_clear(sm);
    kmin = __reduce_min_sync(0xffffffffu, kmin);
    kmax = __reduce_max_sync(0xffffffffu, kmax);
    const uint32_t lane = lane_id();
    if (lane == 0) {
      s_wmin[threadIdx.x >> 5] = kmin;
      s_wmax[threadIdx.x >> 5] = kmax;
    }
    __syncthreads();
    const uint32_t s_min = __reduce_min_sync(0xffffffffu, s_wmin[lane]);
    const uint32_t s_max = __reduce_max_sync(0xffffffffu, s_wmax[lane]);
    // Expected sample rank of the k-th value, and a margin of 6 binomial standard deviations
    // (3 if adjacent values were correlated enough to halve the effective sample) + 16.
    const double p = static_cast<double>(need) / static_cast<double>(E);
    const double expected = p * static_cast<double>(n);
    const double margin = 6.0 * sqrt(static_cast<double>(n) * p * (1.0 - p)) + 16.0;
    const int64_t hi_rank = static_cast<int64_t>(floor(expected - margin));
    const int64_t lo_rank = static_cast<int64_t>(ceil(expected + margin));
    // The bracket ends are the outer edges of the histogram bins holding the two sample ranks:
    // a bin of at most margin/4 samples widens the band a little and usually saves the
    // select's further passes. Both ends are selected together (one histogram while their
    // ranges coincide).
    const uint32_t stop = static_cast<uint32_t>(margin / 4.0) + 1u;
    const bool active[2] = {hi_rank >= 1, lo_rank <= n};
    const uint32_t ranks[2] = {active[0] ? static_cast<uint32_t>(hi_rank) : 0u,
                               active[1] ? static_cast<uint32_t>(lo_rank) : 0u};
    SelectResult r[2];
    block_select_multi<kRowThreads, 2>(
        ranks, active, s_min, s_max,
        [&](auto&& f) {
          if (has_group) {
#pragma unroll
            for (int q = 0; q < kSampleGroupLen; ++q) f(k[q]);
          }
        },
        sm, stop, false, r);
    st.def_min = active[0] ? static_cast<unsigned long long>(r[0].top) + 1ull : kNoKey;
    st.band_min = active[1] ? r[1].thr : 0;
  }
  if (threadIdx.x == 0) {
    ws.state[row] = st;  // counts zero
    row_status[row] = 0;
  }
}

// Step 3 (kv_select_exact_resolve.cuh).
__global__ void __launch_bounds__(kRowThreads)
    exact_resolve_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E, int64_t need,
                         SelectWorkspace ws, int32_t* __restrict__ row_status) {
  __shared__ ExactResolveSmem sm;
  wait_for_predecessor();
  allow_dependents();
  const int64_t row = blockIdx.x;
  exact_resolve_row(importance + row * row_stride, row, E, need, ws, row_status, sm);
}

}  // namespace
}  // namespace detail

int kv_select_exact(const ExactSelectParams& p, Stream stream_handle) {
  using namespace detail;
  clear_error_detail();
  if (const int err = check_selection_ranges(p, "kv_select_exact")) return err;
  if (p.rows == 0) return 0;
  if (const int err = check_selection_buffers(p, "kv_select_exact")) return err;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t recent = p.T > p.recency ? (p.k_keep < p.recency ? p.k_keep : p.recency) : 0;
  const int64_t E = p.T - recent, need = p.k_keep - recent;

  // The single-block kernel keeps the row's keys in dynamic shared memory: check the device's
  // opt-in limit (227 KiB on the H100) besides the static bound.
  int smem_optin = 0;
  int err = device_smem_optin(&smem_optin);
  if (err != 0) return err;
  const size_t smem = static_cast<size_t>(round_up(E, 4)) * 4;
  const bool fits = smem + sizeof(SelectSmem<kSingleThreads>) + 1024 <= static_cast<size_t>(smem_optin);
  const bool single = fits && ((p.path == SelectPath::kSingleBlock && E <= kSingleBlockMaxE) ||
                               (p.path == SelectPath::kAuto && E <= kSingleBlockDefaultMaxE));
  if (single) {
    err = ensure_dynamic_smem(reinterpret_cast<const void*>(exact_single_block_kernel), static_cast<int>(smem));
    if (err != 0) return err;
    exact_single_block_kernel<<<static_cast<unsigned>(p.rows), kSingleThreads, smem, stream>>>(
        p.importance, p.row_stride, E, need, recent, p.out, p.out_row_stride, p.row_status);
    return static_cast<int>(cudaGetLastError());
  }

  const SelectWorkspace ws = make_workspace(p.workspace, p.rows, p.T, nullptr);
  const bool force_fallback = p.path == SelectPath::kMultiBlockFallback;
  err = launch_dependent(exact_bracket_kernel, dim3(static_cast<unsigned>(p.rows)),
                         dim3(kRowThreads), 0, stream, p.importance, p.row_stride, E, need, ws,
                         p.row_status, force_fallback);
  if (err != 0) return err;
  err = launch_classify(p.importance, p.row_stride, p.rows, E, ws, p.row_status, false, stream);
  if (err != 0) return err;
  err = launch_dependent(exact_resolve_kernel, dim3(static_cast<unsigned>(p.rows)), dim3(kRowThreads), 0, stream,
                         p.importance, p.row_stride, E, need, ws, p.row_status);
  if (err != 0) return err;
  return launch_emit(ws, p.rows, E, need, recent, p.out, p.out_row_stride, stream);
}

}  // namespace rakv::kernels::cuda
