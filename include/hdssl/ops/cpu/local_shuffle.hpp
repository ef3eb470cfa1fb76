#pragma once
// CPU loop of the local pixel shuffle: the functors of local_shuffle_functor.hpp under at::parallel_for.
// Same plan, same owner rule as the CUDA kernel, hence bit-identical output for the same keys.
#include "hdssl/ops/local_shuffle_functor.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace hdssl::ops::cpu {

/// Host memory for a plan of `views` views (ShufflePlan points into it).
struct HostShufflePlan {
  std::vector<std::int32_t> applied;
  std::vector<std::uint64_t> origins;
  std::vector<std::int32_t> perms;
  ShufflePlan plan;

  HostShufflePlan(std::int64_t views, const LocalShuffleParams& params, const ShuffleGeometry& geom)
      : applied(static_cast<size_t>(views)),
        origins(static_cast<size_t>(views * params.blocks)),
        perms(static_cast<size_t>(ShufflePlan::perm_entries(views, params, geom))) {
    plan.applied = applied.data();
    plan.origins = origins.data();
    plan.perms = perms.data();
  }
};

/// Draws the plan of every view (parallel over views and over blocks).
inline void build_shuffle_plan(const ShufflePlanFunctor& f, std::int64_t views) {
  at::parallel_for(0, views, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t v = b; v < e; ++v) f.view(v);
  });
  const std::int64_t k = f.params.blocks;
  at::parallel_for(0, views * k, 1024, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) f.block(i / k, i % k);
  });
}

/// Shuffles `views` views of extents (nx, ny, nz) from `in` into `out` (distinct memory), each view
/// with its own key. T is any trivially copyable element type (the shuffle only moves values).
template <typename T>
void local_shuffle(const T* in, const ViewStrides& in_strides, T* out, const ViewStrides& out_strides,
                   std::int64_t views, std::int32_t nx, std::int32_t ny, std::int32_t nz, const ShuffleKeys& keys,
                   const LocalShuffleParams& params) {
  if (views <= 0 || nx <= 0 || ny <= 0 || nz <= 0) return;
  const ShuffleGeometry geom = ShuffleGeometry::of(nx, ny, nz, params.divisor);
  HostShufflePlan host(views, params, geom);
  build_shuffle_plan(ShufflePlanFunctor{host.plan, keys, params, geom}, views);

  ShuffleTileFunctor<T> f;
  f.in = in;
  f.out = out;
  f.in_strides = in_strides;
  f.out_strides = out_strides;
  f.plan = host.plan;
  f.params = params;
  f.geom = geom;

  // Slabs of a few x-planes: enough tiles to balance the threads, an owner map that stays in cache.
  ShuffleTiling tiling;
  tiling.nx = nx;
  tiling.ny = ny;
  tiling.nz = nz;
  tiling.tx = std::max<std::int32_t>(1, std::min<std::int32_t>(nx, 8));
  tiling.ty = ny;
  tiling.tz = nz;
  const std::int64_t tiles = tiling.tiles_per_view();
  auto max_into = [](std::int32_t* slot, std::int32_t k) {
    if (k > *slot) *slot = k;
  };
  at::parallel_for(0, views * tiles, 1, [&](std::int64_t b, std::int64_t e) {
    std::vector<std::int32_t> owner(static_cast<size_t>(tiling.tx) * tiling.ty * tiling.tz);
    for (std::int64_t i = b; i < e; ++i) {
      const std::int64_t v = i / tiles;
      const TileBox tile = tiling.tile(i % tiles);
      const std::int32_t n = tile.voxels();
      if (!f.applied(v) || params.blocks == 0) {
        for (std::int32_t p = 0; p < n; ++p) f.write(v, tile, p, nullptr);
        continue;
      }
      for (std::int32_t p = 0; p < n; ++p) ShuffleTileFunctor<T>::clear(owner.data(), p);
      for (std::int32_t k = 0; k < params.blocks; ++k) f.mark(v, tile, k, owner.data(), max_into);
      for (std::int32_t p = 0; p < n; ++p) f.write(v, tile, p, owner.data());
    }
  });
}

}  // namespace hdssl::ops::cpu
