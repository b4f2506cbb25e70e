// Checks the fused cross-entropy kernels against a float64 CPU reference computed from the same
// rounded fp16/bf16/fp32 logits: lse, loss, and the gradient for a random scale, on random
// logits (several amplitudes) and targets, with ignored rows, padding columns, odd vocabularies,
// row strides wider than the row, unaligned rows (the element-by-element path) and a target out
// of range (NaN loss and gradient). Outputs are poisoned with NaN first. Then times forward and
// backward at GPT-2's LM-head shape (N = 16384, vocab 50257 padded to 50304).
//
// Usage: test_cross_entropy [--quick] [--no-bench]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "rakv/kernels/cuda/cross_entropy.h"
#include "test_elem_types.h"
#include "test_util.h"

namespace kc = rakv::kernels::cuda;
using rakv_test::DeviceBuffer;
using rakv_test::Host;

namespace {

constexpr int64_t kIgnore = -100;

struct Case {
  int64_t rows, columns, vocab, stride_extra;
  float amp;
  bool unaligned;      // logits start one element past a 16-byte boundary
  bool bad_target;     // row 0 gets target = vocab (out of range)
};

// Element tolerance of a gradient value stored in E: rounding to E plus float arithmetic.
template <typename E>
double grad_tolerance(double ref, double g) {
  const double eps = Host<E>::type == kc::ElemType::kFloat32 ? 2e-6 : Host<E>::type == kc::ElemType::kFloat16 ? 1e-3 : 8e-3;
  return eps * std::fabs(ref) + 1e-6 * std::fabs(g) + 1e-7;
}

template <typename E>
void check_case(rakv_test::Tally& tally, const Case& c, uint64_t seed) {
  using Bits = typename Host<E>::Bits;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t stride = c.columns + c.stride_extra;
  const int64_t offset = c.unaligned ? 1 : 0;
  std::vector<Bits> bits(offset + c.rows * stride);
  std::vector<float> vals(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    bits[i] = Host<E>::encode(c.amp * normal(rng));
    vals[i] = Host<E>::decode(bits[i]);
  }
  std::vector<int64_t> targets(c.rows);
  std::uniform_int_distribution<int64_t> pick(0, c.vocab - 1);
  for (int64_t r = 0; r < c.rows; ++r) targets[r] = (r % 7 == 3) ? kIgnore : pick(rng);
  if (c.bad_target) targets[0] = c.vocab;
  const float g = 0.37f;

  DeviceBuffer<Bits> d_logits(bits.size()), d_grad(offset + c.rows * stride);
  DeviceBuffer<int64_t> d_targets(c.rows);
  DeviceBuffer<float> d_lse(c.rows), d_loss(c.rows), d_g(1);
  d_logits.upload(bits);
  d_targets.upload(targets);
  d_g.upload({g});
  d_lse.fill_bytes(0xff);
  d_loss.fill_bytes(0xff);
  d_grad.fill_bytes(0xff);

  kc::CrossEntropyParams p;
  p.logits = d_logits.ptr + offset;
  p.row_stride = stride;
  p.rows = c.rows;
  p.columns = c.columns;
  p.vocab = c.vocab;
  p.dtype = Host<E>::type;
  p.targets = d_targets.ptr;
  p.ignore_index = kIgnore;
  p.lse = d_lse.ptr;
  p.loss = d_loss.ptr;
  p.grad_scale = d_g.ptr;
  p.grad_logits = d_grad.ptr + offset;
  p.grad_row_stride = stride;
  LAUNCH_CHECK(kc::cross_entropy_forward(p, nullptr));
  LAUNCH_CHECK(kc::cross_entropy_backward(p, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> lse = d_lse.download(c.rows), loss = d_loss.download(c.rows);
  const std::vector<Bits> grad = d_grad.download(d_grad.count);

  double worst_lse = 0, worst_grad = 0;
  int64_t bad = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* x = &vals[offset + r * stride];
    double mx = -INFINITY;
    for (int64_t j = 0; j < c.vocab; ++j) mx = std::max(mx, double(x[j]));
    double sum = 0;
    for (int64_t j = 0; j < c.vocab; ++j) sum += std::exp(double(x[j]) - mx);
    const double ref_lse = mx + std::log(sum);
    const double err_lse = std::fabs(lse[r] - ref_lse) / std::max(1.0, std::fabs(ref_lse));
    worst_lse = std::max(worst_lse, err_lse);
    bad += !(err_lse <= 2e-6);
    const int64_t t = targets[r];
    const bool ignored = t == kIgnore, invalid = !ignored && (t < 0 || t >= c.vocab);
    if (ignored) {
      bad += loss[r] != 0.f;
    } else if (invalid) {
      bad += !std::isnan(loss[r]);
    } else {
      const double ref_loss = ref_lse - x[t];
      bad += !(std::fabs(loss[r] - ref_loss) <= 2e-6 * std::max(1.0, std::fabs(ref_lse)));
    }
    for (int64_t j = 0; j < c.columns; ++j) {
      const double got = Host<E>::decode(grad[offset + r * stride + j]);
      if (invalid && j < c.vocab) {
        bad += !std::isnan(got);
        continue;
      }
      const double ref = (ignored || j >= c.vocab) ? 0.0 : g * (std::exp(double(x[j]) - ref_lse) - (j == t ? 1.0 : 0.0));
      const double err = std::fabs(got - ref);
      if (ref == 0.0) {
        bad += got != 0.0;
      } else {
        bad += !(err <= grad_tolerance<E>(ref, g));
        worst_grad = std::max(worst_grad, err / std::fabs(ref));
      }
    }
  }
  char what[256];
  std::snprintf(what, sizeof(what), "%s rows=%lld columns=%lld vocab=%lld stride+%lld amp=%.0f%s%s: %lld bad, lse rel %.2e, grad rel %.2e",
                Host<E>::name, (long long)c.rows, (long long)c.columns, (long long)c.vocab, (long long)c.stride_extra, c.amp,
                c.unaligned ? " unaligned" : "", c.bad_target ? " bad-target" : "", (long long)bad, worst_lse, worst_grad);
  tally.check(bad == 0, what);
  if (bad == 0) std::printf("ok   %s\n", what);
}

void check_rejected(rakv_test::Tally& tally) {
  DeviceBuffer<uint16_t> x(64);
  DeviceBuffer<int64_t> t(4);
  DeviceBuffer<float> f(8);
  kc::CrossEntropyParams p;
  p.logits = x.ptr;
  p.targets = t.ptr;
  p.lse = f.ptr;
  p.loss = f.ptr + 4;
  p.rows = 4;
  p.columns = 16;
  p.vocab = 17;
  p.row_stride = 16;
  int rc = kc::cross_entropy_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "vocab") != nullptr,
              std::string("vocab > columns rejected: ") + kc::last_error_detail());
  p.vocab = 16;
  p.row_stride = 8;
  rc = kc::cross_entropy_forward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "row_stride") != nullptr,
              std::string("row_stride < columns rejected: ") + kc::last_error_detail());
  p.row_stride = 16;
  rc = kc::cross_entropy_backward(p, nullptr);
  tally.check(rc == cudaErrorInvalidValue && std::strstr(kc::last_error_detail(), "grad") != nullptr,
              std::string("backward without grad buffers rejected: ") + kc::last_error_detail());
  p.rows = 0;
  p.logits = nullptr;
  tally.check(kc::cross_entropy_forward(p, nullptr) == 0, "zero rows: nothing to do");
}

