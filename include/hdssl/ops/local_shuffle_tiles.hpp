#pragma once
// The device algorithm of the local pixel shuffle (semantics and random plan: local_shuffle_functor.hpp),
// written as host/device code so that the tests run it on the host thread by thread, as a CUDA thread
// block would, and compare it with a naive sequential oracle.
//
// 1. Bin (one thread per block, right after ShufflePlanFunctor::block drew its origin): block k of view v
//    appends k to the bin of every device tile it touches (an atomic counter per bin, fixed capacity).
//    A tile then visits only its own blocks (about 90 of 5000 for the reference patch) instead of
//    scanning every origin of its view.
// 2. Apply (one thread block per tile of a view), three phases separated by barriers:
//    clear  the tile's owner map (one 64-bit entry per voxel, shared memory) is zeroed;
//    mark   one thread per (binned block, block voxel) stores max(entry, (k + 1) << 32 | source), where
//           source is the in-view element offset the voxel receives from block k. The highest block index
//           wins whatever the order of the atomics (later block wins), and its source rides along, so
//           writing needs no plan lookups and no divisions. A bin that overflowed (more blocks than its
//           capacity: only tiny views with many blocks) makes its tile scan every block instead;
//    write  one warp per (x, y) row of the tile, lanes along z (coalesced): out = in[source], or the voxel
//           unchanged where no block covers it.
// Global traffic: one read and one write per voxel, plus the plan and the bins (a few MB, L2-resident).
#include "hdssl/config.hpp"
#include "hdssl/ops/local_shuffle_functor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace hdssl::ops {

/// One owner-map entry: 0 = no block covers the voxel, else (k + 1) << 32 | in-view source offset.
using ShuffleOwner = unsigned long long;  // the type of CUDA's 64-bit atomicMax

/// Voxels of one device tile: its owner map is 32 KB of shared memory, under the default static limit.
constexpr std::int32_t kShuffleDeviceTileVoxels = 4096;

/// Threads of a device tile are grouped in warps of this many for the write phase (rows along z).
constexpr std::int32_t kShuffleWarp = 32;

/// The device tiles of views of extents (nx, ny, nz): at most kShuffleDeviceTileVoxels voxels, 32 along z
/// (the contiguous axis, one warp per row), then a power of two along y: 16 x 8 x 32 for 128 x 128 x 32.
inline ShuffleTiling device_shuffle_tiling(std::int32_t nx, std::int32_t ny, std::int32_t nz) {
  ShuffleTiling t;
  t.nx = nx;
  t.ny = ny;
  t.nz = nz;
  t.tz = std::min(nz, kShuffleWarp);
  const std::int32_t plane = kShuffleDeviceTileVoxels / t.tz;  // x * y budget of one tile
  std::int32_t ty = 1;
  while (4 * ty * ty <= plane) ty *= 2;  // largest power of two with ty * ty <= plane
  t.ty = std::min(ny, ty);
  t.tx = std::max(1, std::min(nx, plane / t.ty));
  return t;
}

/// Bins of the blocks per (view, device tile), in caller-provided memory (device memory on CUDA).
struct ShuffleBins {
  std::int32_t* counts = nullptr;  ///< [V * tiles]: blocks that touch the tile (may exceed capacity)
  std::int32_t* blocks = nullptr;  ///< [V * tiles * capacity]: their indices, in any order
  std::int32_t capacity = 0;
};

/// Bin capacity for views of this geometry: the largest expected number of blocks per tile (an origin
/// overlaps a tile of extent t along an axis for at most t + b - 1 of its r values) plus eight standard
/// deviations and some slack. Overflow is then practically impossible, and harmless if it happens.
inline std::int32_t shuffle_bin_capacity(const LocalShuffleParams& params, const ShuffleGeometry& g,
                                         const ShuffleTiling& t) {
  const auto share = [](std::int32_t te, std::int32_t b, std::int32_t r) {
    return std::min(1.0, static_cast<double>(te + b - 1) / r);
  };
  const double mean = params.blocks * share(t.tx, g.bx, g.rx) * share(t.ty, g.by, g.ry) * share(t.tz, g.bz, g.rz);
  const double capacity = std::ceil(mean + 8.0 * std::sqrt(mean) + 32.0);
  return static_cast<std::int32_t>(std::min<double>(params.blocks, capacity));
}

