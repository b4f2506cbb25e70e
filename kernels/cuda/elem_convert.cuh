// Element conversions shared by the memory-bound kernels: float <-> float / __half /
// __nv_bfloat16 in registers, four consecutive elements moved as one vector access, and a tag
// type for passing an element type through a generic lambda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace rakv::kernels::cuda::detail {

template <typename T>
struct TypeTag {
  using type = T;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// kVec consecutive elements as one aligned access.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};
template <typename T>
using Pack4 = Pack<T, 4>;

}  // namespace rakv::kernels::cuda::detail
