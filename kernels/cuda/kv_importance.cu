// Streaming attention-mass importance (SPEC §3; definition in include/rakv/kernels/cuda/
// kv_importance.h): two FlashAttention-style passes over the causal scores, never a T x T tensor.
//
// Both passes are one kernel shape: a CTA of 4 warps holds 128 "stationary" rows in registers
// (each warp 32 rows as two m16 tiles of mma.sync A fragments) and streams 64-row tiles of the
// other operand through shared memory (cp.async, double-buffered, 16-byte chunks XOR-swizzled
// so that ldmatrix is conflict-free), computing a 128 x 64 score tile per step on the tensor
// cores with fp32 accumulation.
//   row pass:    stationary = 128 queries, streamed = keys 0 .. i; online max and sum of
//                2^(s*scale*log2e - m) per row -> lse (base 2) per query.
//   column pass: stationary = 128 keys, streamed = queries i >= j (key-block-major: a CTA owns
//                its keys' sums, so no atomics); p = 2^(s*scale*log2e - lse_i) is added to the
//                key's running sum in registers; one quad reduction at the end.
// Per score: one MMA share, one FFMA, one MUFU.EX2, one FADD (plus a max in the row pass): the
// exponential unit (16/clk/SM) bounds each pass near SDPA's own exp count, so the pair costs
// about two attention forwards. Heavy CTAs (most tiles) are scheduled first.
// fp32 inputs take a plain SIMT kernel pair (tests; O(T^2 D) per head without tensor cores).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "dispatch.cuh"
#include "rakv/kernels/cuda/kv_importance.h"

namespace rakv::kernels::cuda {
namespace detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockX = kWarps * 32;  // stationary rows per CTA (32 per warp)
constexpr int kBlockY = 64;           // streamed rows per tile (one cp.async stage)
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename Elem>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A * B (C = 0): the first k-step of a score tile, so the accumulators need no zeroing.
template <typename Elem>
__device__ __forceinline__ void mma_16816_zero(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816_zero<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}

template <>
__device__ __forceinline__ void mma_16816_zero<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                              uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.f));
}

// Two adjacent 16-bit elements as one 32-bit register (0 outside the sequence).
template <typename Elem>
__device__ __forceinline__ uint32_t load_pair(const Elem* base, int64_t row_stride, int64_t row, int64_t T, int col) {
  if (row >= T) return 0u;
  return __ldg(reinterpret_cast<const unsigned int*>(base + row * row_stride + col));
}

// ------------------------------------------------------------------------------------------------
// Tensor-core kernel (both passes)
// ------------------------------------------------------------------------------------------------

