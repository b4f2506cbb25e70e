// Corrected sampling selection of KV positions (SPEC §3 `sampling`; the definition is in
// include/rakv/kernels/cuda/kv_select.h). The sample gives tau and its two neighbouring order
// statistics; everything else is the multi-block pipeline of kv_select_common.cuh: classify
// keeps keys >= upper outright and buffers the band [lower, upper), the resolve step fixes the
// count to exactly `need` from the band (exact value order) or, beyond it, by position.
#include <cmath>

#include "dispatch.cuh"
#include "kv_select_common.cuh"
#include "rakv/kernels/cuda/kv_select.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int64_t kMaxSamples = 49152;  // 192 KiB of sample keys in shared memory

// Step 1: the sample, tau, upper and lower.
__global__ void __launch_bounds__(kRowThreads)
    sampling_estimate_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E,
                             int64_t need, int64_t n_samples, int64_t k_s, uint64_t seed,
                             SelectWorkspace ws, int32_t* __restrict__ row_status) {
  extern __shared__ uint4 smem_samples[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(smem_samples);
  __shared__ SelectSmem<kRowThreads> sm;
  __shared__ uint32_t s_min, s_max;
  allow_dependents();  // classify may be scheduled now; it waits for this grid's results
  const int64_t row = blockIdx.x;
  const float* in = importance + row * row_stride;
  RowState st{};
  if (need == 0) {
    st.mode = kModeNone;
    st.def_min = kNoKey;
    st.band_min = kNoKey;
  } else if (need == E) {
    st.mode = kModeAll;
    st.def_min = 0;
    st.band_min = 0;
  } else {
    st.mode = kModeBand;
    if (threadIdx.x == 0) {
      s_min = 0xffffffffu;
      s_max = 0u;
    }
    uint32_t kmin = 0xffffffffu, kmax = 0u;
    for (int64_t j = threadIdx.x; j < n_samples; j += kRowThreads) {
      const uint32_t k = float_key(__ldg(in + sampling_position(seed, row, j, n_samples, E)));
      keys[j] = k;
      kmin = min(kmin, k);
      kmax = max(kmax, k);
    }
    kmin = __reduce_min_sync(0xffffffffu, kmin);
    kmax = __reduce_max_sync(0xffffffffu, kmax);
    __syncthreads();
    if (lane_id() == 0) {
      atomicMin(&s_min, kmin);
      atomicMax(&s_max, kmax);
    }
    __syncthreads();
    auto sample_key = [&](int64_t i, uint32_t& key) {
      key = keys[i];
      return true;
    };
    const SelectResult t = block_select<kRowThreads>(n_samples, static_cast<uint32_t>(k_s), s_min, s_max, sample_key, sm);
    st.tau = t.thr;
    // The neighbouring order statistics: tau itself when tied, else the nearest sample key above
    // (upper) or below (lower), found in one more pass over the sample.
    uint32_t above = 0xffffffffu, below = 0u;
    for (int64_t j = threadIdx.x; j < n_samples; j += kRowThreads) {
      const uint32_t k = keys[j];
      if (k > t.thr) above = min(above, k);
      if (k < t.thr) below = max(below, k);
    }
    above = __reduce_min_sync(0xffffffffu, above);
    below = __reduce_max_sync(0xffffffffu, below);
    if (threadIdx.x == 0) {
      s_min = 0xffffffffu;  // reused: the smallest key above tau
      s_max = 0u;           // the largest key below tau
    }
    __syncthreads();
    if (lane_id() == 0) {
      atomicMin(&s_min, above);
      atomicMax(&s_max, below);
    }
    __syncthreads();
    st.def_min = kNoKey;
    if (k_s >= 2) st.def_min = t.take >= 2 ? t.thr : s_min;
    st.band_min = 0;
    if (k_s < n_samples) st.band_min = t.ties > t.take ? t.thr : s_max;
  }
  if (threadIdx.x == 0) {
    ws.state[row] = st;
    row_status[row] = 0;
  }
}

// Clears the first x set bits of the row's mask (in position order).
__device__ void drop_first_kept(uint32_t* mask_row, int64_t words, uint32_t x, RowSmem& sm) {
  uint32_t remaining = x;
  for (int64_t w0 = 0; remaining > 0 && w0 < words; w0 += kRowThreads) {
    const int64_t w = w0 + threadIdx.x;
    uint32_t word = w < words ? __ldcg(mask_row + w) : 0u;
    const uint32_t count = __popc(word);
    uint32_t total;
    const uint32_t before = block_exclusive_scan<kRowThreads>(count, total, sm.select.scan);
    if (w < words && word != 0 && before < remaining) {
      if (before + count <= remaining) {
        word = 0;
      } else {
        for (uint32_t c = remaining - before; c > 0; --c) word &= word - 1u;  // clear lowest bits
      }
      mask_row[w] = word;
    }
    remaining = total <= remaining ? remaining - total : 0u;
  }
}

// Adds the last y positions with key < lo (in position order) to the row's mask.
__device__ void add_last_below(const float* __restrict__ in, int64_t E, uint32_t lo, uint32_t y,
                               uint32_t* mask_row, RowSmem& sm) {
  const uint32_t lane = lane_id(), warp = threadIdx.x >> 5;
  uint32_t remaining = y;
  const int64_t tiles = (E + kRowThreads - 1) / kRowThreads;
  for (int64_t tile = tiles - 1; tile >= 0 && remaining > 0; --tile) {
    const int64_t w = tile * (kRowThreads / 32) + warp;
    const int64_t p = w * 32 + lane;
    const bool below = p < E && float_key(__ldg(in + p)) < lo;
    uint32_t bits = __ballot_sync(0xffffffffu, below);
    if (lane == 0) sm.counts[warp] = __popc(bits);
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t r = remaining;
      for (int q = kRowThreads / 32 - 1; q >= 0; --q) {
        const uint32_t take = sm.counts[q] < r ? sm.counts[q] : r;
        sm.counts[q] = take;
        r -= take;
      }
      sm.misc[0] = r;
    }
    __syncthreads();
    const uint32_t take = sm.counts[warp];
    if (lane == 0 && take > 0) {
      while (static_cast<uint32_t>(__popc(bits)) > take) bits &= bits - 1u;  // keep the highest
      atomicOr(mask_row + w, bits);
    }
    remaining = sm.misc[0];
    __syncthreads();
  }
}

