#pragma once
// Local pixel shuffling (method.md 6.1), written once for the CPU loop and the CUDA kernel.
//
// Semantics (reference): per view, with probability p, K blocks of extent floor(dim / divisor) per axis
// (at least 1) are placed at origins uniform in [0, dim - extent) (at least {0}); every block reads the
// ORIGINAL view and writes its voxels back permuted, out[o + q] = in[o + perm[q]] (q, perm[q] flat
// offsets inside the block, z fastest, as numpy's flatten); where blocks overlap, the later block wins.
// One permutation is shared by all blocks of a view [ref]; `per_block_permutation` draws one per block
// (Models Genesis).
//
// Parallel, deterministic "later block wins": the volume is cut into tiles, and each voxel ends up with the
// value written by the highest-index block covering it. On the CPU one thread owns a tile: it copies it,
// then writes the tile's part of each block in block order (here). On the device the threads of a tile
// build an owner map instead (local_shuffle_tiles.hpp). Both compute the sequential definition exactly,
// which the tests check against a naive oracle.
//
// Random choices (hdssl::Rng, counter-based): for a view with stream key `key`
//   Rng(key, 0): apply = bernoulli(p); then the shared permutation = Fisher-Yates of [0, n) (n = block voxels)
//   Rng(key, 1 + k): block k's origin, below(range_x), below(range_y), below(range_z), then (per-block
//                    option) its own Fisher-Yates permutation of [0, n).
// Every block draws from its own sub-stream, so plans are built in parallel on the host or the device.
//
// Raw pointers and element strides only: no LibTorch, no CUDA types (config.hpp's HDSSL_HOST_DEVICE).
#include "hdssl/config.hpp"
#include "hdssl/core/rng.hpp"

#include <cstdint>

namespace hdssl::ops {

/// Runtime knobs of the shuffle (the augmentation's JSON options map onto these).
struct LocalShuffleParams {
  double p = 0.8;                      ///< probability that a view is shuffled at all
  std::int32_t blocks = 5000;          ///< blocks per view (K)
  std::int32_t divisor = 20;           ///< block extent per axis = max(1, floor(dim / divisor))
  bool per_block_permutation = false;  ///< [ref] false: one permutation per view
};

/// Largest block (voxels) supported: one device thread draws a whole permutation (Fisher-Yates) and the
/// per-block option stores blocks x n entries per view; 4096 allows 16^3 blocks (views up to 320^3 at the
/// default divisor).
constexpr std::int32_t kMaxShuffleBlockVoxels = 4096;

/// Geometry of the blocks of a view of extents (nx, ny, nz).
struct ShuffleGeometry {
  std::int32_t bx = 1, by = 1, bz = 1;  ///< block extents
  std::int32_t rx = 1, ry = 1, rz = 1;  ///< origins are uniform in [0, r) per axis
  std::int32_t n = 1;                   ///< voxels per block

  HDSSL_HOST_DEVICE static ShuffleGeometry of(std::int64_t nx, std::int64_t ny, std::int64_t nz, std::int32_t divisor) {
    ShuffleGeometry g;
    g.bx = extent(nx, divisor);
    g.by = extent(ny, divisor);
    g.bz = extent(nz, divisor);
    // [ref] origin ~ randint(0, dim - block) with an exclusive upper end; a view no larger than one block
    // (dim == block) only has origin 0.
    g.rx = range(nx, g.bx);
    g.ry = range(ny, g.by);
    g.rz = range(nz, g.bz);
    g.n = g.bx * g.by * g.bz;
    return g;
  }

 private:
  HDSSL_HOST_DEVICE static std::int32_t extent(std::int64_t dim, std::int32_t divisor) {
    const std::int64_t b = dim / divisor;
    return static_cast<std::int32_t>(b < 1 ? 1 : b);  // views thinner than `divisor` shuffle 1-voxel rows
  }
  HDSSL_HOST_DEVICE static std::int32_t range(std::int64_t dim, std::int32_t b) {
    const std::int64_t r = dim - b;
    return static_cast<std::int32_t>(r < 1 ? 1 : r);
  }
};

/// Where each view's stream key comes from: an explicit array, or (seed, batch, first_view + v) with
/// Purpose::shuffle (the keys the augmentation set gives view v of a batch).
struct ShuffleKeys {
  const std::uint64_t* keys = nullptr;  ///< if set: keys[v] (host memory on the CPU, device memory on CUDA)
  std::uint64_t seed = 0, batch = 0, first_view = 0;