template <typename Elem, int D, bool kColumnPass, int kSub, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    column_mass_mma_kernel(const ColumnMassParams p, int64_t qstart) {
  constexpr int kChunks = D / 8;    // 16-byte chunks per row
  constexpr int kSteps = D / 16;    // k16 steps
  constexpr int kNb = kSub / 8;     // n8 blocks per sub-tile
  constexpr int kSubs = kBlockY / kSub;
  __shared__ __align__(128) Elem s_y[2][kBlockY * D];
  __shared__ float s_lse[2][kBlockY];

  const int64_t T = p.T;
  const int64_t bh = blockIdx.x;
  const int64_t b = bh / p.H, h = bh % p.H;
  const int64_t nblk = (T + kBlockX - 1) / kBlockX;
  const int64_t xblk = kColumnPass ? static_cast<int64_t>(blockIdx.y) : nblk - 1 - blockIdx.y;
  const int64_t x0 = xblk * kBlockX;
  const Elem* q = static_cast<const Elem*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const Elem* k = static_cast<const Elem*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const Elem* X = kColumnPass ? k : q;
  const Elem* Y = kColumnPass ? q : k;
  const int64_t xs = kColumnPass ? p.k_row_stride : p.q_row_stride;
  const int64_t ys = kColumnPass ? p.q_row_stride : p.k_row_stride;
  const float* lse_row = p.lse + bh * T;

  int64_t y_begin, y_end;
  if constexpr (kColumnPass) {
    y_begin = ((x0 > qstart ? x0 : qstart) / kBlockY) * kBlockY;
    y_end = T;
  } else {
    if (x0 + kBlockX - 1 < qstart) return;  // no counted query in this block
    y_begin = 0;
    y_end = x0 + kBlockX < T ? x0 + kBlockX : T;
  }
  const int64_t ntiles = (y_end - y_begin + kBlockY - 1) / kBlockY;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t warp_x0 = x0 + warp * 32;

  // Stationary A fragments: rows warp_x0 + mt*16 + {g, g+8}, columns ks*16 + 2t (+8).
  uint32_t a[2][kSteps][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const int64_t r0 = warp_x0 + mt * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      const int c = ks * 16 + 2 * t;
      a[mt][ks][0] = load_pair(X, xs, r0, T, c);
      a[mt][ks][1] = load_pair(X, xs, r1, T, c);
      a[mt][ks][2] = load_pair(X, xs, r0, T, c + 8);
      a[mt][ks][3] = load_pair(X, xs, r1, T, c + 8);
    }
  }

  auto load_tile = [&](int64_t it, int stage) {
    const int64_t y0 = y_begin + it * kBlockY;
    const uint32_t base = smem_addr(&s_y[stage][0]);
#pragma unroll
    for (int c = threadIdx.x; c < kBlockY * kChunks; c += kThreads) {
      const int row = c / kChunks, ch = c % kChunks;
      const int64_t yr = y0 + row;
      const bool valid = yr < T;
      const Elem* src = Y + (valid ? yr : 0) * ys + ch * 8;
      cp_async_16(base + (row * D + ((ch ^ (row & 7)) * 8)) * 2, src, valid);
    }
    if constexpr (kColumnPass) {
      if (threadIdx.x < kBlockY) {
        const int64_t i = y0 + threadIdx.x;
        const bool valid = i < T && i >= qstart;
        cp_async_4(smem_addr(&s_lse[stage][threadIdx.x]), lse_row + (valid ? i : 0), valid);
      }
    }
  };

  const float sl2 = p.scale * kLog2e;
  // Row pass state (rows mt*16 + g + 8*hh): running max (raw score units) and partial sums.
  float m_run[2][2], l_run[2][2];
  // Column pass state: partial column sums, two per row (even / odd columns) for shorter chains.
  float col[2][2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      m_run[mt][hh] = -INFINITY;
      l_run[mt][hh] = 0.f;
      col[mt][hh][0] = col[mt][hh][1] = 0.f;
    }

  load_tile(0, 0);
  cp_async_commit();
  for (int64_t it = 0; it < ntiles; ++it) {
    const int stage = static_cast<int>(it & 1);
    cp_async_wait_all();
    __syncthreads();
    if (it + 1 < ntiles) load_tile(it + 1, stage ^ 1);
    cp_async_commit();

    const uint32_t ybase = smem_addr(&s_y[stage][0]);
#pragma unroll
    for (int sub = 0; sub < kSubs; ++sub) {
      const int64_t y0 = y_begin + it * kBlockY + sub * kSub;
      // Whole sub-tile masked for this warp?
      if constexpr (kColumnPass) {
        if (y0 + kSub - 1 < warp_x0) continue;  // every query before every key of the warp
      } else {
        if (y0 > warp_x0 + 31) continue;  // every key after every query of the warp
      }

      float acc[2][kNb][4];
#pragma unroll
      for (int nb = 0; nb < kNb; ++nb) {
        const int row = sub * kSub + nb * 8 + (lane & 7);
#pragma unroll
        for (int kg = 0; kg < kSteps / 2; ++kg) {
          const int ch = kg * 4 + (lane >> 3);
          uint32_t bf[4];
          ldmatrix_x4(bf, ybase + (row * D + ((ch ^ (row & 7)) * 8)) * 2);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            if (kg == 0)
              mma_16816_zero<Elem>(acc[mt][nb], a[mt][0], bf[0], bf[1]);
            else
              mma_16816<Elem>(acc[mt][nb], a[mt][2 * kg], bf[0], bf[1]);
            mma_16816<Elem>(acc[mt][nb], a[mt][2 * kg + 1], bf[2], bf[3]);
          }
        }
      }

      // Element (mt, nb, e) of a thread sits at stationary row warp_x0 + mt*16 + g + 8*(e>>1) and
      // streamed row y0 + nb*8 + 2t + (e&1). Masks use 32-bit offsets from the sub-tile corner and
      // run only on sub-tiles that cross the causal diagonal, the window start or the sequence end.
      const int d0 = static_cast<int>(y0 - warp_x0);  // streamed minus stationary, at the corner
      if constexpr (!kColumnPass) {
        const bool masked = (y0 + kSub - 1 > warp_x0) || (y0 + kSub > T);
        auto row_update = [&](auto mask_tag) {
          constexpr bool kMask = decltype(mask_tag)::value;
          if constexpr (kMask) {
            const int tail = static_cast<int>(T - y0);  // streamed offsets >= tail are past the end
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
              for (int nb = 0; nb < kNb; ++nb)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                  const int c = nb * 8 + 2 * t + (e & 1), r = mt * 16 + g + 8 * (e >> 1);
                  if (d0 + c > r || c >= tail) acc[mt][nb][e] = -INFINITY;  // key after query, or past T
                }
          }
          // Row maxima: a tree per row (short dependency chains), then the quad's four lanes.
          float mx[2][2];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              float v[kNb];
#pragma unroll
              for (int nb = 0; nb < kNb; ++nb) v[nb] = fmaxf(acc[mt][nb][2 * hh], acc[mt][nb][2 * hh + 1]);
#pragma unroll
              for (int w = kNb / 2; w > 0; w >>= 1)
#pragma unroll
                for (int nb = 0; nb < w; ++nb) v[nb] = fmaxf(v[nb], v[nb + w]);
              mx[mt][hh] = v[0];
            }
#pragma unroll
          for (int o = 1; o <= 2; o <<= 1)
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
              for (int hh = 0; hh < 2; ++hh)
                mx[mt][hh] = fmaxf(mx[mt][hh], __shfl_xor_sync(0xffffffffu, mx[mt][hh], o));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              const float m_new = fmaxf(m_run[mt][hh], mx[mt][hh]);
              const float mb = kMask && m_new == -INFINITY ? 0.f : m_new * sl2;
              float s0 = 0.f, s1 = 0.f;
#pragma unroll
              for (int nb = 0; nb < kNb; ++nb) {
                s0 += ex2(fmaf(acc[mt][nb][2 * hh], sl2, -mb));
                s1 += ex2(fmaf(acc[mt][nb][2 * hh + 1], sl2, -mb));
              }
              l_run[mt][hh] = fmaf(l_run[mt][hh], ex2(fmaf(m_run[mt][hh], sl2, -mb)), s0 + s1);
              m_run[mt][hh] = m_new;
            }
        };
        if (masked)
          row_update(std::true_type{});
        else
          row_update(std::false_type{});
      } else {
        const bool masked = (y0 < warp_x0 + 31) || (y0 < qstart) || (y0 + kSub > T);
        auto column_update = [&](auto mask_tag) {
          constexpr bool kMask = decltype(mask_tag)::value;
          const int tail = static_cast<int>(T - y0);
          const int head = kColumnPass ? static_cast<int>(qstart - y0) : 0;  // offsets < head: before the window
#pragma unroll
          for (int nb = 0; nb < kNb; ++nb) {
            const float2 lse2 = *reinterpret_cast<const float2*>(&s_lse[stage][sub * kSub + nb * 8 + 2 * t]);
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float li = e ? lse2.y : lse2.x;
              const int c = nb * 8 + 2 * t + e;
#pragma unroll
              for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                  float pr = ex2(fmaf(acc[mt][nb][2 * hh + e], sl2, -li));
                  if constexpr (kMask) {
                    const int r = mt * 16 + g + 8 * hh;
                    if (d0 + c < r || c < head || c >= tail) pr = 0.f;  // query before key, outside window, past T
                  }
                  col[mt][hh][e] += pr;
                }
            }
          }
        };
        if (masked)
          column_update(std::true_type{});
        else
          column_update(std::false_type{});
      }
    }
  }
  cp_async_wait_all();

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int64_t r = warp_x0 + mt * 16 + g + 8 * hh;
      if constexpr (!kColumnPass) {
        float l = l_run[mt][hh];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (t == 0 && r < T && r >= qstart) p.lse[bh * T + r] = fmaf(m_run[mt][hh], sl2, __log2f(l));
      } else {
        float s = col[mt][hh][0] + col[mt][hh][1];
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (t == 0 && r < T) {
          const int64_t first = r > qstart ? r : qstart;
          const float denom = static_cast<float>(p.exposure_correction ? T - first : T - qstart);
          p.importance[bh * T + r] = s / denom;
        }
      }
    }
}

