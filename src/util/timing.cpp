// Median timing of repeated runs.
#include "rakv/util/timing.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#ifdef RAKV_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace rakv::util {

void synchronize(const torch::Device& device) {
  if (device.is_cuda())
    torch::cuda::synchronize(device.index() < 0 ? -1 : device.index());
}

TimingStats time_operation(const std::function<void()>& work, int warmup, int repeats,
                           const torch::Device& device) {
  TORCH_CHECK(repeats >= 1, "time_operation needs at least one timed repeat");
  for (int i = 0; i < warmup; ++i)
    work();
  synchronize(device);
  std::vector<double> times;
#ifdef RAKV_WITH_CUDA
  if (device.is_cuda()) {
    // Device events on the current stream: the GPU time of the work, as the method asks.
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
    TORCH_CHECK(cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess,
                "time_operation: cannot create CUDA events");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    for (int i = 0; i < repeats; ++i) {
      cudaEventRecord(start, stream);
      work();
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      times.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
#endif
  for (int i = 0; i < repeats && times.empty(); ++i) {
    const auto start = std::chrono::steady_clock::now();
    work();
    synchronize(device);
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(times.begin(), times.end());
  TimingStats stats;
  stats.repeats = repeats;
  stats.min_ms = times.front();
  stats.max_ms = times.back();
  stats.median_ms = times.size() % 2
                        ? times[times.size() / 2]
                        : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
  return stats;
}

}  // namespace rakv::util
