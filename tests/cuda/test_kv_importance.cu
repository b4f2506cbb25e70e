// Checks streaming_column_mass against a float64 CPU reference (computed from the same rounded
// fp16/bf16/fp32 inputs) on random q, k laid out as slices of a fused [B, T, 3, H, D] qkv buffer
// (non-contiguous strides), for odd sizes, windows and both denominators; the output is poisoned
// with NaN first. Then times the tensor-core passes at B=1, H=12, D=64/128, T=16384 and 131072.
//
// Usage: test_kv_importance [--quick] [--no-bench]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "rakv/kernels/cuda/kv_importance.h"
#include "test_util.h"
#include "test_elem_types.h"

namespace kc = rakv::kernels::cuda;
using rakv_test::DeviceBuffer;
using rakv_test::Host;

namespace {

// float64 reference: importance [B*H*T].
std::vector<double> reference(const std::vector<float>& qkv, int64_t B, int64_t H, int64_t T, int64_t D,
                              double scale, int64_t window, bool exposure) {
  const int64_t qstart = (window > 0 && window < T) ? T - window : 0;
  auto at = [&](int64_t b, int64_t t, int64_t which, int64_t h) { return &qkv[(((b * T + t) * 3 + which) * H + h) * D]; };
  std::vector<double> out(B * H * T, 0.0), s(T), lse(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> mass(T, 0.0);
      for (int64_t i = qstart; i < T; ++i) {
        const float* qi = at(b, i, 0, h);
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const float* kj = at(b, j, 1, h);
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(qi[d]) * kj[d];
          s[j] = acc * scale;
          m = std::max(m, s[j]);
        }
        double l = 0;
        for (int64_t j = 0; j <= i; ++j) l += std::exp(s[j] - m);
        for (int64_t j = 0; j <= i; ++j) mass[j] += std::exp(s[j] - m) / l;
      }
      for (int64_t j = 0; j < T; ++j) {
        const double denom = exposure ? static_cast<double>(T - std::max(j, qstart)) : static_cast<double>(T - qstart);
        out[(b * H + h) * T + j] = mass[j] / denom;
      }
    }
  return out;
}

template <typename E>
void check_case(rakv_test::Tally& tally, int64_t B, int64_t H, int64_t T, int D, int64_t window, bool exposure,
                float amplitude, uint64_t seed, int variant = 0) {
  using Bits = typename Host<E>::Bits;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, amplitude);
  const int64_t total = B * T * 3 * H * D;
  std::vector<Bits> bits(total);
  std::vector<float> vals(total);
  for (int64_t i = 0; i < total; ++i) {
    bits[i] = Host<E>::encode(n(rng));
    vals[i] = Host<E>::decode(bits[i]);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const std::vector<double> ref = reference(vals, B, H, T, D, scale, window, exposure);

  DeviceBuffer<Bits> d_qkv(total);
  d_qkv.upload(bits);
  DeviceBuffer<float> d_out(B * H * T), d_lse(B * H * T);
  d_out.fill_bytes(0xff);  // NaN
  d_lse.fill_bytes(0xff);
  kc::ColumnMassParams p;
  p.q = d_qkv.ptr;
  p.k = d_qkv.ptr + H * D;
  p.q_batch_stride = p.k_batch_stride = T * 3 * H * D;
  p.q_head_stride = p.k_head_stride = D;
  p.q_row_stride = p.k_row_stride = 3 * H * D;
  p.importance = d_out.ptr;
  p.lse = d_lse.ptr;
  p.B = B;
  p.H = H;
  p.T = T;
  p.D = D;
  p.dtype = Host<E>::type;
  p.scale = static_cast<float>(scale);
  p.window = window;
  p.exposure_correction = exposure;
  p.kernel_variant = variant;
  LAUNCH_CHECK(kc::streaming_column_mass(p, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> out = d_out.download(B * H * T);
  double num = 0, den = 0, max_err = 0, max_ref = 0;
  bool finite = true;
  for (size_t i = 0; i < out.size(); ++i) {
    finite &= std::isfinite(out[i]);
    const double e = std::fabs(out[i] - ref[i]);
    num += e * e;
    den += ref[i] * ref[i];
    max_err = std::max(max_err, e);
    max_ref = std::max(max_ref, std::fabs(ref[i]));
  }
  const double rel = std::sqrt(num / std::max(den, 1e-300));
  const bool ok = finite && rel < 2e-5 && max_err <= 1e-5 * max_ref + 1e-7;
  char what[256];
  std::snprintf(what, sizeof(what), "importance %s variant=%d B=%lld H=%lld T=%lld D=%d window=%lld exposure=%d amp=%g: rel L2 %.2e, max abs %.2e (max %.2e)%s",
                Host<E>::name, variant, (long long)B, (long long)H, (long long)T, D, (long long)window, exposure ? 1 : 0,
                amplitude, rel, max_err, max_ref, finite ? "" : " NON-FINITE");
  if (ok && T >= 257) std::printf("ok   %s\n", what);
  tally.check(ok, what);
}

template <typename E>
double time_pair(rakv_test::Timer& timer, int64_t H, int64_t T, int D, int reps, cudaStream_t stream, int variant) {
  using Bits = typename Host<E>::Bits;
  const int64_t n = H * T * D;
  std::vector<Bits> h(n);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& x : h) x = Host<E>::encode(dist(rng));
  DeviceBuffer<Bits> q(n), k(n);
  q.upload(h);
  for (auto& x : h) x = Host<E>::encode(dist(rng));
  k.upload(h);
  DeviceBuffer<float> out(H * T), lse(H * T);
  kc::ColumnMassParams p;
  p.q = q.ptr;
  p.k = k.ptr;
  p.q_batch_stride = p.k_batch_stride = H * T * D;
  p.q_head_stride = p.k_head_stride = T * D;
  p.q_row_stride = p.k_row_stride = D;
  p.importance = out.ptr;
  p.lse = lse.ptr;
  p.B = 1;
  p.H = H;
  p.T = T;
  p.D = D;
  p.dtype = Host<E>::type;
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  p.kernel_variant = variant;
  return timer.median_us([&] { LAUNCH_CHECK(kc::streaming_column_mass(p, stream)); }, 1, reps, false, stream);
}

}  // namespace