// Step 3.
__global__ void __launch_bounds__(kRowThreads)
    sampling_resolve_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E,
                            int64_t need, SelectWorkspace ws, int32_t* __restrict__ row_status,
                            int64_t smem_entries) {
  __shared__ RowSmem sm;
  extern __shared__ uint4 smem_band[];
  wait_for_predecessor();
  allow_dependents();
  const int64_t row = blockIdx.x;
  const float* in = importance + row * row_stride;
  uint32_t* mask_row = ws.mask + row * ws.words_per_row;
  const RowState st = ws.state[row];
  if (st.mode == kModeBand) {
    const int64_t n = st.band_count;
    if (n > ws.band_cap) {
      exact_row_fallback(in, E, need, mask_row, sm);
      if (threadIdx.x == 0) atomicOr(row_status + row, kRowStatusFallback);
    } else {
      const int64_t n_hi = st.band_hi_count, n_lo = n - n_hi;  // band above / below tau
      const int64_t c = static_cast<int64_t>(st.def_count) + n_hi;
      const uint32_t band_n = static_cast<uint32_t>(n);
      uint32_t* s_key = reinterpret_cast<uint32_t*>(smem_band);
      const BandView band = load_band(ws.band + row * ws.band_cap, n, s_key, s_key + smem_entries, smem_entries);
      uint32_t thr, cut;
      if (c == need) {
        mark_band(band, band_n, st.tau, false, 0, 0, mask_row);
      } else if (c > need) {
        const int64_t d = c - need;
        if (n_hi >= d) {
          if (n_hi > d) {
            const uint32_t hi = st.def_min >= kNoKey ? 0xffffffffu : static_cast<uint32_t>(st.def_min - 1);
            select_in_band(band, band_n, st.tau, hi, static_cast<uint32_t>(n_hi - d), E, sm, thr, cut);
            mark_band(band, band_n, kNoKey, true, thr, cut, mask_row);
          }
        } else {
          drop_first_kept(mask_row, (E + 31) / 32, static_cast<uint32_t>(d - n_hi), sm);
        }
      } else {
        const int64_t a = need - c;
        if (n_lo >= a) {
          select_in_band(band, band_n, static_cast<uint32_t>(st.band_min), st.tau - 1u,
                         static_cast<uint32_t>(a), E, sm, thr, cut);
          mark_band(band, band_n, st.tau, true, thr, cut, mask_row);
        } else {
          mark_band(band, band_n, 0, false, 0, 0, mask_row);
          add_last_below(in, E, static_cast<uint32_t>(st.band_min), static_cast<uint32_t>(a - n_lo),
                         mask_row, sm);
        }
      }
    }
  }
  finalize_tile_offsets(mask_row, ws.tile_off + row * ws.tiles_per_row, (E + kTile - 1) / kTile, sm);
}

}  // namespace
}  // namespace detail