  HDSSL_HOST_DEVICE std::uint64_t operator()(std::int64_t v) const {
    return keys != nullptr ? keys[v]
                           : stream_key(seed, batch, first_view + static_cast<std::uint64_t>(v), Purpose::shuffle);
  }
};

/// Block origins are packed 21 bits per axis into one 64-bit word (one load per block when tiles scan them).
HDSSL_HOST_DEVICE inline std::uint64_t pack_origin(std::int32_t x, std::int32_t y, std::int32_t z) {
  return (static_cast<std::uint64_t>(x) << 42) | (static_cast<std::uint64_t>(y) << 21) | static_cast<std::uint64_t>(z);
}
HDSSL_HOST_DEVICE inline void unpack_origin(std::uint64_t o, std::int32_t& x, std::int32_t& y, std::int32_t& z) {
  x = static_cast<std::int32_t>(o >> 42);
  y = static_cast<std::int32_t>((o >> 21) & 0x1FFFFFu);
  z = static_cast<std::int32_t>(o & 0x1FFFFFu);
}

/// Offsets inside a block are stored decoded, 10 bits per axis, so that writing a voxel needs shifts
/// rather than integer divisions (block extents are at most 1023 per axis, checked by the front ends).
constexpr std::int32_t kMaxShuffleBlockExtent = 1023;
HDSSL_HOST_DEVICE inline std::int32_t pack_offset(std::int32_t x, std::int32_t y, std::int32_t z) {
  return (x << 20) | (y << 10) | z;
}
HDSSL_HOST_DEVICE inline void unpack_offset(std::int32_t s, std::int32_t& x, std::int32_t& y, std::int32_t& z) {
  x = s >> 20;
  y = (s >> 10) & 0x3FF;
  z = s & 0x3FF;
}

/// The random plan of a batch of V views, in caller-provided memory (host or device):
///   applied[V]            1 if the view is shuffled
///   origins[V * K]        packed block origins
///   perms[V * n]          shared permutations, or perms[(V * K) * n] with per_block_permutation;
///                         entry q = the source offset of flat offset q, packed by pack_offset
struct ShufflePlan {
  std::int32_t* applied = nullptr;
  std::uint64_t* origins = nullptr;
  std::int32_t* perms = nullptr;

  HDSSL_HOST_DEVICE static std::int64_t perm_entries(std::int64_t views, const LocalShuffleParams& p,
                                                     const ShuffleGeometry& g) {
    return (p.per_block_permutation ? views * p.blocks : views) * static_cast<std::int64_t>(g.n);
  }
};

/// The first draw of a view's stream: is the view shuffled at all? (Callers may test it before copying.)
HDSSL_HOST_DEVICE inline bool shuffle_applies(Rng& main_stream, double p) { return main_stream.bernoulli(p); }

/// Bytes of one buffer holding a plan of `views` views: origins, then permutations, then apply flags
/// (carve_shuffle_plan splits it; origins first keeps them 8-byte aligned).
inline std::int64_t shuffle_plan_bytes(std::int64_t views, const LocalShuffleParams& params, const ShuffleGeometry& g) {
  return views * params.blocks * static_cast<std::int64_t>(sizeof(std::uint64_t)) +
         ShufflePlan::perm_entries(views, params, g) * static_cast<std::int64_t>(sizeof(std::int32_t)) +
         views * static_cast<std::int64_t>(sizeof(std::int32_t));
}

/// Points a plan into a buffer of shuffle_plan_bytes(...) bytes.
inline ShufflePlan carve_shuffle_plan(void* buffer, std::int64_t views, const LocalShuffleParams& params,
                                      const ShuffleGeometry& g) {
  ShufflePlan plan;
  auto* base = static_cast<unsigned char*>(buffer);
  plan.origins = reinterpret_cast<std::uint64_t*>(base);
  base += views * params.blocks * static_cast<std::int64_t>(sizeof(std::uint64_t));
  plan.perms = reinterpret_cast<std::int32_t*>(base);
  base += ShufflePlan::perm_entries(views, params, g) * static_cast<std::int64_t>(sizeof(std::int32_t));
  plan.applied = reinterpret_cast<std::int32_t*>(base);
  return plan;
}

/// Builds a plan: view(v) draws the apply flag and the shared permutation, block(v, k) the origin (and the
/// block's permutation with the option). Each call writes disjoint entries, so calls run in any order.
struct ShufflePlanFunctor {
  ShufflePlan plan;
  ShuffleKeys keys;
  LocalShuffleParams params;
  ShuffleGeometry geom;

