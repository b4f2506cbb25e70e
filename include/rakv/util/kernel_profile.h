// Where a stretch of GPU work spends its device time, through LibTorch's Kineto profiler:
// kernels, copies and fills grouped by name with their total time, calls and share, plus how
// much of the wall time the device was busy (a low share means host stalls or launch gaps).
// CUDA builds with LibTorch >= 2 only; elsewhere start() throws.
#pragma once

#include <string>

namespace rakv::util {

// True when this build can profile device work (built with -DRAKV_CUDA=ON, LibTorch >= 2).
bool kernel_profiling_supported();

class KernelProfile {
 public:
  KernelProfile() = default;
  ~KernelProfile();  // stops a profile still running (an error between start and stop)
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;
  // Starts recording CPU ops and CUDA activity on this thread and the device.
  void start();
  // Stops recording and returns a Markdown table of the `rows` names with the most device time,
  // per step over `steps` steps; `wall_ms` is the wall time of the profiled stretch. Writes a
  // Chrome trace to `trace_path` unless it is empty.
  std::string stop(int rows, int64_t steps, double wall_ms, const std::string& trace_path);

 private:
  bool running_ = false;
};

}  // namespace rakv::util
