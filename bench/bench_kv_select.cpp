// KV top-k selection on the CPU, SPEC §3 / §6: torch::topk (values and indices, what the
// reference calls) against rakv's exact radix select, threshold sampling and the audit's
// sampling, on random importance [8, 12, T] (uniform in (0.001, 1]) with k = 0.38 T and a
// recency window of 64. Wall time (the kernels are multi-threaded); the sampling methods also
// report their recall against exact (audit_sampling's is low by construction: it returns
// k * sample / T positions, `kept`).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "rakv/ops.h"
#include "rakv/util/runtime.h"

namespace {

using rakv::ops::TopkMethod;

constexpr int64_t kBatch = 8, kHeads = 12, kMinKeep = 64, kRecency = 64;
constexpr double kKeepRatio = 0.38, kSampleFraction = 0.02;

torch::Tensor random_importance(int64_t t) {
  torch::manual_seed(t);
  return torch::rand({kBatch, kHeads, t}) * 0.999 + 0.001;
}

void torch_topk(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  const int64_t t = state.range(0);
  const torch::Tensor importance = random_importance(t);
  const int64_t k = rakv::ops::kv_keep_count(t, kKeepRatio, kMinKeep);
  for (auto _ : state)
    benchmark::DoNotOptimize(torch::topk(importance, k, -1));
  state.counters["kept"] = static_cast<double>(k);
  state.counters["threads"] = at::get_num_threads();
}

void kv_select(benchmark::State& state, TopkMethod method) {
  const int64_t t = state.range(0);
  const torch::Tensor importance = random_importance(t);
  const int64_t k = rakv::ops::kv_keep_count(t, kKeepRatio, kMinKeep);
  const auto select = [&](TopkMethod m) {
    return rakv::ops::kv_select(importance, k, kRecency, m, kSampleFraction, /*seed=*/1);
  };
  torch::Tensor selected;
  for (auto _ : state) {
    selected = select(method);
    benchmark::DoNotOptimize(selected.data_ptr());
  }
  const torch::Tensor exact = select(TopkMethod::kExact);
  // recall = |selected ∩ exact| / k per row, averaged: positions made distinct across rows
  // (row * T + j) so that one isin compares the rows' sets.
  const torch::Tensor row_base = torch::arange(kBatch * kHeads).view({kBatch, kHeads, 1}) * t;
  state.counters["recall"] =
      torch::isin(selected + row_base, exact + row_base).sum().item<double>() /
      static_cast<double>(exact.numel());
  state.counters["kept"] = static_cast<double>(selected.size(2));
  state.counters["threads"] = rakv::ops::kv_kernel_threads();
}

}  // namespace

#define RAKV_TOPK_SIZES \
  ->Arg(4096)->Arg(16384)->Arg(131072)->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(torch_topk) RAKV_TOPK_SIZES;
BENCHMARK_CAPTURE(kv_select, exact, TopkMethod::kExact) RAKV_TOPK_SIZES;
BENCHMARK_CAPTURE(kv_select, sampling, TopkMethod::kSampling) RAKV_TOPK_SIZES;
BENCHMARK_CAPTURE(kv_select, audit_sampling, TopkMethod::kAuditSampling) RAKV_TOPK_SIZES;

int main(int argc, char** argv) {
  rakv::util::configure_threads();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
