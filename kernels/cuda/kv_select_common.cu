// Steps 2 (classify) and 4 (emit) of the multi-block selection pipeline (kv_select_common.cuh),
// shared by the exact and the sampling methods, and the workspace size.
#include "rakv/kernels/cuda/kv_select.h"

#include <mutex>
#include <type_traits>
#include <vector>

#include "dispatch.cuh"
#include "kv_select_common.cuh"

namespace rakv::kernels::cuda {
namespace detail {

// ------------------------------------------------------------------------------------------------
// Kernels
// ------------------------------------------------------------------------------------------------

// The float f with, for every non-NaN value x, x >= f exactly when float_key(x) >= key: the
// inverse of float_key, -inf below key(-inf) (every value passes) and a NaN above key(+inf) (no
// value passes; an ordered compare with a NaN is false). Key 0x7fffffff, which no value has,
// maps to -0, and x >= -0 holds for both zeros, like their key 0x80000000 >= 0x7fffffff.
__device__ __forceinline__ float key_bound_float(uint32_t key) {
  if (key <= 0x007fffffu) return -INFINITY;
  return __uint_as_float(key & 0x80000000u ? key ^ 0x80000000u : ~key);
}

// One block per (row, chunk). Warp w covers the tile [chunk*kChunk + w*1024, +1024), lane l
// position +j*32+l in step j: coalesced 128-byte loads (32 in flight per thread) whose ballots
// are exactly the mask words. The row was complete when the per-row step allowed this grid to
// start (that step waits for its own predecessor first, or is a plain launch), so the loads are
// issued before waiting for that step's results and overlap its work. About five instructions
// per step of 32 positions (two compares, two ballots, one shared store): tiles without a NaN
// compare values as floats against the thresholds turned back into floats (no keys); a tile
// with a NaN compares keys, where NaNs have an order. Lane 0 parks each step's ballots in
// shared memory and lane j picks up word j, instead of every lane selecting every ballot. Band
// entries (a few percent) are then written by the lane that owns their word, from a copy of the
// tile's values in shared memory. The row is loaded with an evict-first hint: read once, it
// should leave L2 before the band entries, which the resolve step reads next.
template <bool kSampling>
__global__ void __launch_bounds__(kClassifyThreads)
    classify_kernel(const float* __restrict__ importance, int64_t row_stride, int64_t E,
                    SelectWorkspace ws, int32_t* __restrict__ row_status) {
  const int64_t row = blockIdx.x, chunk = blockIdx.y;
  const uint32_t lane = lane_id(), warp = threadIdx.x >> 5;
  const int64_t first = chunk * kChunk + warp * kTile;
  const float* in = importance + row * row_stride + first;
  const int64_t left = E - first;
  const int valid_n = left >= kTile ? static_cast<int>(kTile) : (left > 0 ? static_cast<int>(left) : 0);

  float v[32];
  const float* lane_in = in + lane;
  if (valid_n == kTile) {
#pragma unroll
    for (int j = 0; j < 32; ++j) v[j] = __ldcs(lane_in + j * 32);
  } else {
#pragma unroll
    for (int j = 0; j < 32; ++j)
      v[j] = j * 32 + static_cast<int>(lane) < valid_n ? __ldcs(lane_in + j * 32) : 0.f;
  }
  bool lane_nan = false;  // x != x only for a NaN; two per instruction (an unordered compare)
#pragma unroll
  for (int j = 0; j < 32; j += 2) lane_nan |= (v[j] != v[j]) | (v[j + 1] != v[j + 1]);

  wait_for_predecessor();
  allow_dependents();
  const RowState& st = ws.state[row];
  // kNoKey becomes 0xffffffff, which only a NaN key reaches (and a NaN row is an error anyway).
  const uint32_t def32 = st.def_min >= kNoKey ? 0xffffffffu : static_cast<uint32_t>(st.def_min);
  const uint32_t band32 = st.band_min >= kNoKey ? 0xffffffffu : static_cast<uint32_t>(st.band_min);
  const uint32_t tau = st.tau;

  using Words = std::conditional_t<kSampling, uint4, uint2>;  // def, band or def (, tau or above)
  __shared__ Words s_words[kClassifyThreads / 32][32];
  auto park_words = [&](auto at_least_def, auto at_least_band, auto at_least_tau) {
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      Words w{};
      w.x = __ballot_sync(0xffffffffu, at_least_def(v[j]));
      w.y = __ballot_sync(0xffffffffu, at_least_band(v[j]));
      if constexpr (kSampling) w.z = __ballot_sync(0xffffffffu, at_least_tau(v[j]));
      if (lane == 0) s_words[warp][j] = w;
    }
  };
  const bool tile_nan = __any_sync(0xffffffffu, lane_nan);
  if (tile_nan) {
    park_words([&](float x) { return float_key(x) >= def32; },
               [&](float x) { return float_key(x) >= band32; },
               [&](float x) { return float_key(x) >= tau; });
  } else {
    const float def_f = key_bound_float(def32), band_f = key_bound_float(band32);
    const float tau_f = key_bound_float(tau);
    park_words([&](float x) { return x >= def_f; }, [&](float x) { return x >= band_f; },
               [&](float x) { return x >= tau_f; });
  }
  __syncwarp();
  const Words words = s_words[warp][lane];
  const int valid_bits = valid_n - 32 * static_cast<int>(lane);  // padding loaded as 0: masked off
  const uint32_t valid =
      valid_bits >= 32 ? 0xffffffffu : (valid_bits > 0 ? (1u << valid_bits) - 1u : 0u);
  const uint32_t def_word = words.x & valid;
  const uint32_t band_word = words.y & ~words.x & valid;
  uint32_t hi_word = 0;
  if constexpr (kSampling) hi_word = words.z & band_word;
  // The tile's values in position order, for the lanes that write its band entries (the row was
  // read with an evict-first hint, so reading it again could go to device memory).
  __shared__ float s_values[kClassifyThreads / 32][kTile];
  if (__any_sync(0xffffffffu, band_word != 0)) {
#pragma unroll
    for (int j = 0; j < 32; ++j) s_values[warp][j * 32 + lane] = v[j];
  }

