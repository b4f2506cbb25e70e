// Checks the gate fold kernels against a float64 CPU reference computed from the same rounded
// inputs: the folded weight, the weight's gradient and both gates' gradients, for shared and
// per-head gates, every supported type pair, a gate below the 1e-8 floor (no gradient), and
// several widths and ranks (RA); and the R-MLP column fold for several splits (all standard, all
// reciprocal, GPT-2's 3008 of 3072). Outputs are poisoned with NaN first. Bad shapes are refused.
//
// Usage: test_gate_fold [--quick] [--no-bench]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "rakv/kernels/cuda/reciprocal_gate_fold.h"
#include "test_elem_types.h"
#include "test_util.h"

namespace kc = rakv::kernels::cuda;
using rakv_test::DeviceBuffer;
using rakv_test::Host;

namespace {

template <typename E>
double tolerance() {
  return Host<E>::type == kc::ElemType::kFloat32 ? 1e-6 : Host<E>::type == kc::ElemType::kFloat16 ? 1e-3 : 8e-3;
}

// Values below which a type's absolute error counts (fp16 flushes the 1e-8-floored rows to its
// subnormals).
template <typename E>
double floor_of() {
  return Host<E>::type == kc::ElemType::kFloat16 ? 1e-4 : 1e-30;
}

template <typename W, typename F>
void check_case(rakv_test::Tally& tally, int64_t C, int64_t H, int64_t R, int64_t G, uint64_t seed) {
  using WB = typename Host<W>::Bits;
  using FB = typename Host<F>::Bits;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.05f, 1.5f);
  const int64_t rows = 3 * C, D = C / H;
  std::vector<WB> w_bits(rows * C);
  std::vector<double> w(rows * C);
  for (int64_t i = 0; i < rows * C; ++i) {
    w_bits[i] = Host<W>::encode(normal(rng));
    w[i] = Host<W>::decode(w_bits[i]);
  }
  std::vector<FB> g_bits(rows * C);
  std::vector<double> g(rows * C);
  for (int64_t i = 0; i < rows * C; ++i) {
    g_bits[i] = Host<F>::encode(normal(rng));
    g[i] = Host<F>::decode(g_bits[i]);
  }
  std::vector<float> w_std(G), w_rec(G);
  for (auto& v : w_std) v = uniform(rng);
  for (auto& v : w_rec) v = uniform(rng);
  w_rec[0] = -0.5f;  // below the floor: scale 1e-8, no gradient
  DeviceBuffer<WB> d_w(rows * C), d_gw(rows * C);
  DeviceBuffer<FB> d_f(rows * C), d_g(rows * C);
  DeviceBuffer<float> d_std(G), d_rec(G), d_gstd(G), d_grec(G), d_ws(C);
  d_w.upload(w_bits);
  d_g.upload(g_bits);
  d_std.upload(w_std);
  d_rec.upload(w_rec);
  d_f.fill_bytes(0xff);
  d_gw.fill_bytes(0xff);
  d_gstd.fill_bytes(0xff);
  d_grec.fill_bytes(0xff);
  kc::GateFoldParams p;
  p.weight = d_w.ptr;
  p.w_std = d_std.ptr;
  p.w_rec = d_rec.ptr;
  p.folded = d_f.ptr;
  p.grad_folded = d_g.ptr;
  p.grad_weight = d_gw.ptr;
  p.grad_w_std = d_gstd.ptr;
  p.grad_w_rec = d_grec.ptr;
  p.workspace = d_ws.ptr;
  p.n_embd = C;
  p.n_head = H;
  p.reciprocal_rank = R;
  p.gates = G;
  p.weight_type = Host<W>::type;
  p.folded_type = Host<F>::type;
  LAUNCH_CHECK(kc::reciprocal_gate_fold_forward(p, nullptr));
  LAUNCH_CHECK(kc::reciprocal_gate_fold_backward(p, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto folded = d_f.download(rows * C);
  const auto grad_w = d_gw.download(rows * C);
  const auto grad_std = d_gstd.download(G), grad_rec = d_grec.download(G);

  int64_t bad = 0;
  double worst = 0;
  auto expect = [&](double got, double ref, double scale, double tol) {
    const double err = std::fabs(got - ref) / std::max(std::fabs(ref), scale);
    worst = std::max(worst, err);
    bad += !(err <= tol);
  };
  std::vector<double> ref_std(G, 0.0), ref_rec(G, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double s2 = 1.0;
    int64_t gate = -1;
    bool reciprocal = false;
    if (r < C) {
      gate = G == 1 ? 0 : r / D;
      reciprocal = r % D >= D - R;
      s2 = std::max<double>(reciprocal ? w_rec[gate] : w_std[gate], 1e-8f);
    }
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      expect(Host<F>::decode(folded[i]), w[i] * s2, floor_of<F>(), tolerance<F>());
      expect(Host<W>::decode(grad_w[i]), g[i] * s2, floor_of<W>(), tolerance<W>());
      dot += g[i] * w[i];
    }
    if (gate >= 0) (reciprocal ? ref_rec : ref_std)[gate] += dot;
  }
  for (int64_t k = 0; k < G; ++k) {
    const double scale = std::sqrt(double(C) * C / G);  // size of a sum of that many unit terms
    expect(grad_std[k], ref_std[k], scale, 1e-4);
    expect(grad_rec[k], w_rec[k] >= 1e-8f ? ref_rec[k] : 0.0, scale, 1e-4);
  }
  char what[200];
  std::snprintf(what, sizeof(what), "gate fold weight=%s folded=%s C=%lld H=%lld R=%lld G=%lld: %lld bad, worst rel %.2e",
                Host<W>::name, Host<F>::name, (long long)C, (long long)H, (long long)R, (long long)G, (long long)bad, worst);
  tally.check(bad == 0, what);
  if (bad == 0) std::printf("ok   %s\n", what);
}

// The R-MLP fold: folded weight, weight gradient and both scales' gradients.
template <typename W, typename F>
void check_mlp_case(rakv_test::Tally& tally, int64_t rows, int64_t cols, int64_t split, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<typename Host<W>::Bits> w_bits(rows * cols);
  std::vector<typename Host<F>::Bits> g_bits(rows * cols);
  std::vector<double> w(rows * cols), g(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    w_bits[i] = Host<W>::encode(normal(rng));
    w[i] = Host<W>::decode(w_bits[i]);
    g_bits[i] = Host<F>::encode(normal(rng));
    g[i] = Host<F>::decode(g_bits[i]);
  }
  const float a = 0.9f, b = -0.037f;
  DeviceBuffer<typename Host<W>::Bits> d_w(rows * cols), d_gw(rows * cols);
  DeviceBuffer<typename Host<F>::Bits> d_f(rows * cols), d_g(rows * cols);
  DeviceBuffer<float> d_a(1), d_b(1), d_ga(1), d_gb(1), d_ws(2 * rows);
  d_w.upload(w_bits);
  d_g.upload(g_bits);
  d_a.upload({a});
  d_b.upload({b});
  d_f.fill_bytes(0xff);
  d_gw.fill_bytes(0xff);
  d_ga.fill_bytes(0xff);
  d_gb.fill_bytes(0xff);
  kc::MlpFoldParams p;
  p.weight = d_w.ptr;
  p.scale_std = d_a.ptr;
  p.scale_rec = d_b.ptr;
  p.folded = d_f.ptr;
  p.grad_folded = d_g.ptr;
  p.grad_weight = d_gw.ptr;
  p.grad_std = d_ga.ptr;
  p.grad_rec = d_gb.ptr;
  p.workspace = d_ws.ptr;
  p.rows = rows;
  p.cols = cols;
  p.split = split;
  p.weight_type = Host<W>::type;
  p.folded_type = Host<F>::type;
  LAUNCH_CHECK(kc::reciprocal_mlp_fold_forward(p, nullptr));
  LAUNCH_CHECK(kc::reciprocal_mlp_fold_backward(p, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto folded = d_f.download(rows * cols);
  const auto grad_w = d_gw.download(rows * cols);
  const float grad_a = d_ga.download(1)[0], grad_b = d_gb.download(1)[0];
  int64_t bad = 0;
  double worst = 0, ref_a = 0, ref_b = 0;
  auto expect = [&](double got, double ref, double scale, double tol) {
    const double err = std::fabs(got - ref) / std::max(std::fabs(ref), scale);
    worst = std::max(worst, err);
    bad += !(err <= tol);
  };
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t k = i * cols + j;
      const double s = j < split ? a : b;
      expect(Host<F>::decode(folded[k]), w[k] * s, floor_of<F>(), tolerance<F>());
      expect(Host<W>::decode(grad_w[k]), g[k] * s, floor_of<W>(), tolerance<W>());
      (j < split ? ref_a : ref_b) += g[k] * w[k];
    }
  }
  expect(grad_a, ref_a, std::sqrt(double(rows) * split) + 1e-30, 1e-4);
  expect(grad_b, ref_b, std::sqrt(double(rows) * (cols - split)) + 1e-30, 1e-4);
  char what[200];
  std::snprintf(what, sizeof(what), "mlp fold weight=%s folded=%s rows=%lld cols=%lld split=%lld: %lld bad, worst rel %.2e",
                Host<W>::name, Host<F>::name, (long long)rows, (long long)cols, (long long)split, (long long)bad, worst);
  tally.check(bad == 0, what);
  if (bad == 0) std::printf("ok   %s\n", what);
}

void check_rejected(rakv_test::Tally& tally) {
  DeviceBuffer<float> buf(3 * 64 * 64);
  kc::GateFoldParams p;
  p.weight = p.folded = buf.ptr;
  p.w_std = p.w_rec = buf.ptr;
  p.n_embd = 64;
  p.n_head = 4;
  p.reciprocal_rank = 16;  // = D
  int rc = kc::reciprocal_gate_fold_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "0 < R < D"),
              std::string("R = D rejected: ") + kc::last_error_detail());
  p.reciprocal_rank = 4;
  p.gates = 3;
  rc = kc::reciprocal_gate_fold_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "gates"),
              std::string("3 gates for 4 heads rejected: ") + kc::last_error_detail());
  p.gates = 1;
  p.n_embd = 66;
  p.n_head = 6;
  rc = kc::reciprocal_gate_fold_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue, std::string("C = 66 rejected: ") + kc::last_error_detail());
  kc::MlpFoldParams m;
  m.weight = m.folded = buf.ptr;
  m.scale_std = m.scale_rec = buf.ptr;
  m.rows = 8;
  m.cols = 64;
  m.split = 62;
  rc = kc::reciprocal_mlp_fold_forward(m, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "split"),
              std::string("split 62 rejected: ") + kc::last_error_detail());
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = rakv_test::has_flag(argc, argv, "--quick");
  std::printf("device: %s\n", rakv_test::device_name().c_str());
  rakv_test::Tally tally;
  struct Case {
    int64_t C, H, R, G;
  };
  const Case cases[] = {{16, 2, 2, 1}, {64, 4, 4, 4}, {192, 3, 16, 1}, {768, 12, 16, 12}, {768, 12, 32, 1}};
  uint64_t seed = 60;
  for (const Case& c : cases) {
    if (quick && c.C > 200) continue;
    check_case<float, float>(tally, c.C, c.H, c.R, c.G, ++seed);
    check_case<float, __nv_bfloat16>(tally, c.C, c.H, c.R, c.G, ++seed);
    check_case<float, __half>(tally, c.C, c.H, c.R, c.G, ++seed);
    check_case<__nv_bfloat16, __nv_bfloat16>(tally, c.C, c.H, c.R, c.G, ++seed);
    check_case<__half, __half>(tally, c.C, c.H, c.R, c.G, ++seed);
  }
  struct MlpCase {
    int64_t rows, cols, split;
  };
  for (const MlpCase& c : {MlpCase{1, 8, 4}, MlpCase{7, 64, 60}, MlpCase{96, 384, 320}, MlpCase{768, 3072, 3008},
                           MlpCase{5, 16, 16}, MlpCase{5, 16, 0}}) {
    if (quick && c.rows * c.cols > 100000) continue;
    check_mlp_case<float, float>(tally, c.rows, c.cols, c.split, ++seed);
    check_mlp_case<float, __nv_bfloat16>(tally, c.rows, c.cols, c.split, ++seed);
    check_mlp_case<__half, __half>(tally, c.rows, c.cols, c.split, ++seed);
  }
  check_rejected(tally);
  std::printf("gate_fold: %d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed == 0 ? 0 : 1;
}
