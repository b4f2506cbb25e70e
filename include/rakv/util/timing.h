// Timing of short operations for benchmarks and `rakv audit`: warm-up, then the median of
// repeated runs: CUDA events on the current stream for CUDA work, the host clock on the CPU.
#pragma once

#include <torch/types.h>

#include <functional>
#include <vector>

namespace rakv::util {

struct TimingStats {
  double median_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
  int repeats = 0;
};

// Waits for the work queued on `device` (CUDA); returns at once for the CPU.
void synchronize(const torch::Device& device);

// Runs `work` `warmup` times untimed, then `repeats` times timed.
TimingStats time_operation(const std::function<void()>& work, int warmup, int repeats,
                           const torch::Device& device = torch::kCPU);

}  // namespace rakv::util