/// Step 1: puts block k of view v into the bin of every tile it touches. `add(int32_t* counter, int32_t 1)`
/// must return the counter's old value and increment it (atomically where threads share the bins).
struct ShuffleBinFunctor {
  ShufflePlan plan;
  LocalShuffleParams params;
  ShuffleGeometry geom;
  ShuffleTiling tiling;
  ShuffleBins bins;

  template <typename AtomicAdd>
  HDSSL_HOST_DEVICE void bin(std::int64_t v, std::int32_t k, AtomicAdd add) const {
    std::int32_t ox, oy, oz;
    unpack_origin(plan.origins[v * params.blocks + k], ox, oy, oz);
    const std::int32_t cy = tiling.count_y(), cz = tiling.count_z();
    const std::int64_t first_bin = v * tiling.tiles_per_view();
    // Blocks lie inside the view (origin + extent <= dim), so the last tile index is in range.
    for (std::int32_t ix = ox / tiling.tx; ix <= (ox + geom.bx - 1) / tiling.tx; ++ix)
      for (std::int32_t iy = oy / tiling.ty; iy <= (oy + geom.by - 1) / tiling.ty; ++iy)
        for (std::int32_t iz = oz / tiling.tz; iz <= (oz + geom.bz - 1) / tiling.tz; ++iz) {
          const std::int64_t b = first_bin + (static_cast<std::int64_t>(ix) * cy + iy) * cz + iz;
          const std::int32_t slot = add(bins.counts + b, 1);
          if (slot < bins.capacity) bins.blocks[b * bins.capacity + slot] = k;
        }
  }
};

/// Step 2: the work of one thread block on tile t of view v. Each phase takes the calling thread's index and
/// the thread count (a multiple of kShuffleWarp); the caller puts a barrier between phases.
/// `max_into(ShuffleOwner* slot, ShuffleOwner e)` must store max(*slot, e), atomically where threads share
/// the map.
template <typename T>
struct ShuffleDeviceTile {
  ShuffleTileFunctor<T> f;  ///< in/out, strides, plan, parameters, geometry
  ShuffleTiling tiling;
  ShuffleBins bins;

  /// False for views left alone: the tile is then copied (write with no owner map) and nothing else.
  HDSSL_HOST_DEVICE bool shuffled(std::int64_t v) const { return f.applied(v) && f.params.blocks > 0; }

  HDSSL_HOST_DEVICE void clear(const TileBox& tile, ShuffleOwner* owner, std::int32_t thread,
                               std::int32_t threads) const {
    for (std::int32_t p = thread; p < tile.voxels(); p += threads) owner[p] = 0;
  }

  template <typename MaxInto>
  HDSSL_HOST_DEVICE void mark(std::int64_t v, std::int64_t t, const TileBox& tile, ShuffleOwner* owner,
                              std::int32_t thread, std::int32_t threads, MaxInto max_into) const {
    const std::int64_t b = v * tiling.tiles_per_view() + t;
    const std::int32_t count = bins.counts[b];
    const ShuffleGeometry& g = f.geom;
    if (count <= bins.capacity) {
      const std::int32_t* list = bins.blocks + b * bins.capacity;
      const std::int64_t pairs = static_cast<std::int64_t>(count) * g.n;
      for (std::int64_t i = thread; i < pairs; i += threads) {
        const std::int32_t k = list[i / g.n];
        const std::int32_t q = static_cast<std::int32_t>(i % g.n);
        const auto src = f.block_source(v, k);
        const std::int32_t x = src.ox + q / (g.by * g.bz), y = src.oy + (q / g.bz) % g.by, z = src.oz + q % g.bz;
        if (x < tile.x0 || x >= tile.x0 + tile.ex || y < tile.y0 || y >= tile.y0 + tile.ey || z < tile.z0 ||
            z >= tile.z0 + tile.ez)
          continue;
        max_into(owner + slot(tile, x, y, z), entry(src, k, x, y, z));
      }
      return;
    }
    // Overflowed bin: every block, each thread marking the part of its blocks inside the tile.
    std::int32_t lo[3], hi[3];
    for (std::int32_t k = thread; k < f.params.blocks; k += threads) {
      if (!f.clip(v, tile, k, lo, hi)) continue;
      const auto src = f.block_source(v, k);
      for (std::int32_t x = lo[0]; x < hi[0]; ++x)
        for (std::int32_t y = lo[1]; y < hi[1]; ++y)
          for (std::int32_t z = lo[2]; z < hi[2]; ++z) max_into(owner + slot(tile, x, y, z), entry(src, k, x, y, z));
    }
  }

