// Run-time choices made compile-time, in the flash-attention style: each switch instantiates the
// body once per supported value, and the default branch fails with the bad value (the launcher
// returns cudaErrorInvalidValue and last_error_detail() names the value).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "rakv/kernels/cuda/common.h"

namespace rakv::kernels::cuda::detail {
// Records the reason of a parameter error for last_error_detail(); returns cudaErrorInvalidValue.
int invalid_argument(const char* fmt, ...);
void clear_error_detail();
}  // namespace rakv::kernels::cuda::detail

// Element type: the body sees `elem_t` (__half, __nv_bfloat16 or float).
#define RAKV_DISPATCH_ELEM_TYPE(TYPE, ...)                                                      \
  [&]() -> int {                                                                                \
    switch (TYPE) {                                                                             \
      case ::rakv::kernels::cuda::ElemType::kFloat16: {                                         \
        using elem_t = __half;                                                                  \
        return __VA_ARGS__();                                                                   \
      }                                                                                         \
      case ::rakv::kernels::cuda::ElemType::kBFloat16: {                                        \
        using elem_t = __nv_bfloat16;                                                           \
        return __VA_ARGS__();                                                                   \
      }                                                                                         \
      case ::rakv::kernels::cuda::ElemType::kFloat32: {                                         \
        using elem_t = float;                                                                   \
        return __VA_ARGS__();                                                                   \
      }                                                                                         \
      default:                                                                                  \
        return ::rakv::kernels::cuda::detail::invalid_argument(                                 \
            "unsupported element type %d (float32=0, float16=1, bfloat16=2)", int(TYPE));      \
    }                                                                                           \
  }()

// Head dim: the body sees `constexpr int kHeadDim`. Only the head dims real models use.
#define RAKV_DISPATCH_HEAD_DIM(D, ...)                                                          \
  [&]() -> int {                                                                                \
    switch (D) {                                                                                \
      case 64: {                                                                                \
        constexpr int kHeadDim = 64;                                                            \
        return __VA_ARGS__();                                                                   \
      }                                                                                         \
      case 128: {                                                                               \
        constexpr int kHeadDim = 128;                                                           \
        return __VA_ARGS__();                                                                   \
      }                                                                                         \
      default:                                                                                  \
        return ::rakv::kernels::cuda::detail::invalid_argument(                                 \
            "unsupported head dim %d (instantiated: 64, 128)", int(D));                        \
    }                                                                                           \
  }()
