#pragma once
// Cropping to the bounding box of bright voxels and padding up to a minimum (patch) size, with the
// affine kept exact: after either operation every voxel still maps to the same world point.
//
//   crop to [begin, end):   new origin = A * (begin, 1)       (voxel `begin` becomes voxel 0)
//   pad by `before` voxels: new origin = A * (-before, 1)     (old voxel 0 becomes voxel `before`)
// The 3x3 part of the affine (spacing and directions) is unchanged by both.
//
// Padding is centred: an axis of size n < m gets floor((m - n) / 2) voxels before and the rest after.
// The pad value is the caller's choice (the pipeline pads images with 0 after scaling to [0, 1], which is
// their minimum, masks with false and label maps with 0).
#include <torch/torch.h>

#include <Eigen/Dense>
#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "hdssl/core/error.hpp"
#include "hdssl/core/volume.hpp"

namespace hdssl::preprocess {

/// Half-open voxel box [begin, end) per axis.
struct Box {
  std::array<int64_t, 3> begin{{0, 0, 0}};
  std::array<int64_t, 3> end{{0, 0, 0}};
  std::array<int64_t, 3> size() const { return {{end[0] - begin[0], end[1] - begin[1], end[2] - begin[2]}}; }
  bool operator==(const Box& o) const { return begin == o.begin && end == o.end; }
};

/// Voxels added before and after each axis.
struct Padding {
  std::array<int64_t, 3> before{{0, 0, 0}};
  std::array<int64_t, 3> after{{0, 0, 0}};
  bool empty() const {
    for (int a = 0; a < 3; ++a)
      if (before[a] != 0 || after[a] != 0) return false;
    return true;
  }
};

/// Smallest box holding every voxel with value > threshold; nullopt when there is none.
inline std::optional<Box> bounding_box(const torch::Tensor& x, double threshold) {
  if (!x.defined() || x.dim() != 3) throw DataError("bounding box: tensor must be 3-D (X, Y, Z)");
  const torch::Tensor m = x.to(torch::kCPU) > threshold;
  Box box;
  const std::array<std::array<int64_t, 2>, 3> other = {{{{1, 2}}, {{0, 2}}, {{0, 1}}}};
  for (int a = 0; a < 3; ++a) {
    const torch::Tensor along = m.any(other[a][1]).any(other[a][0]);  // reduce the higher axis first
    const torch::Tensor idx = along.nonzero();
    if (idx.numel() == 0) return std::nullopt;
    box.begin[a] = idx.min().item<int64_t>();
    box.end[a] = idx.max().item<int64_t>() + 1;
  }
  return box;
}

inline torch::Tensor crop(const torch::Tensor& x, const Box& box) {
  for (int a = 0; a < 3; ++a)
    if (box.begin[a] < 0 || box.end[a] > x.size(a) || box.begin[a] >= box.end[a])
      throw DataError("crop: box on axis " + std::to_string(a) + " [" + std::to_string(box.begin[a]) + ", " +
                      std::to_string(box.end[a]) + ") is empty or outside size " + std::to_string(x.size(a)));
  return x.slice(0, box.begin[0], box.end[0])
      .slice(1, box.begin[1], box.end[1])
      .slice(2, box.begin[2], box.end[2])
      .contiguous();
}

inline Volume crop(const Volume& v, const Box& box) {
  Volume out = v;
  out.data = crop(v.data, box);
  const Eigen::Vector4d start(static_cast<double>(box.begin[0]), static_cast<double>(box.begin[1]),
                              static_cast<double>(box.begin[2]), 1.0);
  out.affine.block<4, 1>(0, 3) = v.affine * start;
  return out;
}

/// Centred padding that brings every axis of `shape` up to at least `min_shape`.
inline Padding padding_to(const std::array<int64_t, 3>& shape, const std::array<int64_t, 3>& min_shape) {
  Padding p;
  for (int a = 0; a < 3; ++a) {
    const int64_t missing = std::max<int64_t>(min_shape[a] - shape[a], 0);
    p.before[a] = missing / 2;
    p.after[a] = missing - missing / 2;
  }
  return p;
}

inline torch::Tensor pad(const torch::Tensor& x, const Padding& p, double value) {
  if (!x.defined() || x.dim() != 3) throw DataError("pad: tensor must be 3-D (X, Y, Z)");
  for (int a = 0; a < 3; ++a)
    if (p.before[a] < 0 || p.after[a] < 0) throw DataError("pad: negative padding on axis " + std::to_string(a));
  if (p.empty()) return x;
  torch::Tensor out = torch::full({x.size(0) + p.before[0] + p.after[0], x.size(1) + p.before[1] + p.after[1],
                                   x.size(2) + p.before[2] + p.after[2]},
                                  value, x.options());
  out.slice(0, p.before[0], p.before[0] + x.size(0))
      .slice(1, p.before[1], p.before[1] + x.size(1))
      .slice(2, p.before[2], p.before[2] + x.size(2))
      .copy_(x);
  return out;
}

inline Volume pad(const Volume& v, const Padding& p, double value) {
  Volume out = v;
  out.data = pad(v.data, p, value);
  const Eigen::Vector4d start(-static_cast<double>(p.before[0]), -static_cast<double>(p.before[1]),
                              -static_cast<double>(p.before[2]), 1.0);
  out.affine.block<4, 1>(0, 3) = v.affine * start;
  return out;
}

}  // namespace hdssl::preprocess
