// Timing of short operations for benchmarks and `rakv audit`: warm-up, then the median of
// repeated runs. On CUDA the device is synchronised around each run (device events would hide
// host overhead that the CPU path pays too).
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

// Runs `work` `warmup` times untimed, then `repeats` times timed.
TimingStats time_operation(const std::function<void()>& work, int warmup, int repeats,
                           const torch::Device& device = torch::kCPU);

}  // namespace rakv::util
