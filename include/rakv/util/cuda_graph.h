// A CUDA graph of a fixed piece of device work, with the side stream it is warmed up, captured
// and replayed on (capture cannot run on the legacy default stream, and cuBLAS allocates its
// workspace per stream, so warm-up and capture must share one). Builds without CUDA compile the
// class, but constructing it throws.
#pragma once

#include <functional>
#include <memory>

namespace rakv::util {

// True when this build can capture CUDA graphs (built with -DRAKV_CUDA=ON).
bool cuda_graphs_supported();

class CudaGraph {
 public:
  // Takes a stream from LibTorch's pool on the current CUDA device.
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Runs `work` with the side stream as the current stream, ordered after the work already queued
  // on the caller's stream and before anything the caller queues afterwards.
  void on_side_stream(const std::function<void()>& work);

  // Records the device work `work` launches into the graph; nothing runs. Call inside
  // on_side_stream. `work` must not wait for the device (no .item(), no host copies): that
  // throws an error naming the failure. Memory allocated during the capture stays reserved for
  // the graph until reset().
  void capture(const std::function<void()>& work);

  // Launches the captured work on the current stream (call inside on_side_stream).
  void replay();

  bool captured() const;

  // Drops the graph and its memory; the next capture() starts afresh.
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rakv::util
