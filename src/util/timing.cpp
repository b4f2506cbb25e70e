// Median timing of repeated runs.
#include "rakv/util/timing.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

namespace rakv::util {
namespace {

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? -1 : device.index());
}

}  // namespace

TimingStats time_operation(const std::function<void()>& work, int warmup, int repeats,
                           const torch::Device& device) {
  TORCH_CHECK(repeats >= 1, "time_operation needs at least one timed repeat");
  for (int i = 0; i < warmup; ++i) work();
  synchronize(device);
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    work();
    synchronize(device);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  TimingStats stats;
  stats.repeats = repeats;
  stats.min_ms = times.front();
  stats.max_ms = times.back();
  stats.median_ms = times.size() % 2 ? times[times.size() / 2]
                                     : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
  return stats;
}

}  // namespace rakv::util
