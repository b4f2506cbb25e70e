// RA gate scaling on the CPU: the reference's split_cat, the audit's scale_tensor and rakv's fused
// fold into the projection weight, timed as the full QKV projection + gating of one layer.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "rakv/nn/reciprocal_attention.h"
#include "rakv/util/runtime.h"

namespace {

void gate_scaling(benchmark::State& state, rakv::nn::GateScaling scaling) {
  torch::NoGradGuard no_grad;
  const int64_t t = state.range(0);
  rakv::nn::ReciprocalAttentionOptions options;
  options.n_embd = 768;
  options.n_head = 12;
  options.gate_scaling = scaling;
  rakv::nn::ReciprocalAttention layer(options);
  layer->eval();
  const torch::Tensor x = torch::randn({1, t, 768});
  for (auto _ : state) benchmark::DoNotOptimize(layer->logits(x));
  state.SetItemsProcessed(state.iterations() * t);
}

}  // namespace

BENCHMARK_CAPTURE(gate_scaling, split_cat, rakv::nn::GateScaling::kSplitCat)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(gate_scaling, scale_tensor, rakv::nn::GateScaling::kScaleTensor)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(gate_scaling, fused, rakv::nn::GateScaling::kFused)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  rakv::util::configure_threads();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
