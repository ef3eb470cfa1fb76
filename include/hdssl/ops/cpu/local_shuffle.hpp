#pragma once
// CPU loop of the local pixel shuffle: the functors of local_shuffle_functor.hpp under at::parallel_for.
// Same plan and same "later block wins" result as the CUDA kernel, hence bit-identical output for the same keys.
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

  // Slabs of 32 x-planes: each tile scans every block origin once, so few tiles; 4 per reference view
  // still balance two threads. No owner map: a tile's thread writes its blocks in order (later wins).
  ShuffleTiling tiling;
  tiling.nx = nx;
  tiling.ny = ny;
  tiling.nz = nz;
  tiling.tx = std::max<std::int32_t>(1, std::min<std::int32_t>(nx, 32));
  tiling.ty = ny;
  tiling.tz = nz;
  const std::int64_t tiles = tiling.tiles_per_view();
  at::parallel_for(0, views * tiles, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const std::int64_t v = i / tiles;
      const TileBox tile = tiling.tile(i % tiles);
      f.copy_tile(v, tile);
      if (!f.applied(v)) continue;
      for (std::int32_t k = 0; k < params.blocks; ++k) f.write_block(v, tile, k);
    }
  });
}

}  // namespace hdssl::ops::cpu
