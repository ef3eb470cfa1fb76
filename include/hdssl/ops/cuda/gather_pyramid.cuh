#pragma once
// CUDA kernels of the pyramid gather: every level of every row in one launch, forward and backward.
// One thread block per row n, its threads over the output columns j (channels, fastest): output writes are
// coalesced, and so are the reads of channels-last-3d levels; NCDHW levels read one element per sector.
//
// Backward: atomicAdd into an accumulator per level. Float32 gradients accumulate in place. For bf16
// the caller passes float32 accumulators and rounds them to bf16 once at the end: bf16 atomics would round
// after every addition, and a coarse level cell receives hundreds of additions (all the voxels of a
// 16x16x16 region at level 4), so its sum would lose most of its bits.
#include "hdssl/ops/gather_functor.hpp"

#include <cuda_runtime.h>

#include <cstdint>

namespace hdssl::ops::cuda {

constexpr int kGatherThreads = 256;

// Thread blocks walk rows, threads walk the channels of a row: no 64-bit division per element, and the
// row's index entries are read once per block (a broadcast).
template <typename T>
__global__ void __launch_bounds__(kGatherThreads) gather_forward_kernel(GatherForwardFunctor<T> f) {
  const std::int32_t total = f.src.total;
  for (std::int64_t n = blockIdx.x; n < f.index.rows; n += gridDim.x)
    for (std::int32_t j = threadIdx.x; j < total; j += blockDim.x) f(n, j);
}

struct AtomicAddF32 {
  HDSSL_HOST_DEVICE void operator()(float* slot, float value) const {
#if defined(__CUDA_ARCH__)
    atomicAdd(slot, value);
#else
    *slot += value;
#endif
  }
};

template <typename T>
__global__ void __launch_bounds__(kGatherThreads) gather_backward_kernel(GatherBackwardFunctor<T, float> f) {
  const std::int32_t total = f.dst.total;
  for (std::int64_t n = blockIdx.x; n < f.index.rows; n += gridDim.x)
    for (std::int32_t j = threadIdx.x; j < total; j += blockDim.x) f(n, j, AtomicAddF32{});
}

/// One thread block per row, capped (grid-stride loops take the rest).
inline unsigned gather_grid(std::int64_t rows) {
  const std::int64_t cap = 1 << 20;
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > cap ? cap : rows));
}

/// out[n, offset_i + c] = level_i[...] for all rows and levels, on `stream`.
template <typename T>
cudaError_t gather_forward(const GatherForwardFunctor<T>& f, cudaStream_t stream) {
  if (f.index.rows == 0 || f.src.total == 0) return cudaSuccess;
  gather_forward_kernel<T><<<gather_grid(f.index.rows), kGatherThreads, 0, stream>>>(f);
  return cudaGetLastError();
}

/// Adds grad_out into float32 accumulators (zeroed by the caller), on `stream`.
template <typename T>
cudaError_t gather_backward(const GatherBackwardFunctor<T, float>& f, cudaStream_t stream) {
  if (f.index.rows == 0 || f.dst.total == 0) return cudaSuccess;
  gather_backward_kernel<T><<<gather_grid(f.index.rows), kGatherThreads, 0, stream>>>(f);
  return cudaGetLastError();
}

}  // namespace hdssl::ops::cuda
