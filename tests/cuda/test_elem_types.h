// Host-side views of the kernels' element types for the standalone CUDA tests: the raw bits a
// device buffer holds and the float value they round to, so that float64 references are computed
// from exactly the values the kernel sees.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "rakv/kernels/cuda/common.h"

namespace rakv_test {

template <typename E>
struct Host;
template <>
struct Host<__half> {
  static uint16_t encode(float x) {
    return static_cast<__half_raw>(__float2half_rn(x)).x;
  }
  static float decode(uint16_t b) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
  using Bits = uint16_t;
  static constexpr rakv::kernels::cuda::ElemType type = rakv::kernels::cuda::ElemType::kFloat16;
  static constexpr const char* name = "fp16";
};
template <>
struct Host<__nv_bfloat16> {
  static uint16_t encode(float x) {
    return static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(x)).x;
  }
  static float decode(uint16_t b) {
    __nv_bfloat16_raw r;
    r.x = b;
    return __bfloat162float(__nv_bfloat16(r));
  }
  using Bits = uint16_t;
  static constexpr rakv::kernels::cuda::ElemType type = rakv::kernels::cuda::ElemType::kBFloat16;
  static constexpr const char* name = "bf16";
};
template <>
struct Host<float> {
  static uint32_t encode(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
  }
  static float decode(uint32_t b) {
    float x;
    std::memcpy(&x, &b, 4);
    return x;
  }
  using Bits = uint32_t;
  static constexpr rakv::kernels::cuda::ElemType type = rakv::kernels::cuda::ElemType::kFloat32;
  static constexpr const char* name = "fp32";
};

}  // namespace rakv_test
