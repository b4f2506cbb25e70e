#include "rakv/util/cuda_graph.h"

#include <stdexcept>
#include <string>

#ifdef RAKV_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rakv::util {

#ifdef RAKV_WITH_CUDA
bool cuda_graphs_supported() {
  return true;
}

struct CudaGraph::Impl {
  c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  at::cuda::CUDAEvent caller_ready;
  at::cuda::CUDAEvent side_done;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
};

CudaGraph::CudaGraph() : impl_(std::make_unique<Impl>()) {}

CudaGraph::~CudaGraph() = default;

void CudaGraph::on_side_stream(const std::function<void()>& work) {
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream();
  impl_->caller_ready.record(caller);
  impl_->caller_ready.block(impl_->stream);
  // Also when `work` throws: what it queued may still read the caller's tensors.
  struct JoinCaller {
    Impl& impl;
    c10::cuda::CUDAStream caller;
    ~JoinCaller() {
      try {
        impl.side_done.record(impl.stream);
        impl.side_done.block(caller);
      } catch (const std::exception&) {
        // Only reached with the device already failing; the error in flight says why.
      }
    }
  } join{*impl_, caller};
  const c10::cuda::CUDAStreamGuard guard(impl_->stream);
  work();
}

void CudaGraph::capture(const std::function<void()>& work) {
  reset();
  // A capture cannot reuse blocks cached outside its pool: hand them back first, or the capture
  // would need a second copy of the working set the eager warm-up steps left cached.
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  graph->capture_begin();
  try {
    work();
  } catch (const std::exception& error) {
    // Leave capture mode so that the stream and the allocator are usable for what follows.
    try {
      graph->capture_end();
    } catch (const std::exception&) {
    }
    throw std::runtime_error(std::string("capturing a CUDA graph failed (captured work must not "
                                         "wait for the device, e.g. read a value back): ") +
                             error.what());
  }
  graph->capture_end();
  impl_->graph = std::move(graph);
}

void CudaGraph::replay() {
  if (!impl_->graph)
    throw std::logic_error("CudaGraph::replay before capture");
  impl_->graph->replay();
}

bool CudaGraph::captured() const {
  return impl_->graph != nullptr;
}

void CudaGraph::reset() {
  impl_->graph.reset();
}
#else
bool cuda_graphs_supported() {
  return false;
}

struct CudaGraph::Impl {};

CudaGraph::CudaGraph() {
  throw std::runtime_error("CUDA graphs need a build with -DRAKV_CUDA=ON");
}

CudaGraph::~CudaGraph() = default;
void CudaGraph::on_side_stream(const std::function<void()>& work) {
  work();
}
void CudaGraph::capture(const std::function<void()>&) {}
void CudaGraph::replay() {}
bool CudaGraph::captured() const {
  return false;
}
void CudaGraph::reset() {}
#endif

}  // namespace rakv::util
