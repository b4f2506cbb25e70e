// Step 3 of the exact method (kv_select_common.cuh): one block of kRowThreads threads per row.
//
// The band entries are read once, into registers (bands of up to 16384 entries), and make two
// passes there: a histogram of their keys, which finds the bin that holds the k-th key, then a
// pass that keeps the entries above that bin and gathers the bin's own entries (a few dozen
// usually) in shared memory, where each is ranked against the others. Kept entries are marked
// in a shared-memory copy of the mask bits, which is ORed into the mask while the tiles are
// counted. Three L2 round trips in all; the earlier version copied the band to shared memory,
// ran up to three radix passes and a marking pass over it, and marked with global atomics.
#pragma once

#include <cstdint>

#include "kv_select_common.cuh"

namespace rakv::kernels::cuda::detail {

constexpr int kResolveCandidates = 2048;  // entries of the final bin held in shared memory
constexpr int kResolveMaskWords = 4096;   // rows of up to 131072 positions mark in shared memory

struct ExactResolveSmem {
  __align__(16) uint32_t bits[kResolveMaskWords];  // kept band entries, ORed into the mask at the end
  uint32_t key[kResolveCandidates], pos[kResolveCandidates];  // the final bin's entries
  uint32_t count;
  union {
    MultiSelectSmem<kRowThreads, 1> sel;  // the band histogram
    RowSmem row;                          // crowded bins, fallback select, tile offsets
  };
};

// Marks the top `rank` of the `count` entries of the final bin held in shared memory, ties to
// the lower position: each thread ranks one entry against all the others (no block barrier).
// For bins of up to kRowThreads entries, a few dozen usually.
template <class Mark>
__device__ __forceinline__ void mark_top_of_small_bin(uint32_t count, uint32_t rank, const uint32_t* key,
                                                      const uint32_t* pos, Mark mark) {
  const uint32_t i = threadIdx.x;
  if (i >= count) return;
  const uint32_t k = key[i], p = pos[i];
  uint32_t before = 0;
  for (uint32_t j = 0; j < count; ++j) before += key[j] > k || (key[j] == k && pos[j] < p);
  if (before < rank) mark(p);
}

// The band of a row whose bracket holds the k-th key: the top `rank` (1 <= rank <= n) of its n
// entries (n <= band_cap), keys in [lo, hi]. The first pass histograms the keys; the second keeps
// the entries above the bin that holds the k-th key and gathers that bin's entries in shared
// memory. A band of up to kRowThreads * kBandBatch entries is read from memory once, into
// registers, all loads in flight together. mark(pos) marks a kept entry.
template <class Mark>
__device__ __forceinline__ void resolve_band(const SelectWorkspace& ws, int64_t row, int64_t E, int64_t n,
                                             uint32_t rank, uint32_t lo, uint32_t hi, ExactResolveSmem& sm,
                                             Mark mark) {
  constexpr int kBandBatch = 16;
  const unsigned long long* band = ws.band + row * ws.band_cap;
  const bool one_batch = n <= static_cast<int64_t>(kRowThreads) * kBandBatch;
  unsigned long long e[kBandBatch];
  if (one_batch) {
#pragma unroll
    for (int j = 0; j < kBandBatch; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kRowThreads;
      e[j] = i < n ? band[i] : 0ull;
    }
  }
  // Calls f(entry) for each of this thread's band entries.
  auto for_each_entry = [&](auto&& f) {
    if (one_batch) {
#pragma unroll
      for (int j = 0; j < kBandBatch; ++j)
        if (threadIdx.x + static_cast<int64_t>(j) * kRowThreads < n) f(e[j]);
    } else {
      for (int64_t i = threadIdx.x; i < n; i += kRowThreads) f(band[i]);
    }
  };
  int shift;
  uint32_t nbins;
  select_pass_bins(lo, hi, shift, nbins);
  multi_select_clear(sm.sel);
  if (threadIdx.x == 0) sm.count = 0;
  __syncthreads();
  for_each_entry([&](unsigned long long x) {
    const uint32_t key = static_cast<uint32_t>(x >> 32);
    if (key >= lo && key <= hi) atomicAdd(&sm.sel.hist[0][(key - lo) >> shift], 1u);
  });
  __syncthreads();
  const bool on[1] = {true};
  SelectResult bin[1];
  {
    const uint32_t r[1] = {rank};  // the first pass only: its histogram is built, so no key is read
    block_select_multi<kRowThreads, 1>(r, on, lo, hi, [](auto&&) {}, sm.sel, 0xffffffffu, true, bin);
  }
  const uint32_t bin_lo = bin[0].thr, bin_hi = bin[0].top, bin_rank = bin[0].take;
  for_each_entry([&](unsigned long long x) {
    const uint32_t key = static_cast<uint32_t>(x >> 32), pos = static_cast<uint32_t>(x);
    if (key > bin_hi) {
      mark(pos);
    } else if (key >= bin_lo) {
      const uint32_t c = atomicAdd(&sm.count, 1u);
      if (c < kResolveCandidates) {
        sm.key[c] = key;
        sm.pos[c] = pos;
      }
    }
  });
  __syncthreads();
  const uint32_t count = sm.count;
  if (count <= static_cast<uint32_t>(kRowThreads)) {
    mark_top_of_small_bin(count, bin_rank, sm.key, sm.pos, mark);
    return;
  }
  // A crowded bin (heavy ties): the radix select over its entries, in shared memory when they
  // fit, else over the band entries in global memory (the select keeps to the bin's key range).
  BandView entries;
  if (count <= kResolveCandidates) {
    entries.s_key = sm.key;
    entries.s_pos = sm.pos;
  } else {
    entries.g = band;
  }
  const uint32_t listed = count <= kResolveCandidates ? count : static_cast<uint32_t>(n);
  uint32_t thr, cut;
  select_in_band(entries, listed, bin_lo, bin_hi, bin_rank, E, sm.row, thr, cut);
  for (uint32_t i = threadIdx.x; i < listed; i += kRowThreads) {
    const uint32_t key = entries.key(i), pos = entries.pos(i);
    if (key >= bin_lo && key <= bin_hi && (key > thr || (key == thr && pos <= cut))) mark(pos);
  }
}

// Step 3 for the block's row. Rows whose bracket missed run the exact select over the whole row
// (slow, correct).
__device__ __forceinline__ void exact_resolve_row(const float* __restrict__ in, int64_t row, int64_t E, int64_t need,
                                                  const SelectWorkspace& ws, int32_t* __restrict__ row_status,
                                                  ExactResolveSmem& sm) {
  uint32_t* mask_row = ws.mask + row * ws.words_per_row;
  int32_t* off_row = ws.tile_off + row * ws.tiles_per_row;
  const int64_t tiles = (E + kTile - 1) / kTile;
  const RowState st = ws.state[row];
  const int64_t def = st.def_count, n = st.band_count;
  const bool band_mode = st.mode == kModeBand;
  const bool hit = band_mode && n <= ws.band_cap && def < need && need <= def + n;
  if (band_mode && !hit) {
    exact_row_fallback(in, E, need, mask_row, sm.row);
    if (threadIdx.x == 0) atomicOr(row_status + row, kRowStatusFallback);
  } else if (hit) {
    const uint32_t lo = static_cast<uint32_t>(st.band_min);  // a band entry exists: both are keys
    const uint32_t hi = st.def_min >= kNoKey ? 0xffffffffu : static_cast<uint32_t>(st.def_min - 1);
    const uint32_t rank = static_cast<uint32_t>(need - def);
    if (tiles * 32 <= kResolveMaskWords) {
      // Kept entries are marked in shared memory (thousands of scattered global atomics per
      // row cost about 1 µs at 131072), then ORed into the mask while the tiles are counted.
      for (int64_t w = threadIdx.x; w < tiles * 32; w += kRowThreads) sm.bits[w] = 0u;
      resolve_band(ws, row, E, n, rank, lo, hi, sm,
                   [&](uint32_t pos) { atomicOr(sm.bits + (pos >> 5), 1u << (pos & 31u)); });
      finalize_tile_offsets(mask_row, off_row, tiles, sm.row, sm.bits);
      return;
    }
    resolve_band(ws, row, E, n, rank, lo, hi, sm,
                 [&](uint32_t pos) { atomicOr(mask_row + (pos >> 5), 1u << (pos & 31u)); });
  }
  finalize_tile_offsets(mask_row, off_row, tiles, sm.row);
}

}  // namespace rakv::kernels::cuda::detail
