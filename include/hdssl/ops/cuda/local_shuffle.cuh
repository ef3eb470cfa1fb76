#pragma once
// CUDA kernels of the local pixel shuffle for a batch of views: one launch draws the plans of every view
// (apply flag, permutation(s), block origins), one launch applies them. Thin wrappers around the functors of
// local_shuffle_functor.hpp, which the CPU path runs too.
//
// Apply kernel: one thread block per tile (at most kShuffleDeviceTileVoxels voxels) of one view. The tile's owner
// map lives in shared memory: the threads mark the blocks (atomicMax of the block index), then write every
// voxel of the tile exactly once. Global traffic is one read and one write per voxel plus the plan (a few
// hundred KB, served from L2).
#include "hdssl/ops/local_shuffle_functor.hpp"

#include <cuda_runtime.h>

#include <cstdint>

namespace hdssl::ops::cuda {

constexpr int kShuffleThreads = 256;

/// Threads [0, V) draw view v's flag and shared permutation; threads [V, V + V*K) draw block origins.
__global__ void shuffle_plan_kernel(ShufflePlanFunctor f, std::int64_t views) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < views) {
    f.view(i);
  } else if (i < views + views * f.params.blocks) {
    const std::int64_t b = i - views;
    f.block(b / f.params.blocks, b % f.params.blocks);
  }
}

/// max(*slot, k) in shared memory (host fallback only so that the functor's host instantiation compiles).
struct SharedMaxInto {
  HDSSL_HOST_DEVICE void operator()(std::int32_t* slot, std::int32_t k) const {
#if defined(__CUDA_ARCH__)
    atomicMax(slot, k);
#else
    if (k > *slot) *slot = k;
#endif
  }
};

template <typename T>
__global__ void __launch_bounds__(kShuffleThreads)
    shuffle_apply_kernel(ShuffleTileFunctor<T> f, ShuffleTiling tiling, std::int64_t tiles_per_view) {
  __shared__ std::int32_t owner[kShuffleDeviceTileVoxels];
  const std::int64_t v = static_cast<std::int64_t>(blockIdx.x) / tiles_per_view;
  const TileBox tile = tiling.tile(static_cast<std::int64_t>(blockIdx.x) % tiles_per_view);
  const std::int32_t n = tile.voxels();
  if (!f.applied(v) || f.params.blocks == 0) {  // uniform per thread block: no divergence at the barriers
    for (std::int32_t p = threadIdx.x; p < n; p += blockDim.x) f.write(v, tile, p, nullptr);
    return;
  }
  for (std::int32_t p = threadIdx.x; p < n; p += blockDim.x) ShuffleTileFunctor<T>::clear(owner, p);
  __syncthreads();
  for (std::int32_t k = threadIdx.x; k < f.params.blocks; k += blockDim.x) f.mark(v, tile, k, owner, SharedMaxInto{});
  __syncthreads();
  for (std::int32_t p = threadIdx.x; p < n; p += blockDim.x) f.write(v, tile, p, owner);
}

/// Shuffles `views` views from `in` into `out` (device memory, not overlapping) on `stream`.
/// `workspace` holds shuffle_plan_bytes(...) bytes of device memory; `keys.keys`, if set, is a
/// device array. Returns the launch status (cudaSuccess or the error of the failed launch).
template <typename T>
cudaError_t local_shuffle(const T* in, const ViewStrides& in_strides, T* out, const ViewStrides& out_strides,
                          std::int64_t views, std::int32_t nx, std::int32_t ny, std::int32_t nz, const ShuffleKeys& keys,
                          const LocalShuffleParams& params, void* workspace, cudaStream_t stream) {
  if (views <= 0 || nx <= 0 || ny <= 0 || nz <= 0) return cudaSuccess;
  const ShuffleGeometry geom = ShuffleGeometry::of(nx, ny, nz, params.divisor);
  const ShufflePlan plan = carve_shuffle_plan(workspace, views, params, geom);

  const std::int64_t plan_threads = views + views * params.blocks;
  const unsigned plan_grid = static_cast<unsigned>((plan_threads + kShuffleThreads - 1) / kShuffleThreads);
  shuffle_plan_kernel<<<plan_grid, kShuffleThreads, 0, stream>>>(ShufflePlanFunctor{plan, keys, params, geom}, views);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  ShuffleTileFunctor<T> f;
  f.in = in;
  f.out = out;
  f.in_strides = in_strides;
  f.out_strides = out_strides;
  f.plan = plan;
  f.params = params;
  f.geom = geom;
  const ShuffleTiling tiling = ShuffleTiling::device(nx, ny, nz);
  const std::int64_t tiles = tiling.tiles_per_view();
  shuffle_apply_kernel<T><<<static_cast<unsigned>(views * tiles), kShuffleThreads, 0, stream>>>(f, tiling, tiles);
  return cudaGetLastError();
}

}  // namespace hdssl::ops::cuda
