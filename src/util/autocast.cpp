#include "rakv/util/autocast.h"

#include <torch/torch.h>

#if TORCH_VERSION_MAJOR >= 2
#include <ATen/autocast_mode.h>
#endif

namespace rakv::util {

#if TORCH_VERSION_MAJOR >= 2
CudaAutocastState current_cuda_autocast() {
  return {at::autocast::is_autocast_enabled(at::kCUDA), at::autocast::get_autocast_dtype(at::kCUDA)};
}

CudaAutocastScope::CudaAutocastScope(CudaAutocastState state) : previous_(current_cuda_autocast()) {
  if (!state.enabled) return;
  entered_ = true;
  at::autocast::set_autocast_dtype(at::kCUDA, state.dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::increment_nesting();
}

CudaAutocastScope::~CudaAutocastScope() {
  if (!entered_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, previous_.enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, previous_.dtype);
  // The weight casts cached inside the region are dropped when the outermost region ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}
#else
CudaAutocastState current_cuda_autocast() { return {}; }
CudaAutocastScope::CudaAutocastScope(CudaAutocastState) {}
CudaAutocastScope::~CudaAutocastScope() = default;
#endif

}  // namespace rakv::util
