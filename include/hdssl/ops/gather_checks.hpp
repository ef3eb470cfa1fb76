#pragma once
// The input rule of the pyramid gather, shared by its indexing version (nn/gather.hpp: the CPU path and
// oracle) and its fused CPU/CUDA op (ops/gather_pyramid.hpp): shapes, dtypes, devices, batch sizes and,
// unless told to trust them, the voxel rows' range.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::ops {

/// How much of the voxel index a gather checks: `range` reads its min/max to the host (a device
/// synchronisation on CUDA); `shapes` trusts the rows (e.g. the pair sampler's, checked on the host
/// before upload) and checks only shapes, dtypes and devices.
enum class IndexCheck { range, shapes };

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

}  // namespace hdssl::ops
