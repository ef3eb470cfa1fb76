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
#include "hdssl/ops/gather_checks.hpp"

namespace hdssl::nn {

/// The shared input rule of both gathers (ops/gather_checks.hpp); nn::IndexCheck for existing callers.
using ops::IndexCheck;

/// Features of every level at floor(v / 2^i), one [N, C_i] tensor per level, finest first.
/// pyramid[i]: (B, C_i, X_i, Y_i, Z_i); voxel_index: int64 [N, 4] rows (patch, x, y, z) in level-0
/// coordinates, on the pyramid's device. Throws hdssl::DataError on shapes, dtypes or out-of-range rows.
inline std::vector<torch::Tensor> gather_levels(const std::vector<torch::Tensor>& pyramid,
                                                const torch::Tensor& voxel_index) {
  ops::check_gather_inputs(pyramid, voxel_index);
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
