// Helpers of the standalone CUDA tests and benchmarks (tests/cuda/): error checks, a seeded RNG,
// timing with CUDA events (median of repeats, optional L2 flush), pass/fail bookkeeping.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#define CUDA_CHECK(expr)                                                                       \
  do {                                                                                         \
    const cudaError_t err_ = (expr);                                                           \
    if (err_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,               \
                   cudaGetErrorString(err_));                                                  \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

// A launcher's int return value (a cudaError_t), with the kernels' parameter detail.
#define LAUNCH_CHECK(expr)                                                                     \
  do {                                                                                         \
    const int err_ = (expr);                                                                   \
    if (err_ != 0) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s returned %d (%s) %s\n", __FILE__, __LINE__, #expr, err_, \
                   cudaGetErrorString(static_cast<cudaError_t>(err_)),                         \
                   rakv::kernels::cuda::last_error_detail());                                  \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

namespace rakv_test {

// Whether `flag` (--quick, --no-bench, --profile) is among the program's arguments.
inline bool has_flag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], flag)) return true;
  }
  return false;
}

struct Tally {
  int passed = 0, failed = 0;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAIL %s\n", what.c_str());
    }
  }
};

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : count(n) { CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h) { CUDA_CHECK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download(size_t n) const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void fill_bytes(int byte) { CUDA_CHECK(cudaMemset(ptr, byte, std::max<size_t>(count, 1) * sizeof(T))); }
};

// Times fn (which launches on `stream`) with CUDA events: `warmup` untimed calls, then the
// median of `reps` timed calls; with flush, a 256 MiB memset (more than the 50 MB L2) runs
// before every timed call, outside the timed region. Returns microseconds.
class Timer {
 public:
  Timer() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
    CUDA_CHECK(cudaMalloc(&flush_, kFlushBytes));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaFree(flush_);
  }
  double median_us(const std::function<void()>& fn, int warmup, int reps, bool flush, cudaStream_t stream) {
    for (int i = 0; i < warmup; ++i) fn();
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      if (flush) CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, kFlushBytes, stream));
      CUDA_CHECK(cudaEventRecord(start_, stream));
      fn();
      CUDA_CHECK(cudaEventRecord(stop_, stream));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      t.push_back(ms * 1e3);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  // GPU time of one call without host launch gaps: `calls` back-to-back calls captured into a
  // CUDA graph, median over `reps` replays, divided by `calls` (fn must have run once before,
  // so that one-time driver calls stay out of the capture).
  double graph_us(const std::function<void()>& fn, int calls, int reps, cudaStream_t stream) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) fn();
    CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < 3; ++i) CUDA_CHECK(cudaGraphLaunch(exec, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaEventRecord(start_, stream));
      CUDA_CHECK(cudaGraphLaunch(exec, stream));
      CUDA_CHECK(cudaEventRecord(stop_, stream));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      t.push_back(ms * 1e3 / calls);
    }
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

 private:
  static constexpr size_t kFlushBytes = size_t(256) << 20;
  cudaEvent_t start_{}, stop_{};
  void* flush_ = nullptr;
};

inline std::string device_name() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  char buf[640];
  std::snprintf(buf, sizeof(buf), "%s (%d SMs, %.0f MB L2, cc %d.%d)", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize / 1e6, prop.major, prop.minor);
  return buf;
}

}  // namespace rakv_test
