// Shared declarations of rakv's framework-free CUDA kernels (kernels/cuda/).
//
// These headers never include CUDA or LibTorch headers, so that the LibTorch ops layer can include
// them from plain C++ files. A stream is passed as CUstream_st* (the type cudaStream_t names), and
// every launcher returns an int that is a cudaError_t value: 0 is success, anything else is an
// error the caller must report (cudaGetErrorString gives its name; last_error_detail() says which
// argument was wrong when a launcher rejected its parameters).
#pragma once

#include <cstdint>

struct CUstream_st;

namespace rakv::kernels::cuda {

using Stream = CUstream_st*;  // the same type as cudaStream_t

// Element types of the attention inputs.
enum class ElemType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Human-readable reason of the last parameter error returned by a launcher on this host thread
// (empty when the last launcher call succeeded or failed inside CUDA itself).
const char* last_error_detail();

}  // namespace rakv::kernels::cuda