  HDSSL_HOST_DEVICE void view(std::int64_t v) const {
    Rng rng(keys(v), 0);
    plan.applied[v] = shuffle_applies(rng, params.p) ? 1 : 0;
    if (!params.per_block_permutation) identity_then_shuffle(plan.perms + v * geom.n, rng);
  }

  HDSSL_HOST_DEVICE void block(std::int64_t v, std::int64_t k) const {
    Rng rng(keys(v), 1 + static_cast<std::uint64_t>(k));
    const std::int32_t ox = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(geom.rx)));
    const std::int32_t oy = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(geom.ry)));
    const std::int32_t oz = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(geom.rz)));
    plan.origins[v * params.blocks + k] = pack_origin(ox, oy, oz);
    if (params.per_block_permutation)
      identity_then_shuffle(plan.perms + (v * params.blocks + k) * geom.n, rng);
  }

 private:
  HDSSL_HOST_DEVICE void identity_then_shuffle(std::int32_t* perm, Rng& rng) const {
    for (std::int32_t i = 0; i < geom.n; ++i) perm[i] = i;
    rng.shuffle(perm, static_cast<std::uint32_t>(geom.n));
    for (std::int32_t i = 0; i < geom.n; ++i) {
      const std::int32_t s = perm[i];
      perm[i] = pack_offset(s / (geom.bz * geom.by), (s / geom.bz) % geom.by, s % geom.bz);
    }
  }
};

/// Element strides of a batch of views [V, X, Y, Z] (a channel axis of size 1 folds into sv).
struct ViewStrides {
  std::int64_t sv = 0, sx = 0, sy = 0, sz = 1;
  HDSSL_HOST_DEVICE std::int64_t at(std::int64_t v, std::int64_t x, std::int64_t y, std::int64_t z) const {
    return v * sv + x * sx + y * sy + z * sz;
  }
};

/// A box of voxels of one view: start and extent per axis.
struct TileBox {
  std::int32_t x0 = 0, y0 = 0, z0 = 0;
  std::int32_t ex = 0, ey = 0, ez = 0;
  HDSSL_HOST_DEVICE std::int32_t voxels() const { return ex * ey * ez; }
};

/// Tiling of a view: fixed tile extents (clipped at the view's far faces), tiles numbered x-major.
struct ShuffleTiling {
  std::int32_t nx = 0, ny = 0, nz = 0;  ///< view extents
  std::int32_t tx = 1, ty = 1, tz = 1;  ///< tile extents
  HDSSL_HOST_DEVICE std::int32_t count_x() const { return (nx + tx - 1) / tx; }
  HDSSL_HOST_DEVICE std::int32_t count_y() const { return (ny + ty - 1) / ty; }
  HDSSL_HOST_DEVICE std::int32_t count_z() const { return (nz + tz - 1) / tz; }
  HDSSL_HOST_DEVICE std::int64_t tiles_per_view() const {
    return static_cast<std::int64_t>(count_x()) * count_y() * count_z();
  }
  HDSSL_HOST_DEVICE TileBox tile(std::int64_t t) const {
    const std::int32_t cz = count_z(), cy = count_y();
    const std::int32_t iz = static_cast<std::int32_t>(t % cz);
    const std::int32_t iy = static_cast<std::int32_t>((t / cz) % cy);
    const std::int32_t ix = static_cast<std::int32_t>(t / (static_cast<std::int64_t>(cz) * cy));
    TileBox b;
    b.x0 = ix * tx;
    b.y0 = iy * ty;
    b.z0 = iz * tz;
    b.ex = (nx - b.x0 < tx) ? nx - b.x0 : tx;
    b.ey = (ny - b.y0 < ty) ? ny - b.y0 : ty;
    b.ez = (nz - b.z0 < tz) ? nz - b.z0 : tz;
    return b;
  }
};

/// Applies a plan to tiles of views: what a block reads (block_source, clip) and the CPU's ordered writes
/// (copy_tile, then write_block for k = 0, 1, ...). `in` and `out` must not overlap.
template <typename T>
struct ShuffleTileFunctor {
  const T* in = nullptr;
  T* out = nullptr;
  ViewStrides in_strides, out_strides;
  ShufflePlan plan;
  LocalShuffleParams params;
  ShuffleGeometry geom;

