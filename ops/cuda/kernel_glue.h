// What every CUDA op needs to call a framework-free kernel of kernels/cuda: the kernels' element
// type of a LibTorch dtype, the current stream of a tensor's device, one error message for a
// launcher's status, and the dtype a fused op writes under autocast.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/types.h>

#include <optional>

#include "rakv/kernels/cuda/common.h"
#include "rakv/util/autocast.h"

namespace rakv::ops::cuda {

// float32, float16 and bfloat16 map to the kernels' ElemType; anything else has none.
inline std::optional<kernels::cuda::ElemType> kernel_elem_type(torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return kernels::cuda::ElemType::kFloat32;
  if (dtype == torch::kBFloat16) return kernels::cuda::ElemType::kBFloat16;
  if (dtype == torch::kHalf) return kernels::cuda::ElemType::kFloat16;
  return std::nullopt;
}

// The current LibTorch stream of t's device, as the kernels take it.
inline kernels::cuda::Stream current_stream(const torch::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Fails with "<what> (CUDA) failed: <CUDA error> <launcher detail>" unless status is 0.
inline void check_launch(int status, const char* what) {
  TORCH_CHECK(status == 0, what, " (CUDA) failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)), " ",
              kernels::cuda::last_error_detail());
}

// The dtype the next GEMM reads: autocast's for a float32 input under CUDA autocast (the cast
// autocast would make anyway), else the input's own.
inline torch::ScalarType autocast_output_dtype(torch::ScalarType input) {
  const util::CudaAutocastState autocast = util::current_cuda_autocast();
  return input == torch::kFloat32 && autocast.enabled ? autocast.dtype : input;
}

}  // namespace rakv::ops::cuda
