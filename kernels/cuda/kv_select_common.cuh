// The multi-block selection pipeline shared by the exact and the sampling methods.
//
// A row of E eligible positions is cut into chunks of kChunk elements. Four launches:
//  1. per row (method-specific): thresholds. Keys >= def_min are kept outright; keys in
//     [band_min, def_min) form the "band" whose fate is decided in step 3.
//  2. classify (per chunk, one read of the row): writes the kept-outright bits into a bit mask
//     (1 bit per position), appends band entries (key << 32 | position) to the row's band
//     buffer, counts both per row; flags NaN.
//  3. per row (method-specific): decides the band on the band entries alone (a few percent of
//     the row): sets their bits in the mask, then counts the mask's bits per 1024-position tile
//     and scans the counts into each tile's output offset. Rows whose thresholds missed run the exact
//     selection over the whole row instead (slow, correct).
//  4. emit (per chunk, one warp per 1024-position tile): each tile writes the positions of its
//     set bits at its offset: the output is in ascending order without a sort, and the row is
//     read once in all (the second pass reads the 1-bit mask).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "block_primitives.cuh"
#include "rakv/kernels/cuda/kv_select.h"

namespace rakv::kernels::cuda::detail {

constexpr int64_t kChunk = 8192;                // positions per chunk (one classify/emit block)
constexpr int64_t kWordsPerChunk = kChunk / 32;  // mask words per chunk
constexpr int64_t kTile = 1024;                  // positions per warp tile (32 mask words)
constexpr int64_t kTilesPerChunk = kChunk / kTile;
constexpr int kClassifyThreads = 256;           // 8 warps x 1024 positions = one chunk
constexpr int kEmitThreads = 256;               // one mask word per thread = one chunk
constexpr int kRowThreads = 1024;               // per-row kernels

constexpr unsigned long long kNoKey = 1ull << 32;  // a threshold above every key

enum RowMode : uint32_t { kModeBand = 0, kModeNone = 1, kModeAll = 2 };

struct RowState {
  unsigned long long def_min;   // keys >= def_min are kept outright (kNoKey: none)
  unsigned long long band_min;  // keys in [band_min, def_min) are band entries
  uint32_t tau;                 // sampling: the candidate threshold (band split)
  uint32_t mode;                // RowMode
  uint32_t def_count;           // counted by classify
  uint32_t band_count;          // entries appended by classify (may exceed band_cap)
  uint32_t band_hi_count;       // band entries with key >= tau
  uint32_t pad[3];
};

struct SelectWorkspace {
  uint32_t* mask = nullptr;              // [rows, words_per_row] kept bits, bit p%32 of word p/32
  int32_t* tile_off = nullptr;           // [rows, tiles_per_row] output offset of each tile
  RowState* state = nullptr;             // [rows]
  unsigned long long* band = nullptr;    // [rows, band_cap] (key << 32 | position)
  int64_t words_per_row = 0, tiles_per_row = 0, band_cap = 0;
};

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The layout behind kv_select_workspace_bytes; with base == nullptr it only sizes.
inline SelectWorkspace make_workspace(void* base, int64_t rows, int64_t T, int64_t* bytes) {
  SelectWorkspace ws;
  const int64_t chunks = (T + kChunk - 1) / kChunk;
  ws.words_per_row = chunks * kWordsPerChunk;
  ws.tiles_per_row = chunks * kTilesPerChunk;
  ws.band_cap = T < 8192 ? T : (T / 8 > 8192 ? T / 8 : 8192);
  const int64_t mask_bytes = round_up(rows * ws.words_per_row * 4, 256);
  const int64_t off_bytes = round_up(rows * ws.tiles_per_row * 4, 256);
  const int64_t state_bytes = round_up(rows * static_cast<int64_t>(sizeof(RowState)), 256);
  const int64_t band_bytes = round_up(rows * ws.band_cap * 8, 256);
  char* p = static_cast<char*>(base);
  if (p != nullptr) {
    ws.mask = reinterpret_cast<uint32_t*>(p);
    ws.tile_off = reinterpret_cast<int32_t*>(p + mask_bytes);
    ws.state = reinterpret_cast<RowState*>(p + mask_bytes + off_bytes);
    ws.band = reinterpret_cast<unsigned long long*>(p + mask_bytes + off_bytes + state_bytes);
  }
  if (bytes != nullptr) *bytes = mask_bytes + off_bytes + state_bytes + band_bytes;
  return ws;
}

// The argument checks both selection methods share; `op` names the method in the message.
// Ranges first (any row count), then the buffers (only when rows > 0). 0 or a cudaError_t value.
int check_selection_ranges(const SelectionParams& p, const char* op);
int check_selection_buffers(const SelectionParams& p, const char* op);

// Raises func's dynamic shared memory limit to at least `bytes` on the current device (cached,
// so repeated launches make no driver call). Returns a cudaError_t value.
int ensure_dynamic_smem(const void* func, int bytes);
// The device's opt-in shared memory per block (cached per device).
int device_smem_optin(int* bytes);

// Launches `kernel` with programmatic stream serialization (PDL): it may be scheduled while the
// previous kernel in the stream finishes, and waits in wait_for_predecessor() for its results.
// Hides most of the launch gap between the pipeline's steps. Returns a cudaError_t value.
template <typename... KernelArgs, typename... Args>
int launch_dependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                     cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  const cudaError_t e = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) return static_cast<int>(e);
  return static_cast<int>(cudaGetLastError());
}

