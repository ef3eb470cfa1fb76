#pragma once
// Symmetric InfoNCE over positive voxel pairs (method.md section 4).
#include <torch/torch.h>

#include <limits>
#include <string>

#include "hdssl/core/error.hpp"

namespace hdssl::loss {

/// z1, z2: [N, D] embeddings (normally L2-normalised), row r of both = the same anatomical voxel.
/// With S11 = z1 z1^T / tau and S22 = z2 z2^T / tau (diagonals masked to -inf) and S12 = z1 z2^T / tau:
///   L1 = mean_r(-S12[r,r] + logsumexp([S11[r,:], S12[r,:]]))
///   L2 = mean_r(-S12[r,r] + logsumexp([S12[:,r], S22[r,:]]))
///   L  = (L1 + L2) / 2
/// so every voxel has 2N - 2 negatives: all other sampled voxels of both views.
inline torch::Tensor info_nce(const torch::Tensor& z1, const torch::Tensor& z2, double temperature = 0.1) {
  if (z1.dim() != 2 || z2.sizes() != z1.sizes())
    throw DataError("info_nce: z1 and z2 must both be [N, D] with the same sizes");
  if (z1.size(0) < 2) throw DataError("info_nce: needs at least 2 positive pairs (got " + std::to_string(z1.size(0)) + ")");
  if (!(temperature > 0)) throw ConfigError("info_nce: temperature must be > 0");
  const int64_t n = z1.size(0);
  const auto diag = torch::eye(n, z1.options().dtype(torch::kBool));
  const double inf = std::numeric_limits<double>::infinity();
  // masked_fill (out of place) rather than fill_diagonal_: autograd then sees the mask explicitly.
  const auto s11 = z1.matmul(z1.t()).div(temperature).masked_fill(diag, -inf);
  const auto s12 = z1.matmul(z2.t()).div(temperature);
  const auto s22 = z2.matmul(z2.t()).div(temperature).masked_fill(diag, -inf);
  const auto pos = s12.diagonal();
  const auto l1 = (-pos + torch::logsumexp(torch::cat({s11, s12}, 1), 1)).mean();
  const auto l2 = (-pos + torch::logsumexp(torch::cat({s12.t(), s22}, 1), 1)).mean();
  return (l1 + l2) / 2;
}

}  // namespace hdssl::loss
