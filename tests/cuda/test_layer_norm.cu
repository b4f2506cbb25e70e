// Checks the LayerNorm kernels against a float64 CPU reference computed from the same rounded
// inputs: y, mean, rstd, and dx, dweight, dbias for a random output gradient, for every
// supported type combination, widths from 4 to 2048 (and widths that leave lanes idle), and row
// counts that make the backward's warps loop over several rows. Outputs are poisoned with NaN
// first. Unsupported widths and types are refused. Then times GPT-2's shape (N = 16384, C = 768,
// float32 x, bf16 y).
//
// Usage: test_layer_norm [--quick] [--no-bench]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "rakv/kernels/cuda/layer_norm.h"
#include "test_elem_types.h"
#include "test_util.h"

namespace kc = rakv::kernels::cuda;
using rakv_test::DeviceBuffer;
using rakv_test::Host;

namespace {

template <typename E>
struct Tensor {
  std::vector<typename Host<E>::Bits> bits;
  std::vector<double> values;  // what the kernel reads
  Tensor(size_t n, std::mt19937_64& rng, float mean, float stddev) : bits(n), values(n) {
    std::normal_distribution<float> normal(mean, stddev);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = Host<E>::encode(normal(rng));
      values[i] = Host<E>::decode(bits[i]);
    }
  }
};

// Relative tolerance of a value stored in E (its rounding) plus float arithmetic.
template <typename E>
double tolerance() {
  return Host<E>::type == kc::ElemType::kFloat32 ? 2e-5 : Host<E>::type == kc::ElemType::kFloat16 ? 2e-3 : 1.6e-2;
}

template <typename X, typename W, typename Y>
void check_case(rakv_test::Tally& tally, int64_t N, int C, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const float eps = 1e-5f;
  Tensor<X> x(N * C, rng, 0.3f, 2.f);
  Tensor<W> w(C, rng, 1.f, 0.5f), b(C, rng, 0.f, 0.5f);
  Tensor<Y> dy(N * C, rng, 0.f, 1.f);
  DeviceBuffer<typename Host<X>::Bits> d_x(N * C), d_dx(N * C);
  DeviceBuffer<typename Host<W>::Bits> d_w(C), d_b(C), d_dw(C), d_db(C);
  DeviceBuffer<typename Host<Y>::Bits> d_y(N * C), d_dy(N * C);
  DeviceBuffer<float> d_mean(N), d_rstd(N), d_ws(kc::layer_norm_backward_workspace_floats(N, C));
  d_x.upload(x.bits);
  d_w.upload(w.bits);
  d_b.upload(b.bits);
  d_dy.upload(dy.bits);
  for (auto* buf : {&d_mean, &d_rstd}) buf->fill_bytes(0xff);
  d_y.fill_bytes(0xff);
  d_dx.fill_bytes(0xff);
  d_dw.fill_bytes(0xff);
  d_db.fill_bytes(0xff);
  kc::LayerNormParams p;
  p.x = d_x.ptr;
  p.weight = d_w.ptr;
  p.bias = d_b.ptr;
  p.y = d_y.ptr;
  p.mean = d_mean.ptr;
  p.rstd = d_rstd.ptr;
  p.dy = d_dy.ptr;
  p.dx = d_dx.ptr;
  p.dweight = d_dw.ptr;
  p.dbias = d_db.ptr;
  p.workspace = d_ws.ptr;
  p.rows = N;
  p.cols = C;
  p.eps = eps;
  p.x_type = Host<X>::type;
  p.weight_type = Host<W>::type;
  p.y_type = Host<Y>::type;
  LAUNCH_CHECK(kc::layer_norm_forward(p, nullptr));
  LAUNCH_CHECK(kc::layer_norm_backward(p, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = d_y.download(N * C);
  const auto dx = d_dx.download(N * C);
  const auto dw = d_dw.download(C), db = d_db.download(C);
  const auto mean = d_mean.download(N), rstd = d_rstd.download(N);

  std::vector<double> ref_dw(C, 0.0), ref_db(C, 0.0), xhat(C), g(C);
  int64_t bad = 0;
  double worst = 0;
  auto expect = [&](double got, double ref, double scale, double tol) {
    const double err = std::fabs(got - ref) / std::max(std::fabs(ref), scale);
    worst = std::max(worst, err);
    bad += !(err <= tol);  // NaN (poison) fails
  };
  for (int64_t r = 0; r < N; ++r) {
    const double* xr = &x.values[r * C];
    double m = 0, var = 0;
    for (int c = 0; c < C; ++c) m += xr[c];
    m /= C;
    for (int c = 0; c < C; ++c) var += (xr[c] - m) * (xr[c] - m);
    const double rs = 1.0 / std::sqrt(var / C + eps);
    expect(mean[r], m, 1.0, 1e-5);
    expect(rstd[r], rs, 1.0, 1e-5);
    double mean_g = 0, mean_gx = 0;
    for (int c = 0; c < C; ++c) {
      xhat[c] = (xr[c] - m) * rs;
      const double d = dy.values[r * C + c];
      expect(Host<Y>::decode(y[r * C + c]), xhat[c] * w.values[c] + b.values[c], 1.0, tolerance<Y>());
      ref_dw[c] += d * xhat[c];
      ref_db[c] += d;
      g[c] = d * w.values[c];
      mean_g += g[c];
      mean_gx += g[c] * xhat[c];
    }
    mean_g /= C;
    mean_gx /= C;
    for (int c = 0; c < C; ++c) {
      const double ref = rs * (g[c] - mean_g - xhat[c] * mean_gx);
      expect(Host<X>::decode(dx[r * C + c]), ref, rs * 0.1, tolerance<X>());
    }
  }
  const double sum_scale = std::sqrt(static_cast<double>(N));  // size of a sum of N unit terms
  for (int c = 0; c < C; ++c) {
    expect(Host<W>::decode(dw[c]), ref_dw[c], sum_scale, tolerance<W>());
    expect(Host<W>::decode(db[c]), ref_db[c], sum_scale, tolerance<W>());
  }
  char what[200];
  std::snprintf(what, sizeof(what), "layer_norm x=%s w=%s y=%s N=%lld C=%d: %lld bad, worst rel %.2e", Host<X>::name,
                Host<W>::name, Host<Y>::name, (long long)N, C, (long long)bad, worst);
  tally.check(bad == 0, what);
  if (bad == 0) std::printf("ok   %s\n", what);
}

void check_rejected(rakv_test::Tally& tally) {
  kc::LayerNormParams p;
  DeviceBuffer<float> buf(4096);
  p.x = p.weight = p.bias = buf.ptr;
  p.y = buf.ptr;
  p.mean = p.rstd = buf.ptr;
  p.rows = 1;
  for (int C : {6, 2052, 0}) {
    p.cols = C;
    const int rc = kc::layer_norm_forward(p, nullptr);
    tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "unsupported LayerNorm"),
                "C = " + std::to_string(C) + " rejected: " + kc::last_error_detail());
  }
  p.cols = 64;
  p.x_type = kc::ElemType::kBFloat16;
  p.y_type = kc::ElemType::kFloat32;
  const int rc = kc::layer_norm_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue, std::string("bf16 x with float32 y rejected: ") + kc::last_error_detail());
}

