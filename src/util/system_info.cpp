// Machine description and memory probes (Linux /proc; the CUDA caching allocator on GPUs).
#include "rakv/util/system_info.h"

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifdef RAKV_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace rakv::util {
namespace {

#ifdef RAKV_WITH_CUDA
// StatType::AGGREGATE, the first entry of the allocator's stat arrays (the enum moved between
// LibTorch versions; its position did not).
constexpr size_t kAggregateStat = 0;
#endif

// The value of `key` in a "key: value" /proc file, in kB for memory fields; -1 when absent.
int64_t proc_field_kb(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0)
      return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0)
      return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

}  // namespace

std::string describe_machine(const torch::Device& device) {
  std::ostringstream out;
  out << "- CPU: " << cpu_model() << ", " << std::thread::hardware_concurrency()
      << " hardware threads, " << proc_field_kb("/proc/meminfo", "MemTotal") / (1024 * 1024)
      << " GiB memory\n";
#ifdef RAKV_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp props{};
    cudaGetDeviceProperties(&props, device.index() < 0 ? 0 : device.index());
    out << "- GPU: " << props.name << ", " << props.multiProcessorCount << " SMs, "
        << props.totalGlobalMem / (1024 * 1024 * 1024) << " GiB\n";
  }
#endif
  out << "- LibTorch " << TORCH_VERSION << ", " << at::get_num_threads() << " intra-op threads\n";
  std::error_code ec;
  const auto blas =
      std::filesystem::canonical("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
  out << "- BLAS: " << (ec ? std::string("unknown") : blas.string()) << "\n";
  out << "- rakv " << RAKV_VERSION << "\n";
  return out.str();
}

double peak_bf16_flops(const torch::Device& device) {
#ifdef RAKV_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, device.index() < 0 ? 0 : device.index()) != cudaSuccess)
      return 0;
    const std::string name = props.name;
    if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
      return 989.4e12;
    if (name.find("A100") != std::string::npos)
      return 312e12;
  }
#endif
  return 0;
}

int64_t available_memory_bytes(const torch::Device& device) {
#ifdef RAKV_WITH_CUDA
  if (device.is_cuda()) {
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return static_cast<int64_t>(free_bytes);
  }
#endif
  return proc_field_kb("/proc/meminfo", "MemAvailable") * 1024;
}

PeakMemoryProbe::PeakMemoryProbe(const torch::Device& device) : device_(device) {
  reset();
}

void PeakMemoryProbe::reset() {
#ifdef RAKV_WITH_CUDA
  if (device_.is_cuda()) {
    const int index = device_.index() < 0 ? 0 : device_.index();
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
    baseline_ = c10::cuda::CUDACachingAllocator::getDeviceStats(index)
                    .allocated_bytes[kAggregateStat]
                    .current;
    return;
  }
#endif
  // Writing 5 to clear_refs resets VmHWM to the current resident set (Linux >= 4.0).
  std::ofstream("/proc/self/clear_refs") << "5";
  baseline_ = proc_field_kb("/proc/self/status", "VmRSS") * 1024;
}

int64_t PeakMemoryProbe::peak_bytes() const {
#ifdef RAKV_WITH_CUDA
  if (device_.is_cuda()) {
    const int index = device_.index() < 0 ? 0 : device_.index();
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index)
               .allocated_bytes[kAggregateStat]
               .peak -
           baseline_;
  }
#endif
  return std::max<int64_t>(0, proc_field_kb("/proc/self/status", "VmHWM") * 1024 - baseline_);
}

}  // namespace rakv::util