int main(int argc, char** argv) {
  if (rakv_test::has_flag(argc, argv, "--profile")) {  // one call per variant at T=16384, D=64 (for ncu)
    rakv_test::Timer timer;
    for (int v = 0; v <= 1; ++v) time_pair<__half>(timer, 12, 16384, 64, 1, nullptr, v);
    return 0;
  }
  const bool quick = rakv_test::has_flag(argc, argv, "--quick");
  const bool do_bench = !rakv_test::has_flag(argc, argv, "--no-bench");
  std::printf("device: %s\n", rakv_test::device_name().c_str());
  rakv_test::Tally tally;
  struct Case {
    int64_t B, H, T;
    int D;
    int64_t window;
    bool exposure;
    float amp;
  };
  const Case cases[] = {
      {1, 1, 1, 64, 0, false, 1.f},    {2, 3, 17, 64, 0, true, 1.f},     {1, 2, 64, 128, 0, false, 1.f},
      {2, 2, 100, 64, 50, true, 1.f},  {2, 2, 100, 64, 1, false, 1.f},   {1, 1, 129, 128, 0, true, 1.f},
      {1, 1, 257, 128, 300, true, 2.f}, {1, 2, 1000, 64, 0, false, 1.f}, {1, 2, 1000, 64, 0, true, 3.f},
      {1, 1, 1000, 128, 333, false, 1.f}, {1, 1, 1000, 128, 0, true, 1.f}, {1, 1, 2049, 64, 700, true, 1.f},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    if (quick && c.T > 1000) continue;
    check_case<__half>(tally, c.B, c.H, c.T, c.D, c.window, c.exposure, c.amp, ++seed);
    check_case<__nv_bfloat16>(tally, c.B, c.H, c.T, c.D, c.window, c.exposure, c.amp, ++seed);
    if (c.T <= 1000) check_case<float>(tally, c.B, c.H, c.T, c.D, c.window, c.exposure, c.amp, ++seed);
    if (c.T >= 100) check_case<__half>(tally, c.B, c.H, c.T, c.D, c.window, c.exposure, c.amp, ++seed, 1);
    if (c.T >= 100) check_case<__half>(tally, c.B, c.H, c.T, c.D, c.window, c.exposure, c.amp, ++seed, 2);
  }
  // Unsupported head dim: an error code, no launch.
  {
    kc::ColumnMassParams p;
    DeviceBuffer<uint16_t> x(8 * 96);
    DeviceBuffer<float> o(8), l(8);
    p.q = p.k = x.ptr;
    p.q_row_stride = p.k_row_stride = 96;
    p.importance = o.ptr;
    p.lse = l.ptr;
    p.B = p.H = 1;
    p.T = 8;
    p.D = 96;
    const int rc = kc::streaming_column_mass(p, nullptr);
    tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "96") != nullptr,
                std::string("head dim 96 rejected: ") + kc::last_error_detail());
  }
  std::printf("kv_importance: %d passed, %d failed\n", tally.passed, tally.failed);

  if (do_bench) {
    rakv_test::Timer timer;
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    std::printf("\n| streaming importance (row + column pass), B=1 H=12 | dtype | T | D | variant | time (ms) | causal QK TFLOP/s (2 passes) | exp/s (G) |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    struct Bc {
      int64_t T;
      int D;
      int bf16;
      int reps;
      int tile;
    };
    const Bc bcs[] = {{16384, 64, 0, 20, 0},  {16384, 64, 0, 20, 1},   {16384, 64, 0, 20, 2},
                      {16384, 64, 1, 20, 0},  {16384, 128, 0, 10, 0}, {16384, 128, 0, 10, 1},
                      {16384, 128, 0, 10, 2}, {4096, 64, 0, 50, 0},   {131072, 64, 0, 3, 0}};
    for (const Bc& b : bcs) {
      if (quick && b.T > 20000) continue;
      const double us = b.bf16 ? time_pair<__nv_bfloat16>(timer, 12, b.T, b.D, b.reps, stream, b.tile)
                               : time_pair<__half>(timer, 12, b.T, b.D, b.reps, stream, b.tile);
      const double flops = 2.0 * 12.0 * b.T * static_cast<double>(b.T) * b.D;  // 2 passes x T^2/2 x D x 2
      const double exps = 12.0 * b.T * static_cast<double>(b.T);              // 2 passes x T^2/2
      std::printf("| | %s | %lld | %d | %d | %.3f | %.0f | %.0f |\n", b.bf16 ? "bf16" : "fp16", (long long)b.T, b.D, b.tile, us / 1e3,
                  flops / us / 1e6, exps / us / 1e3);
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
  }
  return tally.failed == 0 ? 0 : 1;
}
