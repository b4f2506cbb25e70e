#include "rakv/util/kernel_profile.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

#if defined(RAKV_WITH_CUDA) && TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/autograd/profiler_kineto.h>
#define RAKV_KERNEL_PROFILE 1
#endif

namespace rakv::util {

#ifdef RAKV_KERNEL_PROFILE
bool kernel_profiling_supported() {
  return true;
}

void KernelProfile::start() {
  namespace impl = torch::profiler::impl;
  const std::set<impl::ActivityType> activities = {impl::ActivityType::CPU,
                                                   impl::ActivityType::CUDA};
  const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  running_ = true;
}

KernelProfile::~KernelProfile() {
  if (!running_)
    return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (const std::exception&) {
    // Stopping after an error: the error in flight is the one to report.
  }
}

std::string KernelProfile::stop(int rows, int64_t steps, double wall_ms,
                                const std::string& trace_path) {
  if (!running_)
    throw std::logic_error("KernelProfile::stop without start");
  running_ = false;
  const auto result = torch::autograd::profiler::disableProfiler();
  struct Totals {
    double ns = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Totals> by_name;
  double device_ns = 0;
  for (const auto& event : result->events()) {
    if (event.deviceType() != c10::DeviceType::CUDA)
      continue;
    Totals& totals = by_name[event.name()];
    totals.ns += static_cast<double>(event.durationNs());
    totals.calls += 1;
    device_ns += static_cast<double>(event.durationNs());
  }
  if (!trace_path.empty()) {
    result->save(trace_path);
    if (!std::filesystem::exists(trace_path))
      throw std::runtime_error("bench-train --profile-trace: " + trace_path + " was not written");
  }

  std::vector<std::pair<std::string, Totals>> sorted(by_name.begin(), by_name.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  const double per_step = static_cast<double>(std::max<int64_t>(1, steps));
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "device time " << device_ns / 1e6 / per_step
      << " ms/step in " << by_name.size() << " kinds of kernel, copy and fill; wall "
      << wall_ms / per_step << " ms/step (device busy " << std::setprecision(1)
      << (wall_ms > 0 ? 100.0 * device_ns / 1e6 / wall_ms : 0.0)
      << "% of it, kernels on several streams counted each)\n\n"
      << "| device ms/step | share | calls/step | name |\n|---|---|---|---|\n";
  for (size_t i = 0; i < sorted.size() && i < static_cast<size_t>(rows); ++i) {
    const auto& [name, totals] = sorted[i];
    out << std::setprecision(3) << "| " << totals.ns / 1e6 / per_step << " | "
        << std::setprecision(1) << 100.0 * totals.ns / std::max(1.0, device_ns) << "% | "
        << std::setprecision(1) << static_cast<double>(totals.calls) / per_step << " | "
        << (name.size() > 110 ? name.substr(0, 107) + "..." : name) << " |\n";
  }
  return out.str();
}
#else
bool kernel_profiling_supported() {
  return false;
}

void KernelProfile::start() {
  throw std::runtime_error("profiling device kernels needs a build with -DRAKV_CUDA=ON");
}

KernelProfile::~KernelProfile() = default;

std::string KernelProfile::stop(int, int64_t, double, const std::string&) {
  return {};
}
#endif

}  // namespace rakv::util
