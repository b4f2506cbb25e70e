// The streaming attention-mass importance (SPEC §3) on the CPU at B = 1, H = 12, D = 64:
// wall time per call and the call's peak memory growth (Linux: the peak RSS is reset before the
// call through /proc/self/clear_refs and read back from /proc/self/status). The materialised
// form would hold B H T^2 float32 probabilities: 12 GiB at T = 16384, 48 GiB at 32768.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <fstream>
#include <string>

#include "rakv/ops.h"
#include "rakv/util/runtime.h"

namespace {

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"), or -1 where there is none.
double status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0)
      return std::stod(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

void kv_importance(benchmark::State& state) {
  const int64_t t = state.range(0);
  torch::manual_seed(t);
  const torch::Tensor q = torch::randn({1, 12, t, 64});
  const torch::Tensor k = torch::randn({1, 12, t, 64});
  double peak_growth = 0;
  for (auto _ : state) {
    reset_peak_rss();
    const double before = status_bytes("VmRSS");
    benchmark::DoNotOptimize(rakv::ops::kv_importance(q, k, /*exposure_correction=*/true, 0, 0));
    peak_growth = std::max(peak_growth, status_bytes("VmHWM") - before);
  }
  state.counters["peak_MiB"] = peak_growth / (1 << 20);
  state.counters["materialised_GiB"] = 12.0 * static_cast<double>(t) * t * 4 / (1 << 30);
  state.counters["threads"] = rakv::ops::kv_kernel_threads();
  // Causal q.k products, the work that dominates: 2 H D T (T + 1) / 2 flops.
  state.counters["flops"] =
      benchmark::Counter(12.0 * 64 * static_cast<double>(t) * (t + 1) * state.iterations(),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

}  // namespace

BENCHMARK(kv_importance)
    ->Arg(4096)
    ->Arg(16384)
    ->Arg(32768)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  rakv::util::configure_threads();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
