#pragma once
// CUDA kernels of the batched augmentations: one thread per index of a functor of augment_functors.hpp (one
// voxel, or one Box-Muller pair for the noise), grid-stride. The functors hold the arithmetic and the random
// draws, which the tests also run on the host against the one-view CPU paths.
#include "hdssl/ops/augment_functors.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace hdssl::ops::cuda {

constexpr int kAugmentThreads = 256;

template <typename F>
__global__ void __launch_bounds__(kAugmentThreads) for_each_index_kernel(F f, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

/// f(i) for i in [0, f.size()) on `stream`; returns the launch status.
template <typename F>
cudaError_t for_each_index(const F& f, cudaStream_t stream) {
  const std::int64_t n = f.size();
  if (n <= 0) return cudaSuccess;
  // Enough blocks to fill any current GPU many times over; the grid-stride loop covers the rest.
  const std::int64_t blocks = std::min<std::int64_t>((n + kAugmentThreads - 1) / kAugmentThreads, std::int64_t{1} << 16);
  for_each_index_kernel<F><<<static_cast<unsigned>(blocks), kAugmentThreads, 0, stream>>>(f, n);
  return cudaGetLastError();
}

}  // namespace hdssl::ops::cuda