// Launches of kv_select_common.cu (steps 2 and 4); they return a cudaError_t value.
int launch_classify(const float* importance, int64_t row_stride, int64_t rows, int64_t E,
                    const SelectWorkspace& ws, int32_t* row_status, bool sampling, cudaStream_t stream);
int launch_emit(const SelectWorkspace& ws, int64_t rows, int64_t E, int64_t need, int64_t recent,
                int64_t* out, int64_t out_row_stride, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Per-row device steps (one block of kRowThreads threads per row)
// ---------------------------------------------------------------------------------------------

struct RowSmem {
  SelectSmem<kRowThreads> select;
  uint32_t counts[kRowThreads];
  uint32_t misc[4];
};

// A row's band entries, either in shared memory (keys and positions apart) or in the global
// band buffer (key << 32 | position).
struct BandView {
  const uint32_t* s_key = nullptr;
  const uint32_t* s_pos = nullptr;
  const unsigned long long* g = nullptr;
  __device__ __forceinline__ uint32_t key(int64_t i) const {
    return s_key ? s_key[i] : static_cast<uint32_t>(g[i] >> 32);
  }
  __device__ __forceinline__ uint32_t pos(int64_t i) const {
    return s_key ? s_pos[i] : static_cast<uint32_t>(g[i]);
  }
};

// Copies the row's n band entries into shared memory when they fit (n <= capacity), with many
// loads in flight; the select passes then run on shared memory. Ends with a barrier.
__device__ __forceinline__ BandView load_band(const unsigned long long* band, int64_t n,
                                              uint32_t* s_key, uint32_t* s_pos, int64_t capacity) {
  BandView v;
  if (n > capacity) {
    v.g = band;
    return v;
  }
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) {
    const unsigned long long e = band[i];
    s_key[i] = static_cast<uint32_t>(e >> 32);
    s_pos[i] = static_cast<uint32_t>(e);
  }
  __syncthreads();
  v.s_key = s_key;
  v.s_pos = s_pos;
  return v;
}

// Band entries with thr < key, or key == thr and position <= cut, form the top `rank` of the
// band entries with keys in [lo, hi] (ties to the lower position). Precondition: >= rank such.
__device__ __forceinline__ void select_in_band(const BandView& band, uint32_t n, uint32_t lo,
                                               uint32_t hi, uint32_t rank, int64_t E, RowSmem& sm,
                                               uint32_t& thr, uint32_t& cut) {
  const SelectResult s = block_select<kRowThreads>(
      n, rank, lo, hi,
      [&](int64_t i, uint32_t& key) {
        key = band.key(i);
        return true;
      },
      sm.select);
  thr = s.thr;
  cut = 0xffffffffu;
  if (s.take < s.ties) {
    const uint32_t last = static_cast<uint32_t>(E - 1);
    const SelectResult t = block_select<kRowThreads>(
        n, s.take, 0u, last,
        [&](int64_t i, uint32_t& key) {
          key = last - band.pos(i);
          return band.key(i) == s.thr;
        },
        sm.select);
    cut = last - t.thr;
  }
}