  HDSSL_HOST_DEVICE bool applied(std::int64_t v) const { return plan.applied[v] != 0; }

  /// Where block k of view v reads from: its origin and permutation (the same for all its voxels).
  struct BlockSource {
    std::int32_t ox, oy, oz;
    std::int32_t by, bz;
    const std::int32_t* perm;
    /// Input offset of the value that voxel (x, y, z) of the block receives: in[o + perm[q]].
    HDSSL_HOST_DEVICE std::int64_t offset(const ViewStrides& s, std::int64_t v, std::int32_t x, std::int32_t y,
                                          std::int32_t z) const {
      std::int32_t sx, sy, sz;
      unpack_offset(perm[((x - ox) * by + (y - oy)) * bz + (z - oz)], sx, sy, sz);
      return s.at(v, ox + sx, oy + sy, oz + sz);
    }
  };
  HDSSL_HOST_DEVICE BlockSource block_source(std::int64_t v, std::int32_t k) const {
    BlockSource b;
    unpack_origin(plan.origins[v * params.blocks + k], b.ox, b.oy, b.oz);
    b.by = geom.by;
    b.bz = geom.bz;
    b.perm = params.per_block_permutation ? plan.perms + (v * params.blocks + k) * geom.n : plan.perms + v * geom.n;
    return b;
  }

  /// The part of block k inside the tile, as [lo, hi) per axis; false when they do not meet.
  HDSSL_HOST_DEVICE bool clip(std::int64_t v, const TileBox& tile, std::int32_t k, std::int32_t lo[3],
                              std::int32_t hi[3]) const {
    std::int32_t ox, oy, oz;
    unpack_origin(plan.origins[v * params.blocks + k], ox, oy, oz);
    lo[0] = max_i(ox, tile.x0);
    hi[0] = min_i(ox + geom.bx, tile.x0 + tile.ex);
    lo[1] = max_i(oy, tile.y0);
    hi[1] = min_i(oy + geom.by, tile.y0 + tile.ey);
    lo[2] = max_i(oz, tile.z0);
    hi[2] = min_i(oz + geom.bz, tile.z0 + tile.ez);
    return lo[0] < hi[0] && lo[1] < hi[1] && lo[2] < hi[2];
  }

  /// Writes the voxels of block k inside the tile (the CPU path: one thread per tile, after copy_tile,
  /// calls this for k = 0, 1, ... in order, so the later block wins without an owner map).
  HDSSL_HOST_DEVICE void write_block(std::int64_t v, const TileBox& tile, std::int32_t k) const {
    std::int32_t lo[3], hi[3];
    if (!clip(v, tile, k, lo, hi)) return;
    // Loop invariants in locals: stores through `out` (often uint32_t) may alias int32 members, which would
    // otherwise be reloaded after every store.
    const BlockSource src = block_source(v, k);
    const ViewStrides is = in_strides, os = out_strides;
    const T* const in_ = in;
    T* const out_ = out;
    for (std::int32_t x = lo[0]; x < hi[0]; ++x)
      for (std::int32_t y = lo[1]; y < hi[1]; ++y)
        for (std::int32_t z = lo[2]; z < hi[2]; ++z) out_[os.at(v, x, y, z)] = in_[src.offset(is, v, x, y, z)];
  }

  /// Copies the tile unchanged (what voxels that no block covers keep).
  HDSSL_HOST_DEVICE void copy_tile(std::int64_t v, const TileBox& tile) const {
    const ViewStrides is = in_strides, os = out_strides;
    for (std::int32_t x = tile.x0; x < tile.x0 + tile.ex; ++x)
      for (std::int32_t y = tile.y0; y < tile.y0 + tile.ey; ++y)
        for (std::int32_t z = tile.z0; z < tile.z0 + tile.ez; ++z) out[os.at(v, x, y, z)] = in[is.at(v, x, y, z)];
  }

 private:
  HDSSL_HOST_DEVICE static std::int32_t max_i(std::int32_t a, std::int32_t b) { return a > b ? a : b; }
  HDSSL_HOST_DEVICE static std::int32_t min_i(std::int32_t a, std::int32_t b) { return a < b ? a : b; }
};

}  // namespace hdssl::ops
