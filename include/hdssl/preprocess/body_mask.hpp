#pragma once
// Body mask: every voxel NOT connected to the air outside the body.
//
// Air = voxels with value < threshold (NaN is not air). Outside air = air voxels reachable from the
// in-plane border: a flood fill seeded at every air voxel with x = 0, x = X-1, y = 0 or y = Y-1, on every
// slice z. The z = 0 and z = Z-1 faces are not seeds: a scan usually cuts through the body there, and
// the reference floods from a frame padded around x and y only. Body = NOT outside air, so air enclosed
// by tissue (lungs, bowel gas) counts as body.
//
// Connectivity (how the fill moves):
//   - 3-D (default): the fill crosses slices.  Connectivity::full = 26 neighbours (the reference: its
//     flood fill uses full connectivity by default); Connectivity::face = 6 neighbours (faces only).
//   - per slice (per_slice = true): each z-slice is filled on its own in 2-D; full = 8 neighbours,
//     face = 4. Air enclosed in one slice is body there even if it opens to the outside in another.
// A diagonal-only gap in the skin lets air in with full connectivity but not with face connectivity.
//
// Algorithm: scanline flood fill with an explicit stack (no recursion): a popped seed grows to the
// maximal run of fillable voxels along z (the contiguous axis), then one seed is pushed per run of
// fillable voxels in each neighbouring column over the run's range (widened by one for full
// connectivity). Every voxel is filled once; cost O(voxels). Per-slice mode runs slices in parallel.
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::preprocess {

enum class Connectivity { face, full };

namespace detail {

/// Flood fill on a grid (A, B, C), C contiguous, run axis = C, neighbour columns in (A, B).
/// `fillable` is 1 where the fill may go; filled voxels are set to 2. Seeds are linear indices.
inline void scanline_fill(uint8_t* grid, int64_t A, int64_t B, int64_t C, Connectivity conn,
                          std::vector<int64_t> stack) {
  const int64_t ext = conn == Connectivity::full ? 1 : 0;
  std::vector<std::pair<int64_t, int64_t>> neighbours;
  for (int64_t da = -1; da <= 1; ++da)
    for (int64_t db = -1; db <= 1; ++db) {
      if (da == 0 && db == 0) continue;
      if (conn == Connectivity::face && da != 0 && db != 0) continue;
      neighbours.emplace_back(da, db);
    }
  while (!stack.empty()) {
    const int64_t idx = stack.back();
    stack.pop_back();
    if (grid[idx] != 1) continue;
    const int64_t col = idx / C;  // column = a * B + b
    const int64_t c = idx - col * C;
    uint8_t* column = grid + col * C;
    int64_t c0 = c, c1 = c;
    while (c0 > 0 && column[c0 - 1] == 1) --c0;
    while (c1 < C - 1 && column[c1 + 1] == 1) ++c1;
    for (int64_t k = c0; k <= c1; ++k) column[k] = 2;
    const int64_t a = col / B, b = col - a * B;
    const int64_t lo = std::max<int64_t>(c0 - ext, 0), hi = std::min<int64_t>(c1 + ext, C - 1);
    for (const auto& [da, db] : neighbours) {
      const int64_t na = a + da, nb = b + db;
      if (na < 0 || na >= A || nb < 0 || nb >= B) continue;
      const uint8_t* ncol = grid + (na * B + nb) * C;
      bool in_run = false;
      for (int64_t k = lo; k <= hi; ++k) {
        const bool f = ncol[k] == 1;
        if (f && !in_run) stack.push_back((na * B + nb) * C + k);
        in_run = f;
      }
    }
  }
}

}  // namespace detail

/// Body mask (bool, same (X, Y, Z) shape) of `image` under the rules in this file's header.
/// `name` is used in error messages.
inline torch::Tensor body_mask(const torch::Tensor& image, double threshold, Connectivity conn = Connectivity::full,
                               bool per_slice = false, const std::string& name = "image") {
  if (!image.defined() || image.dim() != 3) throw DataError("body mask of '" + name + "': image must be 3-D (X, Y, Z)");
  const int64_t X = image.size(0), Y = image.size(1), Z = image.size(2);
  // 1 = air not yet reached (fillable), 0 = not air; the fill writes 2.
  torch::Tensor grid = (image.to(torch::kCPU) < threshold).to(torch::kUInt8).contiguous();
  if (grid.numel() == 0) return torch::zeros({X, Y, Z}, torch::kBool);
  if (!per_slice) {
    std::vector<int64_t> seeds;
    seeds.reserve(static_cast<size_t>(2 * (X + Y) * Z));
    auto* g = grid.data_ptr<uint8_t>();
    for (int64_t x = 0; x < X; ++x)
      for (int64_t y = 0; y < Y; ++y) {
        if (x != 0 && x != X - 1 && y != 0 && y != Y - 1) continue;
        for (int64_t z = 0; z < Z; ++z) {
          const int64_t idx = (x * Y + y) * Z + z;
          if (g[idx] == 1 && (z == 0 || g[idx - 1] != 1)) seeds.push_back(idx);  // one seed per run suffices
        }
      }
    detail::scanline_fill(g, X, Y, Z, conn, std::move(seeds));
    return grid != 2;
  }
  // Per slice: copy slice z to an (1, X, Y) grid with y contiguous and fill it in 2-D.
  torch::Tensor slices = grid.permute({2, 0, 1}).contiguous();  // (Z, X, Y)
  auto* s = slices.data_ptr<uint8_t>();
  at::parallel_for(0, Z, 1, [&](int64_t begin, int64_t end) {
    for (int64_t z = begin; z < end; ++z) {
      uint8_t* g = s + z * X * Y;
      std::vector<int64_t> seeds;
      for (int64_t x = 0; x < X; ++x)
        for (int64_t y = 0; y < Y; ++y)
          if ((x == 0 || x == X - 1 || y == 0 || y == Y - 1) && g[x * Y + y] == 1) seeds.push_back(x * Y + y);
      detail::scanline_fill(g, 1, X, Y, conn, std::move(seeds));
    }
  });
  return (slices != 2).permute({1, 2, 0}).contiguous();
}

}  // namespace hdssl::preprocess
