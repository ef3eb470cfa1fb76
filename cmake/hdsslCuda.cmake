# CUDA: raw kernels (include/hdssl/ops/cuda/*.cuh, no LibTorch inside) are compiled by nvcc
# whenever nvcc exists, into hdssl_cuda_kernels; the LibTorch glue (hdssl::cuda ops) is built
# only when the LibTorch found is itself CUDA-enabled (e.g. on a GPU machine).
#
# Included after the hdssl INTERFACE target exists. Results:
#   HDSSL_HAVE_NVCC        nvcc found, CUDA language enabled, target hdssl_cuda_kernels built (ALL)
#   HDSSL_TORCH_HAS_CUDA   the LibTorch in use has CUDA
#   HDSSL_WITH_CUDA        both: hdssl links the kernels and compiles with HDSSL_WITH_CUDA=1, so every
#                          binary of the build gets the CUDA paths of hdssl's ops (target hdssl::cuda too)
get_filename_component(_hdssl_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
option(HDSSL_CUDA "Compile the CUDA kernels when nvcc is available" ON)
set(HDSSL_HAVE_NVCC OFF)
set(HDSSL_TORCH_HAS_CUDA OFF)
set(HDSSL_WITH_CUDA OFF)
if(HDSSL_CUDA AND HDSSL_TOP_LEVEL)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # A100 and H100/H200; CUDA 13 supports compute capability 7.5 and newer.
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(HDSSL_HAVE_NVCC ON)
  endif()
  if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda OR C10_CUDA_LIBRARY OR
     (TORCH_INSTALL_PREFIX AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/libtorch_cuda.so"))
    set(HDSSL_TORCH_HAS_CUDA ON)
  endif()
endif()

if(HDSSL_HAVE_NVCC)
  # The compiled side of the header-only kernels: launch.hpp's entry points (kernels.cu). No LibTorch.
  add_library(hdssl_cuda_kernels STATIC "${_hdssl_root}/include/hdssl/ops/cuda/kernels.cu")
  target_include_directories(hdssl_cuda_kernels PUBLIC "$<BUILD_INTERFACE:${_hdssl_root}/include>")
  target_compile_features(hdssl_cuda_kernels PUBLIC cxx_std_17)
  # Shared CUDA runtime: the same libcudart as LibTorch's, so streams and errors cross between them.
  set_target_properties(hdssl_cuda_kernels PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY Shared
    CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  # Keep register use and spills visible in CI logs only when asked (-DHDSSL_CUDA_VERBOSE=ON).
  option(HDSSL_CUDA_VERBOSE "Print nvcc's per-kernel register and shared-memory use" OFF)
  if(HDSSL_CUDA_VERBOSE)
    target_compile_options(hdssl_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
  endif()
  find_package(CUDAToolkit QUIET)
  if(TARGET CUDA::cudart)
    target_link_libraries(hdssl_cuda_kernels PUBLIC CUDA::cudart)
  endif()
endif()

if(HDSSL_HAVE_NVCC AND HDSSL_TORCH_HAS_CUDA)
  set(HDSSL_WITH_CUDA ON)
  # BUILD_INTERFACE only: an installed hdssl stays CPU-only unless its consumer compiles kernels.cu itself.
  target_link_libraries(hdssl INTERFACE "$<BUILD_INTERFACE:hdssl_cuda_kernels>")
  target_compile_definitions(hdssl INTERFACE "$<BUILD_INTERFACE:HDSSL_WITH_CUDA=1>")
  add_library(hdssl::cuda ALIAS hdssl_cuda_kernels)
endif()
message(STATUS "hdssl: nvcc ${HDSSL_HAVE_NVCC}, CUDA-enabled LibTorch ${HDSSL_TORCH_HAS_CUDA}, CUDA ops ${HDSSL_WITH_CUDA}")
