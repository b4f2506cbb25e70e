// CUDA autocast state as a value: read it where a forward pass runs, re-enter it where work of
// that pass is redone outside the region (an activation checkpoint's recompute runs during the
// backward, after the training step has left autocast). rakv uses CUDA autocast only with
// LibTorch >= 2; with older LibTorch the state is always "off" and the scope does nothing.
#pragma once

#include <c10/core/ScalarType.h>

namespace rakv::util {

struct CudaAutocastState {
  bool enabled = false;
  c10::ScalarType dtype = c10::ScalarType::BFloat16;
};

// The current thread's CUDA autocast state.
CudaAutocastState current_cuda_autocast();

// Enters `state` for its lifetime when state.enabled (the C++ counterpart of torch.autocast),
// and restores what was there before.
class CudaAutocastScope {
 public:
  explicit CudaAutocastScope(CudaAutocastState state);
  ~CudaAutocastScope();
  CudaAutocastScope(const CudaAutocastScope&) = delete;
  CudaAutocastScope& operator=(const CudaAutocastScope&) = delete;

 private:
  CudaAutocastState previous_;
  bool entered_ = false;
};

}  // namespace rakv::util