  ws.mask[row * ws.words_per_row + chunk * kWordsPerChunk + warp * 32 + lane] = def_word;
  if (tile_nan && lane == 0) atomicOr(row_status + row, kRowStatusNaN);

  const uint32_t def_count = warp_sum(static_cast<uint32_t>(__popc(def_word)));
  const uint32_t my_band = static_cast<uint32_t>(__popc(band_word));
  const uint32_t band_incl = warp_inclusive_scan(my_band);
  const uint32_t band_count = __shfl_sync(0xffffffffu, band_incl, 31);
  const uint32_t hi_count = kSampling ? warp_sum(static_cast<uint32_t>(__popc(hi_word))) : 0u;
  __shared__ uint32_t s_band[kClassifyThreads / 32];
  __shared__ uint32_t s_def[kClassifyThreads / 32], s_hi[kClassifyThreads / 32];
  __shared__ uint32_t s_band_base;
  if (lane == 0) {
    s_band[warp] = band_count;
    s_def[warp] = def_count;
    s_hi[warp] = hi_count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t d = 0, b = 0, h = 0;
    for (int w = 0; w < kClassifyThreads / 32; ++w) {
      const uint32_t bw = s_band[w];
      s_band[w] = b;  // exclusive offsets
      b += bw;
      d += s_def[w];
      h += s_hi[w];
    }
    if (d) atomicAdd(&ws.state[row].def_count, d);
    if (h) atomicAdd(&ws.state[row].band_hi_count, h);
    s_band_base = b ? atomicAdd(&ws.state[row].band_count, b) : 0u;
  }
  __syncthreads();
  if (band_word == 0) return;
  unsigned long long* band = ws.band + row * ws.band_cap;
  const uint64_t cap = static_cast<uint64_t>(ws.band_cap);
  uint64_t slot = static_cast<uint64_t>(s_band_base) + s_band[warp] + (band_incl - my_band);
  const float* word_values = s_values[warp] + lane * 32;
  const uint32_t pos0 = static_cast<uint32_t>(first) + lane * 32;
  for (uint32_t bits = band_word; bits != 0; bits &= bits - 1u, ++slot) {
    const uint32_t bit = static_cast<uint32_t>(__ffs(bits)) - 1u;
    const uint32_t key = float_key(word_values[bit]);
    if (slot < cap) band[slot] = (static_cast<unsigned long long>(key) << 32) | (pos0 + bit);
  }
}

// One block per (row, chunk), one warp per 1024-position tile, no block barrier: the warp loads
// its 32 mask words and the tile's output offset together, scans the bit counts, gathers the
// kept positions in order in shared memory (lane l writes the set bits of word l), then
// copies them out as int64 with 16-byte stores, so every output sector is written whole, once.
// The stores are marked evict-first: the output is not read again here, and should leave L2
// before the workspace does.
__global__ void __launch_bounds__(kEmitThreads)
    emit_kernel(SelectWorkspace ws, int64_t E, int64_t need, int64_t recent,
                int64_t* __restrict__ out, int64_t out_row_stride) {
  wait_for_predecessor();
  allow_dependents();
  __shared__ __align__(16) uint16_t s_pos[kEmitThreads / 32][kTile];  // positions within the tile
  const int64_t row = blockIdx.x, chunk = blockIdx.y;
  const uint32_t lane = lane_id(), warp = threadIdx.x >> 5;
  if (chunk == 0) {
    int64_t* out_row = out + row * out_row_stride;
    for (int64_t t = threadIdx.x; t < recent; t += kEmitThreads) out_row[need + t] = E + t;
  }
  const int64_t tile = chunk * kTilesPerChunk + warp;
  if (tile * kTile >= E) return;  // warp-uniform; no block barrier below
  const int64_t words = (E + 31) / 32;
  const int64_t w = tile * 32 + lane;
  const uint32_t word = w < words ? ws.mask[row * ws.words_per_row + w] : 0u;
  const int64_t o0 = ws.tile_off[row * ws.tiles_per_row + tile];
  const uint32_t count = static_cast<uint32_t>(__popc(word));
  const uint32_t incl = warp_inclusive_scan(count);
  const uint32_t before = incl - count;
  const int64_t total = __shfl_sync(0xffffffffu, incl, 31);
  uint16_t* sp = s_pos[warp];
  // Each lane walks the set bits of its own word (about 4 instructions per kept position; the
  // warp runs as many steps as its fullest word has bits), in position order.
  uint32_t at = before;
  const uint16_t pos0 = static_cast<uint16_t>(lane * 32);
  for (uint32_t bits = word; bits != 0; bits &= bits - 1u, ++at) {
    sp[at] = static_cast<uint16_t>(pos0 + __ffs(bits) - 1);
  }
  __syncwarp();
  int64_t n = total;
  if (o0 + n > need) n = need > o0 ? need - o0 : 0;  // never past the row (trusted offsets)
  int64_t* dst = out + row * out_row_stride + o0;
  const int64_t base = tile * kTile;
  const int head = (reinterpret_cast<uintptr_t>(dst) & 15u) ? 1 : 0;  // one int64 to reach 16 bytes
  if (lane == 0 && head && n > 0) __stcs(dst, base + sp[0]);
  for (int64_t q = head + 2 * lane; q + 1 < n; q += 64) {
    longlong2 v;
    v.x = base + sp[q];
    v.y = base + sp[q + 1];
    __stcs(reinterpret_cast<longlong2*>(dst + q), v);
  }
  if (lane == 0 && n > head && ((n - head) & 1)) __stcs(dst + n - 1, base + sp[n - 1]);
}

// ------------------------------------------------------------------------------------------------
// Launchers
// ------------------------------------------------------------------------------------------------

namespace {
std::mutex g_attr_mutex;
struct FuncLimit {
  const void* func;
  int device;
  int bytes;
};
std::vector<FuncLimit> g_func_limits;
int g_optin[64] = {};
}  // namespace

int device_smem_optin(int* bytes) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return static_cast<int>(e);
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  if (device < 0 || device >= 64) return static_cast<int>(cudaErrorInvalidDevice);
  if (g_optin[device] == 0) {
    e = cudaDeviceGetAttribute(&g_optin[device], cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  *bytes = g_optin[device];
  return 0;
}

int check_selection_ranges(const SelectionParams& p, const char* op) {
  if (p.rows < 0 || p.T < 1 || p.T >= (int64_t(1) << 31))
    return invalid_argument("%s: rows=%lld, T=%lld out of range (rows >= 0, 1 <= T < 2^31)", op, (long long)p.rows,
                            (long long)p.T);
  if (p.k_keep < 0 || p.k_keep > p.T || p.recency < 0)
    return invalid_argument("%s: k_keep=%lld must be in [0, T=%lld], recency=%lld >= 0", op, (long long)p.k_keep,
                            (long long)p.T, (long long)p.recency);
  // The multi-block grids are (rows, chunks of the row): at most 65535 chunks (a grid's second
  // dimension).
  if ((p.T + kChunk - 1) / kChunk > 65535)
    return invalid_argument("%s: T=%lld is above the longest row, %lld", op, (long long)p.T,
                            (long long)(65535 * kChunk));
  return 0;
}

int check_selection_buffers(const SelectionParams& p, const char* op) {
  if (p.importance == nullptr || p.out == nullptr || p.row_status == nullptr || p.workspace == nullptr ||
      p.row_stride < p.T || p.out_row_stride < p.k_keep)
    return invalid_argument("%s: null pointer or row stride below the row length", op);
  return 0;
}

int ensure_dynamic_smem(const void* func, int bytes) {
  // Set even below 48 KiB: the default limit covers static + dynamic shared memory together, so a
  // kernel with static shared memory fails to launch ("invalid argument") once the sum passes it
  // (seen at T = 10240 before this).
  if (bytes <= 0) return 0;
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return static_cast<int>(e);
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  for (FuncLimit& f : g_func_limits)
    if (f.func == func && f.device == device) {
      if (f.bytes >= bytes) return 0;
      e = cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      if (e == cudaSuccess) f.bytes = bytes;
      return static_cast<int>(e);
    }
  e = cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) g_func_limits.push_back({func, device, bytes});
  return static_cast<int>(e);
}

int launch_classify(const float* importance, int64_t row_stride, int64_t rows, int64_t E,
                    const SelectWorkspace& ws, int32_t* row_status, bool sampling, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((E + kChunk - 1) / kChunk));
  if (sampling)
    return launch_dependent(classify_kernel<true>, grid, dim3(kClassifyThreads), 0, stream, importance,
                            row_stride, E, ws, row_status);
  return launch_dependent(classify_kernel<false>, grid, dim3(kClassifyThreads), 0, stream, importance,
                          row_stride, E, ws, row_status);
}

int launch_emit(const SelectWorkspace& ws, int64_t rows, int64_t E, int64_t need, int64_t recent,
                int64_t* out, int64_t out_row_stride, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((E + kChunk - 1) / kChunk));
  return launch_dependent(emit_kernel, grid, dim3(kEmitThreads), 0, stream, ws, E, need, recent, out,
                          out_row_stride);
}

}  // namespace detail

size_t kv_select_workspace_bytes(int64_t rows, int64_t T) {
  if (rows <= 0 || T <= 0) return 256;
  int64_t bytes = 0;
  detail::make_workspace(nullptr, rows, T, &bytes);
  return static_cast<size_t>(bytes);
}

}  // namespace rakv::kernels::cuda
