// KVSplice on the CPU: compress and decompress of [T * H, 64] V rows (H = 12, latent 16), and
// the spline kernel alone, as V vectors (rows) per second.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "rakv/nn/kvsplice.h"
#include "rakv/ops.h"
#include "rakv/util/runtime.h"

namespace {

constexpr int64_t kHeads = 12;
constexpr int64_t kHeadDim = 64;

// A module fitted once on log-normal rows: the timings do not depend on how well it fits.
const rakv::nn::KVSplice& fitted_splice() {
  static const rakv::nn::KVSplice splice = [] {
    torch::manual_seed(0);
    rakv::nn::KVSpliceOptions options;
    options.head_dim = kHeadDim;
    options.latent_dim = 16;
    rakv::nn::KVSplice module(options);
    module->fit(torch::randn({8192, kHeadDim}).exp(), rakv::nn::KVSpliceFitOptions{.epochs = 1});
    return module;
  }();
  return splice;
}

torch::Tensor v_rows(const benchmark::State& state) {
  return torch::randn({state.range(0) * kHeads, kHeadDim}).exp();
}

void compress(benchmark::State& state) {
  const auto& splice = fitted_splice();
  const torch::Tensor v = v_rows(state);
  for (auto _ : state) {
    benchmark::DoNotOptimize(splice->compress(v));
  }
  state.SetItemsProcessed(state.iterations() * v.size(0));
}

void decompress(benchmark::State& state) {
  const auto& splice = fitted_splice();
  const torch::Tensor z = splice->compress(v_rows(state));
  for (auto _ : state) {
    benchmark::DoNotOptimize(splice->decompress(z));
  }
  state.SetItemsProcessed(state.iterations() * z.size(0));
}

void spline_kernel(benchmark::State& state, bool inverse) {
  const auto& splice = fitted_splice();
  const torch::Tensor v = v_rows(state);
  const torch::Tensor values = splice->knot_values().detach();
  for (auto _ : state) {
    benchmark::DoNotOptimize(rakv::ops::monotone_spline_eval(v, splice->knots, values, inverse));
  }
  state.SetItemsProcessed(state.iterations() * v.size(0));
}

}  // namespace

// Arguments: T tokens (rows = T x 12 heads); T = 1 is one decoding step.
BENCHMARK(compress)->Arg(1)->Arg(1024)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK(decompress)->Arg(1)->Arg(1024)->Arg(16384)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(spline_kernel, forward, false)
    ->Arg(1024)
    ->Arg(16384)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(spline_kernel, inverse, true)
    ->Arg(1024)
    ->Arg(16384)
    ->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  rakv::util::configure_threads();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
