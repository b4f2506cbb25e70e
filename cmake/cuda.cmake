# CUDA kernels (kernels/cuda/*.cu) as the OBJECT library rakv_kernels_cuda.
#
# Included by the top-level CMakeLists.txt when RAKV_CUDA or RAKV_CUDA_COMPILE_ONLY is ON.
#  - RAKV_CUDA: the main CMakeLists links these objects into librakv, with CUDA::cudart.
#  - RAKV_CUDA_COMPILE_ONLY (CI, machines without a GPU or a CUDA LibTorch): the object library is
#    only compiled (it is part of `all`), which checks that the kernels build without warnings.
#
# Hopper only: sm_90a machine code (wgmma/setmaxnreg-capable) plus compute_90 PTX. The -gencode
# form is used rather than CUDA_ARCHITECTURES=90a, which some nvcc versions expand into an extra
# plain sm_90 pass that rejects sm_90a-only instructions (HOPPER.md).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Architectures are given through -gencode below; keep CMake from adding its own.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
endif()
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# C++20 like the rest of rakv. CMake releases older than CUDA 12 (3.25 on Debian 12) do not know
# nvcc's C++20 flag and refuse to generate (the CUDA standard defaults to CXX_STANDARD): teach them.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)

file(GLOB RAKV_CUDA_KERNEL_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu)
add_library(rakv_kernels_cuda OBJECT ${RAKV_CUDA_KERNEL_SOURCES})
target_include_directories(rakv_kernels_cuda PUBLIC ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(rakv_kernels_cuda PUBLIC CUDA::cudart)
set_target_properties(rakv_kernels_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON)

set(RAKV_CUDA_FLAGS
  -gencode=arch=compute_90a,code=sm_90a
  -gencode=arch=compute_90,code=sm_90
  --expt-relaxed-constexpr
  -O3
  -Xcompiler=-fPIC
  -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter)
if(RAKV_WERROR)
  list(APPEND RAKV_CUDA_FLAGS -Werror=all-warnings -Xcompiler=-Werror)
endif()
target_compile_options(rakv_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${RAKV_CUDA_FLAGS}>)