// ------------------------------------------------------------------------------------------------
// fp32 reference kernels (one warp per row / column; tests only)
// ------------------------------------------------------------------------------------------------

constexpr int kSimtWarps = 8;

template <int D>
__global__ void __launch_bounds__(kSimtWarps * 32) row_lse_simt_kernel(const ColumnMassParams p, int64_t qstart) {
  __shared__ float s_q[kSimtWarps][D];
  const int64_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float* q = static_cast<const float*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const float* k = static_cast<const float*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const float sl2 = p.scale * kLog2e;
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * kSimtWarps + warp; i < p.T;
       i += static_cast<int64_t>(gridDim.y) * kSimtWarps) {
    if (i < qstart) continue;
    for (int d = lane; d < D; d += 32) s_q[warp][d] = q[i * p.q_row_stride + d];
    __syncwarp();
    float m = -INFINITY, l = 0.f;
    for (int64_t j = lane; j <= i; j += 32) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) s = fmaf(s_q[warp][d], k[j * p.k_row_stride + d], s);
      const float m_new = fmaxf(m, s);
      l = l * exp2f((m - m_new) * sl2) + exp2f((s - m_new) * sl2);
      m = m_new;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m, o), lo = __shfl_xor_sync(0xffffffffu, l, o);
      const float m_new = fmaxf(m, mo);
      l = (m == -INFINITY ? 0.f : l * exp2f((m - m_new) * sl2)) + (mo == -INFINITY ? 0.f : lo * exp2f((mo - m_new) * sl2));
      m = m_new;
    }
    if (lane == 0) p.lse[bh * p.T + i] = m * sl2 + log2f(l);
    __syncwarp();
  }
}