// Sets the mask bit of every band entry with key >= always_min, or (has_thr) key > thr, or
// key == thr and position <= cut.
__device__ __forceinline__ void mark_band(const BandView& band, uint32_t n,
                                          unsigned long long always_min, bool has_thr,
                                          uint32_t thr, uint32_t cut, uint32_t* mask_row) {
  for (uint32_t i = threadIdx.x; i < n; i += kRowThreads) {
    const uint32_t key = band.key(i), pos = band.pos(i);
    const bool keep =
        key >= always_min || (has_thr && (key > thr || (key == thr && pos <= cut)));
    if (keep) atomicOr(mask_row + (pos >> 5), 1u << (pos & 31u));
  }
}

// The exact selection of `need` (0 < need < E) over the whole row, from global memory: rewrites
// every mask word of the row. The slow path (about 8 reads of the row by one block).
__device__ __forceinline__ void exact_row_fallback(const float* __restrict__ in, int64_t E,
                                                   int64_t need, uint32_t* mask_row, RowSmem& sm) {
  const SelectResult s = block_select<kRowThreads>(
      E, static_cast<uint32_t>(need), 0u, 0xffffffffu,
      [&](int64_t i, uint32_t& key) {
        key = float_key(__ldg(in + i));
        return true;
      },
      sm.select);
  uint32_t cut = 0xffffffffu;
  if (s.take < s.ties) {
    const uint32_t last = static_cast<uint32_t>(E - 1);
    const SelectResult t = block_select<kRowThreads>(
        E, s.take, 0u, last,
        [&](int64_t i, uint32_t& key) {
          key = last - static_cast<uint32_t>(i);
          return float_key(__ldg(in + i)) == s.thr;
        },
        sm.select);
    cut = last - t.thr;
  }
  const int64_t words = (E + 31) / 32;
  const uint32_t lane = lane_id();
  for (int64_t w = threadIdx.x >> 5; w < words; w += kRowThreads / 32) {
    const int64_t p = w * 32 + lane;
    bool keep = false;
    if (p < E) {
      const uint32_t key = float_key(__ldg(in + p));
      keep = key > s.thr || (key == s.thr && static_cast<uint32_t>(p) <= cut);
    }
    const uint32_t word = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) mask_row[w] = word;
  }
}

// Counts the mask bits of each 1024-position tile and writes the exclusive scan of the counts
// (each tile's first output slot). Two threads per tile, each loading its 16 words at once, so a
// round of 512 tiles is one L2 round trip. Starts with a barrier, so the block's own mask
// writes are complete; reads the mask through L2 (__ldcg) since this block's atomics went there.
// The row's mask words exist up to whole chunks (zero past E). With `s_bits` (tiles * 32 words
// in shared memory), those bits are first ORed into the mask, which is written back.
__device__ __forceinline__ void finalize_tile_offsets(uint32_t* mask_row, int32_t* off_row, int64_t tiles,
                                                      RowSmem& sm, const uint32_t* s_bits = nullptr) {
  __syncthreads();
  const bool lead = (threadIdx.x & 1u) == 0;
  uint32_t carry = 0;
  for (int64_t c0 = 0; c0 < tiles; c0 += kRowThreads / 2) {
    const int64_t c = c0 + threadIdx.x / 2;
    uint32_t bits = 0;
    if (c < tiles) {
      const int64_t w0 = c * 32 + (threadIdx.x & 1u) * 16;
      uint4* w = reinterpret_cast<uint4*>(mask_row + w0);
      uint4 q[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) q[k] = __ldcg(w + k);
      if (s_bits != nullptr) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint4 b = *reinterpret_cast<const uint4*>(s_bits + w0 + 4 * k);
          q[k].x |= b.x;
          q[k].y |= b.y;
          q[k].z |= b.z;
          q[k].w |= b.w;
          w[k] = q[k];
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) bits += __popc(q[k].x) + __popc(q[k].y) + __popc(q[k].z) + __popc(q[k].w);
    }
    bits += __shfl_xor_sync(0xffffffffu, bits, 1);
    uint32_t total;
    const uint32_t before = block_exclusive_scan<kRowThreads>(lead ? bits : 0u, total, sm.select.scan);
    if (lead && c < tiles) off_row[c] = static_cast<int32_t>(carry + before);
    carry += total;
  }
}

}  // namespace rakv::kernels::cuda::detail