template <typename E>
void bench(rakv_test::Timer& timer, int64_t rows, int64_t columns, int64_t vocab, cudaStream_t stream) {
  using Bits = typename Host<E>::Bits;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::vector<Bits> h(rows * columns);
  for (auto& b : h) b = Host<E>::encode(normal(rng));
  std::vector<int64_t> targets(rows);
  for (auto& t : targets) t = static_cast<int64_t>(rng() % vocab);
  DeviceBuffer<Bits> logits(h.size()), grad(h.size());
  DeviceBuffer<int64_t> d_targets(rows);
  DeviceBuffer<float> lse(rows), loss(rows), g(1);
  logits.upload(h);
  d_targets.upload(targets);
  g.upload({1.f / rows});
  kc::CrossEntropyParams p;
  p.logits = logits.ptr;
  p.row_stride = p.grad_row_stride = columns;
  p.rows = rows;
  p.columns = columns;
  p.vocab = vocab;
  p.dtype = Host<E>::type;
  p.targets = d_targets.ptr;
  p.lse = lse.ptr;
  p.loss = loss.ptr;
  p.grad_scale = g.ptr;
  p.grad_logits = grad.ptr;
  const double fwd = timer.median_us([&] { LAUNCH_CHECK(kc::cross_entropy_forward(p, stream)); }, 2, 20, true, stream);
  const double bwd = timer.median_us([&] { LAUNCH_CHECK(kc::cross_entropy_backward(p, stream)); }, 2, 20, true, stream);
  const double bytes = double(rows) * columns * sizeof(Bits);
  std::printf("| %s | %lld | %lld | %lld | %.3f | %.0f | %.3f | %.0f |\n", Host<E>::name, (long long)rows, (long long)vocab,
              (long long)columns, fwd / 1e3, bytes / fwd / 1e3, bwd / 1e3, 2 * bytes / bwd / 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = rakv_test::has_flag(argc, argv, "--quick");
  const bool do_bench = !rakv_test::has_flag(argc, argv, "--no-bench");
  std::printf("device: %s\n", rakv_test::device_name().c_str());
  rakv_test::Tally tally;
  const Case cases[] = {
      {1, 1, 1, 0, 1.f, false, false},       {3, 8, 5, 0, 1.f, false, false},
      {17, 64, 64, 0, 4.f, false, false},    {9, 1000, 999, 24, 2.f, false, false},
      {33, 4104, 4099, 8, 8.f, false, false}, {16, 1000, 1000, 3, 1.f, true, false},
      {8, 50304, 50257, 0, 3.f, false, false}, {5, 2048, 2000, 0, 1.f, false, true},
      {7, 777, 700, 5, 2.f, true, true},
  };
  uint64_t seed = 11;
  for (const Case& c : cases) {
    if (quick && c.rows * c.columns > 200000) continue;
    check_case<__nv_bfloat16>(tally, c, ++seed);
    check_case<__half>(tally, c, ++seed);
    check_case<float>(tally, c, ++seed);
  }
  check_rejected(tally);
  std::printf("cross_entropy: %d passed, %d failed\n", tally.passed, tally.failed);

  if (do_bench) {
    rakv_test::Timer timer;
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    std::printf("\n| fused cross-entropy | dtype | N | vocab | columns | forward (ms) | forward GB/s | backward (ms) | backward GB/s |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| ");
    bench<__nv_bfloat16>(timer, 16384, 50304, 50257, stream);
    if (!quick) {
      std::printf("| ");
      bench<float>(timer, 16384, 50304, 50257, stream);
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
  }
  return tally.failed == 0 ? 0 : 1;
}
