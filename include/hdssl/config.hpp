#pragma once
// Build-wide switches of hdssl: version, host/device annotation, CUDA availability.

#define HDSSL_VERSION_MAJOR 0
#define HDSSL_VERSION_MINOR 1
#define HDSSL_VERSION_PATCH 0
#define HDSSL_VERSION_STRING "0.1.0"

// Functors written once for the CPU loop and its CUDA twin carry this annotation.
#if defined(__CUDACC__)
#define HDSSL_HOST_DEVICE __host__ __device__
#define HDSSL_DEVICE __device__
#else
#define HDSSL_HOST_DEVICE
#define HDSSL_DEVICE
#endif

// HDSSL_WITH_CUDA is defined (to 1) by the build when the LibTorch in use is CUDA-enabled and the
// CUDA tensor glue of hdssl's ops is compiled in. Without it every op runs on its CPU path.
#ifndef HDSSL_WITH_CUDA
#define HDSSL_WITH_CUDA 0
#endif
