# CUDA: raw kernels (include/hdssl/ops/cuda/*.cuh, no LibTorch inside) are compiled by nvcc into
# hdssl_cuda_kernels; the LibTorch glue (the CUDA branches of hdssl's ops, HDSSL_WITH_CUDA=1) is switched on
# only when the LibTorch found is itself CUDA-enabled (e.g. a PyTorch wheel's on a GPU machine).
#
# Three contexts, one file:
#   - hdssl's own build (HDSSL_TOP_LEVEL): HDSSL_CUDA defaults to ON and the kernels are compiled whenever
#     nvcc exists, even with a CPU LibTorch, so a kernel that stops compiling breaks the build anyway;
#   - add_subdirectory(hdssl) in another project, and
#   - find_package(hdssl) of an installed hdssl (hdsslConfig.cmake includes this file with
#     HDSSL_CUDA_INSTALLED_PREFIX set; kernels.cu is installed with the headers):
#     opt in with -DHDSSL_CUDA=ON; the kernels are then compiled in the consumer's build when nvcc and a
#     CUDA LibTorch are both there, and hdssl::hdssl carries them and HDSSL_WITH_CUDA=1.
#
# Results:
#   HDSSL_HAVE_NVCC        nvcc found, CUDA language enabled, target hdssl_cuda_kernels built
#   HDSSL_TORCH_HAS_CUDA   the LibTorch in use has CUDA
#   HDSSL_WITH_CUDA        both: hdssl links the kernels and compiles with HDSSL_WITH_CUDA=1, so every
#                          binary that links hdssl gets the CUDA paths of hdssl's ops (target hdssl::cuda too)
if(DEFINED HDSSL_CUDA_INSTALLED_PREFIX)
  set(_hdssl_cuda_include "${HDSSL_CUDA_INSTALLED_PREFIX}/include")
  set(_hdssl_cuda_target hdssl::hdssl)
  set(_hdssl_cuda_default OFF)
else()
  get_filename_component(_hdssl_cuda_include "${CMAKE_CURRENT_LIST_DIR}/../include" ABSOLUTE)
  set(_hdssl_cuda_target hdssl)
  set(_hdssl_cuda_default ${HDSSL_TOP_LEVEL})
endif()
option(HDSSL_CUDA "Compile hdssl's CUDA kernels when nvcc (and, outside hdssl's own build, a CUDA LibTorch) is available"
       ${_hdssl_cuda_default})
set(HDSSL_HAVE_NVCC OFF)
set(HDSSL_TORCH_HAS_CUDA OFF)
set(HDSSL_WITH_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda OR C10_CUDA_LIBRARY OR
   (TORCH_INSTALL_PREFIX AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/libtorch_cuda.so"))
  set(HDSSL_TORCH_HAS_CUDA ON)
endif()
if(HDSSL_CUDA AND (HDSSL_TOP_LEVEL OR HDSSL_TORCH_HAS_CUDA) AND NOT TARGET hdssl_cuda_kernels)
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
endif()

if(HDSSL_HAVE_NVCC)
  # The compiled side of the header-only kernels: launch.hpp's entry points (kernels.cu). No LibTorch.
  add_library(hdssl_cuda_kernels STATIC "${_hdssl_cuda_include}/hdssl/ops/cuda/kernels.cu")
  target_include_directories(hdssl_cuda_kernels PUBLIC "$<BUILD_INTERFACE:${_hdssl_cuda_include}>")
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
  if(DEFINED HDSSL_CUDA_INSTALLED_PREFIX)
    target_link_libraries(${_hdssl_cuda_target} INTERFACE hdssl_cuda_kernels)
    target_compile_definitions(${_hdssl_cuda_target} INTERFACE HDSSL_WITH_CUDA=1)
  else()
    # BUILD_INTERFACE: what hdssl installs stays CPU-only; its consumers opt in above.
    target_link_libraries(${_hdssl_cuda_target} INTERFACE "$<BUILD_INTERFACE:hdssl_cuda_kernels>")
    target_compile_definitions(${_hdssl_cuda_target} INTERFACE "$<BUILD_INTERFACE:HDSSL_WITH_CUDA=1>")
  endif()
  # The PyTorch wheels' libtorch exports its own copies of some libstdc++ symbols (std::filesystem among
  # them); resolved there they crash. libstdc++ first on the link line makes the C++ runtime win.
  if(DEFINED HDSSL_CUDA_INSTALLED_PREFIX)
    target_link_options(${_hdssl_cuda_target} INTERFACE "LINKER:--no-as-needed" "-lstdc++")
  else()
    target_link_options(${_hdssl_cuda_target} INTERFACE "$<BUILD_INTERFACE:-Wl$<COMMA>--no-as-needed>"
                        "$<BUILD_INTERFACE:-lstdc++>")
  endif()
  add_library(hdssl::cuda ALIAS hdssl_cuda_kernels)
endif()
message(STATUS "hdssl: nvcc ${HDSSL_HAVE_NVCC}, CUDA-enabled LibTorch ${HDSSL_TORCH_HAS_CUDA}, CUDA ops ${HDSSL_WITH_CUDA}")