void bench(rakv_test::Timer& timer, int64_t N, int C, cudaStream_t stream) {
  std::mt19937_64 rng(3);
  Tensor<float> x(N * C, rng, 0.f, 1.f), w(C, rng, 1.f, 0.1f);
  Tensor<__nv_bfloat16> dy(N * C, rng, 0.f, 1.f);
  DeviceBuffer<uint32_t> d_x(N * C), d_dx(N * C), d_w(C), d_dw(C), d_db(C);
  DeviceBuffer<uint16_t> d_y(N * C), d_dy(N * C);
  DeviceBuffer<float> d_mean(N), d_rstd(N), d_ws(kc::layer_norm_backward_workspace_floats(N, C));
  d_x.upload(x.bits);
  d_w.upload(w.bits);
  d_dy.upload(dy.bits);
  kc::LayerNormParams p;
  p.x = d_x.ptr;
  p.weight = p.bias = d_w.ptr;
  p.y = d_y.ptr;
  p.mean = d_mean.ptr;
  p.rstd = d_rstd.ptr;
  p.dy = d_dy.ptr;
  p.dx = d_dx.ptr;
  p.dweight = d_dw.ptr;
  p.dbias = d_db.ptr;
  p.workspace = d_ws.ptr;
  p.rows = N;
  p.cols = C;
  p.y_type = kc::ElemType::kBFloat16;
  const double fwd = timer.median_us([&] { LAUNCH_CHECK(kc::layer_norm_forward(p, stream)); }, 3, 30, true, stream);
  const double bwd = timer.median_us([&] { LAUNCH_CHECK(kc::layer_norm_backward(p, stream)); }, 3, 30, true, stream);
  const double fwd_bytes = N * C * (4.0 + 2.0), bwd_bytes = N * C * (4.0 + 2.0 + 4.0);
  std::printf("| | x float32, y bf16 | %lld | %d | %.1f | %.0f | %.1f | %.0f |\n", (long long)N, C, fwd, fwd_bytes / fwd / 1e3,
              bwd, bwd_bytes / bwd / 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = rakv_test::has_flag(argc, argv, "--quick");
  const bool do_bench = !rakv_test::has_flag(argc, argv, "--no-bench");
  std::printf("device: %s\n", rakv_test::device_name().c_str());
  rakv_test::Tally tally;
  struct Case {
    int64_t N;
    int C;
  };
  const Case cases[] = {{1, 4}, {3, 64}, {5, 132}, {33, 768}, {4100, 768}, {7, 1000}, {9, 1600}, {6, 2048}, {2500, 256}};
  uint64_t seed = 40;
  for (const Case& c : cases) {
    if (quick && c.N * c.C > 300000) continue;
    check_case<float, float, float>(tally, c.N, c.C, ++seed);
    check_case<float, float, __nv_bfloat16>(tally, c.N, c.C, ++seed);
    check_case<float, float, __half>(tally, c.N, c.C, ++seed);
    check_case<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16>(tally, c.N, c.C, ++seed);
    check_case<__nv_bfloat16, float, __nv_bfloat16>(tally, c.N, c.C, ++seed);
    check_case<__half, __half, __half>(tally, c.N, c.C, ++seed);
    check_case<__half, float, __half>(tally, c.N, c.C, ++seed);
  }
  check_rejected(tally);
  std::printf("layer_norm: %d passed, %d failed\n", tally.passed, tally.failed);
  if (do_bench) {
    rakv_test::Timer timer;
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    std::printf("\n| LayerNorm | types | N | C | forward (us) | forward GB/s | backward (us) | backward GB/s |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    bench(timer, 16384, 768, stream);
    if (!quick) bench(timer, 16384, 1024, stream);
    CUDA_CHECK(cudaStreamDestroy(stream));
  }
  return tally.failed == 0 ? 0 : 1;
}