template <int D>
__global__ void __launch_bounds__(kSimtWarps * 32) column_mass_simt_kernel(const ColumnMassParams p, int64_t qstart) {
  __shared__ float s_k[kSimtWarps][D];
  const int64_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float* q = static_cast<const float*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const float* k = static_cast<const float*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const float sl2 = p.scale * kLog2e;
  for (int64_t j = static_cast<int64_t>(blockIdx.y) * kSimtWarps + warp; j < p.T;
       j += static_cast<int64_t>(gridDim.y) * kSimtWarps) {
    for (int d = lane; d < D; d += 32) s_k[warp][d] = k[j * p.k_row_stride + d];
    __syncwarp();
    const int64_t first = j > qstart ? j : qstart;
    float sum = 0.f;
    for (int64_t i = first + lane; i < p.T; i += 32) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) s = fmaf(q[i * p.q_row_stride + d], s_k[warp][d], s);
      sum += exp2f(s * sl2 - p.lse[bh * p.T + i]);
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
      const float denom = static_cast<float>(p.exposure_correction ? p.T - first : p.T - qstart);
      p.importance[bh * p.T + j] = sum / denom;
    }
    __syncwarp();
  }
}

template <typename Elem, int D>
int launch_column_mass(const ColumnMassParams& p, int64_t qstart, cudaStream_t stream) {
  const int64_t bh = p.B * p.H;
  if constexpr (std::is_same_v<Elem, float>) {
    const int64_t rows_per_block = kSimtWarps;
    const int64_t gy = (p.T + rows_per_block - 1) / rows_per_block;
    const dim3 grid(static_cast<unsigned>(bh), static_cast<unsigned>(gy < 65535 ? gy : 65535));
    row_lse_simt_kernel<D><<<grid, kSimtWarps * 32, 0, stream>>>(p, qstart);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return static_cast<int>(e);
    column_mass_simt_kernel<D><<<grid, kSimtWarps * 32, 0, stream>>>(p, qstart);
    return static_cast<int>(cudaGetLastError());
  } else {
    // Variants (ColumnMassParams::kernel_variant): score sub-tile width and CTAs per SM that the
    // register budget must allow. 0: 32 columns, 4 CTAs (3 for D=128); 1: 64 columns, no bound;
    // 2: 64 columns, 3 CTAs (2 for D=128).
    auto run = [&](auto sub, auto min_blocks) {
      constexpr int kSub = decltype(sub)::value, kMin = decltype(min_blocks)::value;
      const int64_t nblk = (p.T + kBlockX - 1) / kBlockX;
      const dim3 grid(static_cast<unsigned>(bh), static_cast<unsigned>(nblk));
      column_mass_mma_kernel<Elem, D, false, kSub, kMin><<<grid, kThreads, 0, stream>>>(p, qstart);
      cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) return static_cast<int>(e);
      column_mass_mma_kernel<Elem, D, true, kSub, kMin><<<grid, kThreads, 0, stream>>>(p, qstart);
      return static_cast<int>(cudaGetLastError());
    };
    if constexpr (std::is_same_v<Elem, __half>) {
      if (p.kernel_variant == 1) return run(std::integral_constant<int, 64>{}, std::integral_constant<int, 1>{});
      if (p.kernel_variant == 2)
        return run(std::integral_constant<int, 64>{}, std::integral_constant<int, D == 64 ? 3 : 2>{});
    }
    return run(std::integral_constant<int, 32>{}, std::integral_constant<int, D == 64 ? 4 : 3>{});
  }
}

}  // namespace
}  // namespace detail