int kv_select_sampling(const SamplingSelectParams& p, Stream stream_handle) {
  using namespace detail;
  clear_error_detail();
  if (const int err = check_selection_ranges(p, "kv_select_sampling")) return err;
  if (!(p.sample_fraction > 0.0 && p.sample_fraction <= 1.0) || p.min_samples < 1)
    return invalid_argument("kv_select_sampling: sample_fraction=%g must be in (0, 1], min_samples=%lld >= 1",
                            p.sample_fraction, (long long)p.min_samples);
  if (p.rows == 0) return 0;
  if (const int err = check_selection_buffers(p, "kv_select_sampling")) return err;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int64_t recent = p.T > p.recency ? (p.k_keep < p.recency ? p.k_keep : p.recency) : 0;
  const int64_t E = p.T - recent, need = p.k_keep - recent;

  int64_t n_samples = static_cast<int64_t>(std::floor(static_cast<double>(E) * p.sample_fraction));
  if (n_samples < p.min_samples) n_samples = p.min_samples;
  if (n_samples > E) n_samples = E;
  if (n_samples > kMaxSamples) n_samples = kMaxSamples;
  int64_t k_s = std::llround(static_cast<double>(need) * static_cast<double>(n_samples) / static_cast<double>(E));
  if (k_s < 1) k_s = 1;
  if (k_s > n_samples) k_s = n_samples;

  const SelectWorkspace ws = make_workspace(p.workspace, p.rows, p.T, nullptr);
  int smem_optin = 0;
  int err = device_smem_optin(&smem_optin);
  if (err != 0) return err;
  const int smem = static_cast<int>(round_up(n_samples, 4)) * 4;
  err = ensure_dynamic_smem(reinterpret_cast<const void*>(sampling_estimate_kernel), smem);
  if (err != 0) return err;
  // The band [lower, upper) holds about 2 E / n_s entries: a small shared-memory buffer suffices
  // (larger bands, from heavy ties, are read from the global buffer).
  int64_t entries = ws.band_cap < 4096 ? ws.band_cap : 4096;
  const int resolve_smem = static_cast<int>(round_up(entries * 8, 16));
  err = ensure_dynamic_smem(reinterpret_cast<const void*>(sampling_resolve_kernel), resolve_smem);
  if (err != 0) return err;
  sampling_estimate_kernel<<<static_cast<unsigned>(p.rows), kRowThreads, smem, stream>>>(
      p.importance, p.row_stride, E, need, n_samples, k_s, p.seed, ws, p.row_status);
  err = static_cast<int>(cudaGetLastError());
  if (err != 0) return err;
  err = launch_classify(p.importance, p.row_stride, p.rows, E, ws, p.row_status, true, stream);
  if (err != 0) return err;
  err = launch_dependent(sampling_resolve_kernel, dim3(static_cast<unsigned>(p.rows)), dim3(kRowThreads),
                         static_cast<size_t>(resolve_smem), stream, p.importance, p.row_stride, E, need, ws,
                         p.row_status, entries);
  if (err != 0) return err;
  return launch_emit(ws, p.rows, E, need, recent, p.out, p.out_row_stride, stream);
}

}  // namespace rakv::kernels::cuda
