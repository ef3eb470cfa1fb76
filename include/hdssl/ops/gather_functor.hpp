#pragma once
// Positive-pair gathering of every pyramid level (method.md 3), written once for the CPU loop and the
// CUDA kernel:
//   out[n, offset_i + c] = level_i[b_n, c, x_n >> i, y_n >> i, z_n >> i]
// for rows (b, x, y, z) of an int64 index [N, 4] in level-0 coordinates, all levels in one pass.
// Backward scatters-adds grad_out back into each level (duplicates add up).
//
// Raw pointers and element strides only: levels may be NCDHW or channels-last-3d (any strides).
#include "hdssl/config.hpp"

#include <cstdint>

namespace hdssl::ops {

/// Most pyramid levels one call gathers (both presets have 5 or 6).
constexpr int kMaxGatherLevels = 8;

/// Shape and element strides of one level (B, C, X, Y, Z) and where its channels start in the output row.
struct GatherLevelDesc {
  std::int64_t sb = 0, sc = 0, sx = 0, sy = 0, sz = 0;
  std::int32_t channels = 0;
  std::int32_t offset = 0;
};

/// Every level of a pyramid: data pointers (P = const T* or T*) and layouts.
template <typename P>
struct GatherLevels {
  P data[kMaxGatherLevels] = {};
  GatherLevelDesc level[kMaxGatherLevels];
  std::int32_t count = 0;  ///< number of levels
  std::int32_t total = 0;  ///< sum of channels = output row length

  /// Level holding output column j (levels are few: a linear scan beats a search).
  HDSSL_HOST_DEVICE std::int32_t level_of(std::int32_t j) const {
    std::int32_t i = 0;
    while (i + 1 < count && j >= level[i + 1].offset) ++i;
    return i;
  }
  /// Element offset of (b, c, x, y, z) of level i, with level-0 coordinates shifted down by i.
  HDSSL_HOST_DEVICE std::int64_t at(std::int32_t i, std::int64_t b, std::int64_t c, std::int64_t x, std::int64_t y,
                                    std::int64_t z) const {
    const GatherLevelDesc& d = level[i];
    return b * d.sb + c * d.sc + (x >> i) * d.sx + (y >> i) * d.sy + (z >> i) * d.sz;
  }
};

/// The index [N, 4] = (patch, x, y, z) with its element strides.
struct GatherIndex {
  const std::int64_t* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t s0 = 4, s1 = 1;
  HDSSL_HOST_DEVICE std::int64_t operator()(std::int64_t n, int col) const { return data[n * s0 + col * s1]; }
};

/// Forward: one output element (n, j). T is the element storage type (a copy moves bits only).
template <typename T>
struct GatherForwardFunctor {
  GatherLevels<const T*> src;
  GatherIndex index;
  T* out = nullptr;
  std::int64_t out_s0 = 0, out_s1 = 1;

  HDSSL_HOST_DEVICE void operator()(std::int64_t n, std::int32_t j) const {
    const std::int32_t i = src.level_of(j);
    const std::int64_t c = j - src.level[i].offset;
    out[n * out_s0 + j * out_s1] = src.data[i][src.at(i, index(n, 0), c, index(n, 1), index(n, 2), index(n, 3))];
  }
};

/// Backward: adds grad_out element (n, j) into the level gradient (Acc, e.g. float32 for bf16 gradients).
/// `add(Acc* slot, Acc value)` is an atomic add on the device, a plain one where the caller guarantees that
/// no two threads touch the same slot (the CPU loop gives each thread whole output columns).
template <typename T, typename Acc>
struct GatherBackwardFunctor {
  const T* grad_out = nullptr;
  std::int64_t go_s0 = 0, go_s1 = 1;
  GatherIndex index;
  GatherLevels<Acc*> dst;

  template <typename Add>
  HDSSL_HOST_DEVICE void operator()(std::int64_t n, std::int32_t j, Add add) const {
    const std::int32_t i = dst.level_of(j);
    const std::int64_t c = j - dst.level[i].offset;
    add(dst.data[i] + dst.at(i, index(n, 0), c, index(n, 1), index(n, 2), index(n, 3)),
        static_cast<Acc>(grad_out[n * go_s0 + j * go_s1]));
  }
};

}  // namespace hdssl::ops
