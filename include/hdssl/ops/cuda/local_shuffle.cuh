#pragma once
// CUDA kernels of the local pixel shuffle for a batch of views: one launch draws the plans of every view
// (apply flag, permutation(s), block origins) and bins the blocks by device tile, one launch applies them,
// one thread block per tile. Thin wrappers around the host/device code of local_shuffle_functor.hpp and
// local_shuffle_tiles.hpp (which has the algorithm and why), which the tests also run on the host.
#include "hdssl/ops/local_shuffle_functor.hpp"
#include "hdssl/ops/local_shuffle_tiles.hpp"

#include <cuda_runtime.h>

#include <cstdint>

namespace hdssl::ops::cuda {

constexpr int kShuffleThreads = 256;

/// Threads [0, V) draw view v's flag and shared permutation; threads [V, V + V*K) draw block origins and
/// bin their block.
__global__ void shuffle_plan_kernel(ShufflePlanFunctor f, ShuffleBinFunctor bins, std::int64_t views) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < views) {
    f.view(i);
  } else if (i < views + views * f.params.blocks) {
    const std::int64_t b = i - views;
    const std::int64_t v = b / f.params.blocks;
    const auto k = static_cast<std::int32_t>(b % f.params.blocks);
    f.block(v, k);
    bins.bin(v, k, [](std::int32_t* counter, std::int32_t one) { return atomicAdd(counter, one); });
  }
}

/// max(*slot, e) on a shared-memory owner map.
struct SharedMaxInto {
  __device__ void operator()(ShuffleOwner* slot, ShuffleOwner e) const { atomicMax(slot, e); }
};

template <typename T>
__global__ void __launch_bounds__(kShuffleThreads) shuffle_apply_kernel(ShuffleDeviceTile<T> d) {
  __shared__ ShuffleOwner owner[kShuffleDeviceTileVoxels];
  const std::int64_t tiles = d.tiling.tiles_per_view();
  const std::int64_t v = static_cast<std::int64_t>(blockIdx.x) / tiles;
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) % tiles;
  const TileBox tile = d.tiling.tile(t);
  const auto thread = static_cast<std::int32_t>(threadIdx.x), threads = static_cast<std::int32_t>(blockDim.x);
  if (!d.shuffled(v)) {  // uniform per thread block: no divergence at the barriers
    d.write(v, tile, nullptr, thread, threads);
    return;
  }
  d.clear(tile, owner, thread, threads);
  __syncthreads();
  d.mark(v, t, tile, owner, thread, threads, SharedMaxInto{});
  __syncthreads();
  d.write(v, tile, owner, thread, threads);
}

/// Shuffles `views` views from `in` into `out` (device memory, not overlapping) on `stream`. `workspace`
/// holds ShuffleDeviceLayout::of(views, nx, ny, nz, params).bytes() bytes of device memory; `keys.keys`, if
/// set, is a device array. Returns the status of the launches (cudaSuccess or the first error).
template <typename T>
cudaError_t local_shuffle(const T* in, const ViewStrides& in_strides, T* out, const ViewStrides& out_strides,
                          std::int64_t views, std::int32_t nx, std::int32_t ny, std::int32_t nz, const ShuffleKeys& keys,
                          const LocalShuffleParams& params, void* workspace, cudaStream_t stream) {
  if (views <= 0 || nx <= 0 || ny <= 0 || nz <= 0) return cudaSuccess;
  const ShuffleDeviceLayout layout = ShuffleDeviceLayout::of(views, nx, ny, nz, params);
  const ShufflePlan plan = layout.plan(workspace);
  const ShuffleBins bins = layout.bins(workspace);
  cudaError_t err = cudaMemsetAsync(bins.counts, 0, static_cast<size_t>(layout.counts_bytes()), stream);
  if (err != cudaSuccess) return err;

  const std::int64_t plan_threads = views + views * params.blocks;
  const unsigned plan_grid = static_cast<unsigned>((plan_threads + kShuffleThreads - 1) / kShuffleThreads);
  shuffle_plan_kernel<<<plan_grid, kShuffleThreads, 0, stream>>>(
      ShufflePlanFunctor{plan, keys, params, layout.geom},
      ShuffleBinFunctor{plan, params, layout.geom, layout.tiling, bins}, views);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  ShuffleDeviceTile<T> d;
  d.f.in = in;
  d.f.out = out;
  d.f.in_strides = in_strides;
  d.f.out_strides = out_strides;
  d.f.plan = plan;
  d.f.params = params;
  d.f.geom = layout.geom;
  d.tiling = layout.tiling;
  d.bins = bins;
  shuffle_apply_kernel<T><<<static_cast<unsigned>(layout.bin_count()), kShuffleThreads, 0, stream>>>(d);
  return cudaGetLastError();
}

}  // namespace hdssl::ops::cuda