  /// Writes every voxel of the tile once; `owner == nullptr` copies the tile unchanged.
  HDSSL_HOST_DEVICE void write(std::int64_t v, const TileBox& tile, const ShuffleOwner* owner, std::int32_t thread,
                               std::int32_t threads) const {
    const ViewStrides is = f.in_strides, os = f.out_strides;
    const std::int32_t lane = thread % kShuffleWarp, warp = thread / kShuffleWarp, warps = threads / kShuffleWarp;
    const std::int32_t rows = tile.ex * tile.ey;
    for (std::int32_t r = warp; r < rows; r += warps) {
      const std::int32_t x = tile.x0 + r / tile.ey, y = tile.y0 + r % tile.ey;
      for (std::int32_t lz = lane; lz < tile.ez; lz += kShuffleWarp) {
        const std::int32_t z = tile.z0 + lz;
        const ShuffleOwner e = owner != nullptr ? owner[r * tile.ez + lz] : 0;
        const std::int64_t from = e != 0 ? v * is.sv + static_cast<std::int64_t>(e & 0xFFFFFFFFull) : is.at(v, x, y, z);
        f.out[os.at(v, x, y, z)] = f.in[from];
      }
    }
  }

 private:
  /// Owner-map index of voxel (x, y, z) of the tile: x-major, z fastest (rows of the write phase).
  HDSSL_HOST_DEVICE static std::int32_t slot(const TileBox& tile, std::int32_t x, std::int32_t y, std::int32_t z) {
    return ((x - tile.x0) * tile.ey + (y - tile.y0)) * tile.ez + (z - tile.z0);
  }
  /// The entry block k leaves on voxel (x, y, z): its rank, then the in-view offset of the value it writes
  /// there (below 2^32: the front end checks the view's span).
  HDSSL_HOST_DEVICE ShuffleOwner entry(const typename ShuffleTileFunctor<T>::BlockSource& src, std::int32_t k,
                                       std::int32_t x, std::int32_t y, std::int32_t z) const {
    const std::int64_t offset = src.offset(f.in_strides, 0, x, y, z);
    return (static_cast<ShuffleOwner>(k + 1) << 32) | static_cast<ShuffleOwner>(offset);
  }
};

/// The device workspace of a batch: the plan (local_shuffle_functor.hpp), then the bin counters (zeroed
/// before each launch), then the bins. One buffer of bytes() bytes, carved by plan()/bins().
struct ShuffleDeviceLayout {
  std::int64_t views = 0;
  LocalShuffleParams params;
  ShuffleGeometry geom;
  ShuffleTiling tiling;
  std::int32_t capacity = 0;

  static ShuffleDeviceLayout of(std::int64_t views, std::int32_t nx, std::int32_t ny, std::int32_t nz,
                                const LocalShuffleParams& params) {
    ShuffleDeviceLayout l;
    l.views = views;
    l.params = params;
    l.geom = ShuffleGeometry::of(nx, ny, nz, params.divisor);
    l.tiling = device_shuffle_tiling(nx, ny, nz);
    l.capacity = shuffle_bin_capacity(params, l.geom, l.tiling);
    return l;
  }
  std::int64_t bin_count() const { return views * tiling.tiles_per_view(); }
  std::int64_t plan_bytes() const { return shuffle_plan_bytes(views, params, geom); }  // a multiple of 4
  std::int64_t counts_bytes() const { return bin_count() * static_cast<std::int64_t>(sizeof(std::int32_t)); }
  std::int64_t bytes() const {
    return plan_bytes() + counts_bytes() + bin_count() * capacity * static_cast<std::int64_t>(sizeof(std::int32_t));
  }
  ShufflePlan plan(void* buffer) const { return carve_shuffle_plan(buffer, views, params, geom); }
  ShuffleBins bins(void* buffer) const {
    ShuffleBins b;
    b.counts = reinterpret_cast<std::int32_t*>(static_cast<unsigned char*>(buffer) + plan_bytes());
    b.blocks = b.counts + bin_count();
    b.capacity = capacity;
    return b;
  }
};

/// Largest in-view element offset of views with these extents and strides: the owner map stores source
/// offsets in 32 bits, so the device path needs it below 2^32.
inline std::int64_t shuffle_view_span(std::int32_t nx, std::int32_t ny, std::int32_t nz, const ViewStrides& s) {
  return (nx - 1) * s.sx + (ny - 1) * s.sy + (nz - 1) * s.sz;
}

}  // namespace hdssl::ops
