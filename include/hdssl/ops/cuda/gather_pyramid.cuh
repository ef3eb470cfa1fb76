#pragma once
// CUDA kernels of the pyramid gather: every level of every row in one launch, forward and backward.
// One thread per output element (n, j), j (the channel, fastest) varying across a warp: output writes are
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

template <typename T>
__global__ void __launch_bounds__(kGatherThreads) gather_forward_kernel(GatherForwardFunctor<T> f, std::int64_t elements) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < elements; e += stride)
    f(e / f.src.total, static_cast<std::int32_t>(e % f.src.total));
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
__global__ void __launch_bounds__(kGatherThreads)
    gather_backward_kernel(GatherBackwardFunctor<T, float> f, std::int64_t elements) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < elements; e += stride)
    f(e / f.dst.total, static_cast<std::int32_t>(e % f.dst.total), AtomicAddF32{});
}

/// A grid that covers `elements` with grid-stride loops, capped so huge inputs do not launch millions of blocks.
inline unsigned gather_grid(std::int64_t elements) {
  const std::int64_t blocks = (elements + kGatherThreads - 1) / kGatherThreads;
  const std::int64_t cap = 65536;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

/// out[n, offset_i + c] = level_i[...] for all rows and levels, on `stream`.
template <typename T>
cudaError_t gather_forward(const GatherForwardFunctor<T>& f, cudaStream_t stream) {
  const std::int64_t elements = f.index.rows * f.src.total;
  if (elements == 0) return cudaSuccess;
  gather_forward_kernel<T><<<gather_grid(elements), kGatherThreads, 0, stream>>>(f, elements);
  return cudaGetLastError();
}

/// Adds grad_out into float32 accumulators (zeroed by the caller), on `stream`.
template <typename T>
cudaError_t gather_backward(const GatherBackwardFunctor<T, float>& f, cudaStream_t stream) {
  const std::int64_t elements = f.index.rows * f.dst.total;
  if (elements == 0) return cudaSuccess;
  gather_backward_kernel<T><<<gather_grid(elements), kGatherThreads, 0, stream>>>(f, elements);
  return cudaGetLastError();
}

}  // namespace hdssl::ops::cuda