int streaming_column_mass(const ColumnMassParams& p, Stream stream_handle) {
  using namespace detail;
  clear_error_detail();
  if (p.B < 0 || p.H < 0 || p.T < 0)
    return invalid_argument("streaming_column_mass: negative size B=%lld H=%lld T=%lld", (long long)p.B,
                            (long long)p.H, (long long)p.T);
  if (p.B * p.H == 0 || p.T == 0) return 0;
  if (p.kernel_variant < 0 || p.kernel_variant > 2)
    return invalid_argument("streaming_column_mass: kernel_variant=%d must be 0, 1 or 2", (int)p.kernel_variant);
  if (p.B * p.H > 0x7fffffffLL || (p.T + kBlockX - 1) / kBlockX > 65535)
    return invalid_argument("streaming_column_mass: B*H=%lld or T=%lld too large for the grid",
                            (long long)(p.B * p.H), (long long)p.T);
  if (p.q == nullptr || p.k == nullptr || p.importance == nullptr || p.lse == nullptr)
    return invalid_argument("streaming_column_mass: null pointer");
  if (p.dtype != ElemType::kFloat32) {
    const bool aligned = (reinterpret_cast<uintptr_t>(p.q) % 16 == 0) && (reinterpret_cast<uintptr_t>(p.k) % 16 == 0) &&
                         p.q_batch_stride % 8 == 0 && p.q_head_stride % 8 == 0 && p.q_row_stride % 8 == 0 &&
                         p.k_batch_stride % 8 == 0 && p.k_head_stride % 8 == 0 && p.k_row_stride % 8 == 0;
    if (!aligned)
      return invalid_argument("streaming_column_mass: fp16/bf16 q and k need 16-byte aligned rows "
                              "(pointers 16-byte aligned, strides multiples of 8 elements)");
  }
  const int64_t qstart = (p.window > 0 && p.window < p.T) ? p.T - p.window : 0;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  return RAKV_DISPATCH_ELEM_TYPE(p.dtype, [&] {
    return RAKV_DISPATCH_HEAD_DIM(p.D, [&] { return launch_column_mass<elem_t, kHeadDim>(p, qstart, stream); });
  });
}

}  // namespace rakv::kernels::cuda
