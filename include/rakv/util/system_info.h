// What machine and libraries a measurement ran on, and memory figures for benchmarks.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace rakv::util {

// One line per fact: CPU model and cores, memory, GPU (when `device` is CUDA), LibTorch version,
// BLAS library, rakv version.
std::string describe_machine(const torch::Device& device);

// Bytes that can still be allocated on `device` (CPU: MemAvailable; CUDA: free device memory).
int64_t available_memory_bytes(const torch::Device& device);

// Dense bf16 tensor-core peak of `device` in FLOP/s for MFU (H100 / H200 SXM: 989.4e12,
// A100: 312e12); 0 when unknown (the CPU, other GPUs).
double peak_bf16_flops(const torch::Device& device);

// Peak-memory probe: reset() starts a window, peak_bytes() returns the highest memory in use
// since then, above what was in use at reset(). CPU: the process's resident-set high-water mark
// (VmHWM, reset through /proc/self/clear_refs); CUDA: the caching allocator's peak.
class PeakMemoryProbe {
 public:
  explicit PeakMemoryProbe(const torch::Device& device);
  void reset();
  int64_t peak_bytes() const;

 private:
  torch::Device device_;
  int64_t baseline_ = 0;
};

}  // namespace rakv::util
