#pragma once
// Gathering voxel features from every pyramid level (method.md section 3).
//
// A voxel v (full-resolution coordinates) of patch b is represented by the features of level i at
// floor(v / 2^i), the levels concatenated finest first. All voxels of all patches are gathered with one
// advanced-indexing call per level (the reference loops over samples), and the result is differentiable:
// the backward pass scatters-adds into the pyramid.
//
// This is the CPU path and the oracle of the fused CUDA gather: same inputs, same output.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::nn {

/// How much of the voxel index a gather checks: `range` reads its min/max to the host (a device
/// synchronisation on CUDA); `shapes` trusts the rows (e.g. the pair sampler's, checked on the host
/// before upload) and checks only shapes, dtypes and devices.
enum class IndexCheck { range, shapes };

namespace detail {
inline void check_gather_inputs(const std::vector<torch::Tensor>& pyramid, const torch::Tensor& voxel_index,
                                IndexCheck check = IndexCheck::range) {
  if (pyramid.empty()) throw DataError("gather_pyramid: the pyramid is empty");
  if (!voxel_index.defined() || voxel_index.scalar_type() != torch::kInt64 || voxel_index.dim() != 2 ||
      voxel_index.size(1) != 4)
    throw DataError("gather_pyramid: voxel_index must be an int64 tensor of shape [N, 4] = (patch, x, y, z)");
  for (size_t i = 0; i < pyramid.size(); ++i) {
    const auto& l = pyramid[i];
    if (!l.defined() || l.dim() != 5)
      throw DataError("gather_pyramid: pyramid level " + std::to_string(i) + " must be (B, C, X, Y, Z)");
    if (l.device() != voxel_index.device())
      throw DataError("gather_pyramid: pyramid level " + std::to_string(i) + " and voxel_index are on different devices");
    if (l.size(0) != pyramid[0].size(0))
      throw DataError("gather_pyramid: pyramid level " + std::to_string(i) + " has a different batch size");
  }
  if (voxel_index.size(0) == 0 || check == IndexCheck::shapes) return;
  // One min/max reduction over the N x 4 indices (8 numbers to the host) bounds every level.
  const auto lo = std::get<0>(voxel_index.min(0)).cpu();
  const auto hi = std::get<0>(voxel_index.max(0)).cpu();
  const int64_t* mn = lo.data_ptr<int64_t>();
  const int64_t* mx = hi.data_ptr<int64_t>();
  for (int a = 0; a < 4; ++a)
    if (mn[a] < 0) throw DataError("gather_pyramid: voxel_index has a negative entry in column " + std::to_string(a));
  if (mx[0] >= pyramid[0].size(0))
    throw DataError("gather_pyramid: voxel_index patch " + std::to_string(mx[0]) + " out of range (batch of " +
                    std::to_string(pyramid[0].size(0)) + ")");
  for (size_t i = 0; i < pyramid.size(); ++i)
    for (int a = 1; a < 4; ++a)
      if ((mx[a] >> i) >= pyramid[i].size(a + 1))
        throw DataError("gather_pyramid: voxel coordinate " + std::to_string(mx[a]) + " on axis " +
                        std::to_string(a - 1) + " falls outside pyramid level " + std::to_string(i) + " (size " +
                        std::to_string(pyramid[i].size(a + 1)) + ")");
}
}  // namespace detail

/// Features of every level at floor(v / 2^i), one [N, C_i] tensor per level, finest first.
/// pyramid[i]: (B, C_i, X_i, Y_i, Z_i); voxel_index: int64 [N, 4] rows (patch, x, y, z) in level-0
/// coordinates, on the pyramid's device. Throws hdssl::DataError on shapes, dtypes or out-of-range rows.
inline std::vector<torch::Tensor> gather_levels(const std::vector<torch::Tensor>& pyramid,
                                                const torch::Tensor& voxel_index) {
  detail::check_gather_inputs(pyramid, voxel_index);
  using torch::indexing::Slice;
  const torch::Tensor b = voxel_index.select(1, 0);
  std::vector<torch::Tensor> out;
  out.reserve(pyramid.size());
  for (size_t i = 0; i < pyramid.size(); ++i) {
    auto level_coord = [&](int64_t col) { return voxel_index.select(1, col).div(int64_t{1} << i, "floor"); };
    // Advanced indices separated by a slice: the indexed dimension (N) goes first -> [N, C_i].
    out.push_back(pyramid[i].index({b, Slice(), level_coord(1), level_coord(2), level_coord(3)}));
  }
  return out;
}

/// The voxel embedding of vox2vec: gather_levels concatenated along channels, [N, sum_i C_i].
inline torch::Tensor gather_pyramid(const std::vector<torch::Tensor>& pyramid, const torch::Tensor& voxel_index) {
  return torch::cat(gather_levels(pyramid, voxel_index), 1);
}

}  // namespace hdssl::nn
