# Dependencies of the hdssl::hdssl interface target. Used both when building hdssl
# and (through hdsslConfig.cmake) when a consumer calls find_package(hdssl).
include(CMakeFindDependencyMacro)
# Imported targets are directory-scoped; when hdssl is pulled in with add_subdirectory/FetchContent the
# consumer's own targets link them too, so they are made global (CMake >= 3.24 honours this variable).
set(_hdssl_saved_targets_global "${CMAKE_FIND_PACKAGE_TARGETS_GLOBAL}")
set(CMAKE_FIND_PACKAGE_TARGETS_GLOBAL ON)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(ZLIB)
# at::parallel_for is inlined into our own translation units; with LibTorch's OpenMP backend (Debian's
# and the PyTorch wheels') it runs in parallel only where those units are compiled with OpenMP.
find_package(OpenMP QUIET)
if(NOT OpenMP_CXX_FOUND)
  message(WARNING "hdssl: no OpenMP for C++: hdssl's CPU loops (at::parallel_for) will run on one thread")
endif()
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(nlohmann_json 3.9)
find_dependency(NIfTI)          # cmake/FindNIfTI.cmake (Debian's NIFTIConfig.cmake is broken)
# stb (Debian's libstb-dev): PNG pictures (training curves, segmentation slices); headers only.
if(NOT TARGET hdssl::stb)
  find_path(HDSSL_STB_INCLUDE_DIR stb/stb_image_write.h PATH_SUFFIXES include)
  if(NOT HDSSL_STB_INCLUDE_DIR)
    message(FATAL_ERROR "hdssl: stb headers not found (stb/stb_image_write.h); install libstb-dev or set HDSSL_STB_INCLUDE_DIR")
  endif()
  add_library(hdssl::stb INTERFACE IMPORTED GLOBAL)
  set_target_properties(hdssl::stb PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${HDSSL_STB_INCLUDE_DIR}")
endif()
# LibTorch: Debian's libtorch-dev (1.13, CPU) or any LibTorch >= 1.13 via CMAKE_PREFIX_PATH
# (e.g. the CUDA build inside a PyTorch wheel: python3 -c 'import torch; print(torch.utils.cmake_prefix_path)').
find_dependency(Torch)
if(NOT TARGET hdssl::torch)
  # LibTorch's imported targets do not carry TORCH_CXX_FLAGS (the C++11 ABI switch);
  # wrap both in one interface target so consumers get a consistent ABI.
  add_library(hdssl::torch INTERFACE IMPORTED GLOBAL)
  separate_arguments(_hdssl_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  set_target_properties(hdssl::torch PROPERTIES
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}"
    INTERFACE_COMPILE_OPTIONS "${_hdssl_torch_flags}")
endif()
# c10d's backends for data-parallel training (include/hdssl/train/distributed.hpp). Gloo: its headers
# (Debian's libgloo-dev; bundled in a PyTorch wheel's include folder) and, where it is a shared library of
# its own (Debian), libgloo. NCCL: a CUDA LibTorch and NCCL's nccl.h (CUDA toolkit or the nvidia-nccl wheel).
if(NOT TARGET hdssl::c10d)
  add_library(hdssl::c10d INTERFACE IMPORTED GLOBAL)
  find_path(HDSSL_C10D_INCLUDE_DIR torch/csrc/distributed/c10d/ProcessGroupGloo.hpp HINTS ${TORCH_INCLUDE_DIRS})
  find_path(HDSSL_GLOO_INCLUDE_DIR gloo/algorithm.h HINTS ${TORCH_INCLUDE_DIRS})
  find_library(HDSSL_GLOO_LIBRARY gloo)
  set(HDSSL_WITH_GLOO OFF)
  if(HDSSL_C10D_INCLUDE_DIR AND HDSSL_GLOO_INCLUDE_DIR)
    set(HDSSL_WITH_GLOO ON)
    set_property(TARGET hdssl::c10d APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS USE_C10D_GLOO HDSSL_WITH_GLOO=1)
    set_property(TARGET hdssl::c10d APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${HDSSL_GLOO_INCLUDE_DIR}")
    if(HDSSL_GLOO_LIBRARY)
      set_property(TARGET hdssl::c10d APPEND PROPERTY INTERFACE_LINK_LIBRARIES "${HDSSL_GLOO_LIBRARY}")
    endif()
  endif()
  set(HDSSL_WITH_NCCL OFF)
  if(TARGET torch_cuda AND HDSSL_C10D_INCLUDE_DIR)
    find_path(HDSSL_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    if(HDSSL_NCCL_INCLUDE_DIR)
      set(HDSSL_WITH_NCCL ON)
      set_property(TARGET hdssl::c10d APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS USE_C10D_NCCL HDSSL_WITH_NCCL=1)
      set_property(TARGET hdssl::c10d APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${HDSSL_NCCL_INCLUDE_DIR}")
    endif()
  endif()
  if(NOT HDSSL_WITH_GLOO AND NOT HDSSL_WITH_NCCL)
    message(STATUS "hdssl: no c10d backend found (install libgloo-dev): training runs as one process only")
  endif()
endif()
set(CMAKE_FIND_PACKAGE_TARGETS_GLOBAL "${_hdssl_saved_targets_global}")
