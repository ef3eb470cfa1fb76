#pragma once
// Voxel-axis orientation of an affine and exact reorientation of volumes.
//
// An Orientation says, for each voxel axis i (0, 1, 2), along which world axis (0 = left-right,
// 1 = posterior-anterior, 2 = inferior-superior) it runs and in which direction (+1 towards R, A, S).
// Codes follow the usual convention: "RAS" means the first voxel axis increases towards Right, the
// second towards Anterior, the third towards Superior.
//
// The closest canonical orientation of an oblique affine follows nibabel's io_orientation: take the
// nearest shear-free rotation of the direction cosines (polar decomposition), then give each voxel
// axis, in order, the still-free world axis it is most aligned with. Reorienting only permutes and
// flips voxel axes, so it is lossless, and the affine is updated exactly (column sign changes and a
// translation by whole voxels), which lets outputs be written back into the input's voxel order.
#include <hdssl/core/error.hpp>
#include <hdssl/core/volume.hpp>

#include <Eigen/Dense>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace hdssl {

/// Direction of one voxel axis in world (RAS) space.
struct AxisDirection {
  int axis = 0;  ///< world axis: 0 = L-R, 1 = P-A, 2 = I-S
  int sign = 1;  ///< +1: index grows towards R / A / S; -1: towards L / P / I
  bool operator==(const AxisDirection& o) const { return axis == o.axis && sign == o.sign; }
  bool operator!=(const AxisDirection& o) const { return !(*this == o); }
};

/// One AxisDirection per voxel axis (i, j, k).
using Orientation = std::array<AxisDirection, 3>;

/// The canonical orientation: voxel axes run towards R, A, S.
inline Orientation ras_orientation() { return {{{0, 1}, {1, 1}, {2, 1}}}; }

/// Closest voxel-axis orientation of an affine (nibabel's io_orientation rule).
/// Throws DataError if the affine is not finite or its 3x3 part is rank-deficient, since such an
/// affine gives no direction to some voxel axis.
inline Orientation io_orientation(const Eigen::Matrix4d& affine) {
  const Eigen::Matrix3d m = affine.topLeftCorner<3, 3>();
  if (!m.allFinite()) throw DataError("affine: orientation undefined, the matrix has non-finite entries");
  Eigen::Vector3d norms = m.colwise().norm().transpose();
  for (int c = 0; c < 3; ++c)
    if (norms[c] == 0.0)
      throw DataError("affine: orientation undefined, voxel axis " + std::to_string(c) + " has zero length");
  // Normalise the columns so that spacing does not bias the decomposition, then take the nearest
  // rotation-like matrix U V^T: shear in an oblique scan must not decide which axis wins.
  const Eigen::Matrix3d dirs = m * norms.cwiseInverse().asDiagonal();
  Eigen::JacobiSVD<Eigen::Matrix3d> svd(dirs, Eigen::ComputeFullU | Eigen::ComputeFullV);
  const Eigen::Vector3d sv = svd.singularValues();
  const double tol = sv.maxCoeff() * 3.0 * std::numeric_limits<double>::epsilon();
  if (sv.minCoeff() <= tol) throw DataError("affine: orientation undefined, voxel axes are linearly dependent");
  Eigen::Matrix3d r = svd.matrixU() * svd.matrixV().transpose();
  Orientation out{};
  for (int in_ax = 0; in_ax < 3; ++in_ax) {
    // Greedy in voxel-axis order; a world axis taken by an earlier voxel axis is removed (its row
    // zeroed) so ties resolve the same way nibabel resolves them.
    int best = 0;
    double best_abs = -1.0;
    for (int w = 0; w < 3; ++w) {
      const double a = std::abs(r(w, in_ax));
      if (a > best_abs) { best_abs = a; best = w; }
    }
    out[in_ax] = {best, r(best, in_ax) < 0 ? -1 : 1};
    r.row(best).setZero();
  }
  return out;
}

/// Three-letter code of an orientation, e.g. "RAS", "LPS", "LAI".
inline std::string axis_codes(const Orientation& o) {
  static const char pos[3] = {'R', 'A', 'S'};
  static const char neg[3] = {'L', 'P', 'I'};
  std::string s(3, '?');
  for (int i = 0; i < 3; ++i) s[i] = o[i].sign > 0 ? pos[o[i].axis] : neg[o[i].axis];
  return s;
}

/// Orientation codes of an affine, e.g. "RAS" (see io_orientation).
inline std::string axis_codes(const Eigen::Matrix4d& affine) { return axis_codes(io_orientation(affine)); }

/// Parses a three-letter code such as "LPS" (case-insensitive). Throws ConfigError on anything else.
inline Orientation orientation_from_codes(const std::string& codes) {
  Orientation o{};
  bool used[3] = {false, false, false};
  if (codes.size() != 3) throw ConfigError("orientation code '" + codes + "': expected three letters such as RAS or LPS");
  for (int i = 0; i < 3; ++i) {
    const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(codes[i])));
    switch (c) {
      case 'R': o[i] = {0, 1}; break;
      case 'L': o[i] = {0, -1}; break;
      case 'A': o[i] = {1, 1}; break;
      case 'P': o[i] = {1, -1}; break;
      case 'S': o[i] = {2, 1}; break;
      case 'I': o[i] = {2, -1}; break;
      default: throw ConfigError("orientation code '" + codes + "': letter '" + std::string(1, codes[i]) + "' is not one of RLAPSI");
    }
    if (used[o[i].axis]) throw ConfigError("orientation code '" + codes + "': a world axis appears twice");
    used[o[i].axis] = true;
  }
  return o;
}

/// A pure permutation + flip of voxel axes: output axis j is input axis source_axis[j], reversed if flip[j].
struct Reorientation {
  std::array<int, 3> source_axis{{0, 1, 2}};
  std::array<bool, 3> flip{{false, false, false}};
  bool is_identity() const {
    for (int j = 0; j < 3; ++j)
      if (source_axis[j] != j || flip[j]) return false;
    return true;
  }
};

/// The reorientation that turns voxel data in orientation `from` into orientation `to`.
inline Reorientation reorientation_between(const Orientation& from, const Orientation& to) {
  Reorientation r;
  bool found[3] = {false, false, false};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      if (to[j].axis == from[i].axis) {
        r.source_axis[j] = i;
        r.flip[j] = from[i].sign != to[j].sign;
        found[j] = true;
      }
  for (int j = 0; j < 3; ++j)
    if (!found[j]) throw ConfigError("orientation " + axis_codes(from) + " -> " + axis_codes(to) + ": not a permutation of world axes");
  return r;
}

/// Voxel-to-voxel matrix T with  source_index = T * new_index  for data of `source_shape`
/// reoriented by r; the new affine is source_affine * T.
inline Eigen::Matrix4d reorientation_matrix(const Reorientation& r, const std::array<int64_t, 3>& source_shape) {
  Eigen::Matrix4d t = Eigen::Matrix4d::Zero();
  t(3, 3) = 1.0;
  for (int j = 0; j < 3; ++j) {
    const int i = r.source_axis[j];
    t(i, j) = r.flip[j] ? -1.0 : 1.0;
    t(i, 3) = r.flip[j] ? static_cast<double>(source_shape[i] - 1) : 0.0;
  }
  return t;
}

/// New affine of data reoriented by r. Computed column by column so that kept and negated columns
/// are bit-exact and only the translation sees rounding (one product per flipped axis).
inline Eigen::Matrix4d reoriented_affine(const Eigen::Matrix4d& affine, const Reorientation& r,
                                         const std::array<int64_t, 3>& source_shape) {
  Eigen::Matrix4d out = affine;
  for (int j = 0; j < 3; ++j) {
    const int i = r.source_axis[j];
    out.block<4, 1>(0, j) = r.flip[j] ? Eigen::Vector4d(-affine.block<4, 1>(0, i)) : Eigen::Vector4d(affine.block<4, 1>(0, i));
  }
  Eigen::Vector3d origin = affine.block<3, 1>(0, 3);
  for (int j = 0; j < 3; ++j)
    if (r.flip[j]) {
      const int i = r.source_axis[j];
      origin += affine.block<3, 1>(0, i) * static_cast<double>(source_shape[i] - 1);
    }
  out.block<3, 1>(0, 3) = origin;
  out.row(3) << 0, 0, 0, 1;
  return out;
}

/// The first three dimensions of t permuted as r says (a view: no voxel moves; r's flips are not applied).
inline torch::Tensor permuted_view(const torch::Tensor& t, const Reorientation& r) {
  std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
  for (int64_t d = 0; d < t.dim(); ++d) perm[static_cast<size_t>(d)] = d;
  for (int j = 0; j < 3; ++j) perm[static_cast<size_t>(j)] = r.source_axis[j];
  return t.permute(perm);
}

namespace detail {
template <typename T>
void reverse_rows(T* data, int64_t rows, int64_t n) {
  at::parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) std::reverse(data + row * n, data + (row + 1) * n);
  });
}
}  // namespace detail

/// Reverses a contiguous CPU tensor along `dim` in place (torch::flip would make a second copy).
inline void flip_in_place(torch::Tensor& t, int dim) {
  const int64_t n = t.size(dim);
  if (n < 2) return;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  const auto esize = static_cast<int64_t>(t.element_size());
  if (inner == 1) {
    switch (esize) {
      case 1: return detail::reverse_rows(static_cast<uint8_t*>(t.data_ptr()), outer, n);
      case 2: return detail::reverse_rows(static_cast<uint16_t*>(t.data_ptr()), outer, n);
      case 4: return detail::reverse_rows(static_cast<uint32_t*>(t.data_ptr()), outer, n);
      case 8: return detail::reverse_rows(static_cast<uint64_t*>(t.data_ptr()), outer, n);
      default: break;
    }
  }
  const int64_t bytes = inner * esize;  // one slice across `dim`
  auto* base = static_cast<unsigned char*>(t.data_ptr());
  at::parallel_for(0, outer, 1, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      unsigned char* p = base + o * n * bytes;
      for (int64_t k = 0; k < n / 2; ++k) std::swap_ranges(p + k * bytes, p + (k + 1) * bytes, p + (n - 1 - k) * bytes);
    }
  });
}

/// Applies r's flips to a contiguous tensor whose axes are already permuted by r (in place on the CPU).
inline void apply_flips(torch::Tensor& t, const Reorientation& r) {
  for (int j = 0; j < 3; ++j) {
    if (!r.flip[j]) continue;
    if (t.device().is_cpu())
      flip_in_place(t, j);
    else
      t = t.flip({j});
  }
}

/// Permutes and flips the first three dimensions of t (trailing dimensions, e.g. time or channels,
/// are kept). Returns a new contiguous tensor, or t itself when it is contiguous and r the identity: one
/// copy of the data, the flips done in place on it.
inline torch::Tensor apply_reorientation(const torch::Tensor& t, const Reorientation& r) {
  if (t.dim() < 3) throw DataError("reorientation: tensor has " + std::to_string(t.dim()) + " dimensions, expected at least 3 (X, Y, Z, ...)");
  if (r.is_identity()) return t.contiguous();
  torch::Tensor out = permuted_view(t, r).clone(at::MemoryFormat::Contiguous);
  apply_flips(out, r);
  return out;
}

/// The volume reoriented so that its voxel axes follow `target` (data permuted/flipped, affine exact).
inline Volume reorient(const Volume& v, const Orientation& target) {
  const Reorientation r = reorientation_between(io_orientation(v.affine), target);
  Volume out = v;
  if (r.is_identity()) return out;
  out.data = apply_reorientation(v.data, r);
  out.affine = reoriented_affine(v.affine, r, {{v.data.size(0), v.data.size(1), v.data.size(2)}});
  return out;
}

/// The volume in its closest canonical (RAS) orientation, as nibabel's as_closest_canonical.
inline Volume as_closest_canonical(const Volume& v) { return reorient(v, ras_orientation()); }

/// The volume back in the voxel order of the file it was read from (meta.source_affine /
/// meta.source_shape). The result's affine is the source affine itself, bit for bit.
/// Throws DataError if the volume's grid is no longer a permutation/flip of the source grid
/// (for example after resampling or cropping), since writing it with the source header would misplace it.
inline Volume to_source_orientation(const Volume& v) {
  const auto& src_shape = v.meta.source_shape;
  const std::string name = v.source.empty() ? std::string("volume") : v.source;
  if (src_shape[0] <= 0 || src_shape[1] <= 0 || src_shape[2] <= 0)
    throw DataError(name + ": no source geometry recorded (meta.source_shape is empty)");
  Volume out = reorient(v, io_orientation(v.meta.source_affine));
  for (int d = 0; d < 3; ++d)
    if (out.data.size(d) != src_shape[d])
      throw DataError(name + ": grid " + std::to_string(out.data.size(0)) + "x" + std::to_string(out.data.size(1)) + "x" +
                      std::to_string(out.data.size(2)) + " does not match the source grid " + std::to_string(src_shape[0]) + "x" +
                      std::to_string(src_shape[1]) + "x" + std::to_string(src_shape[2]) + " (resampled or cropped?)");
  const double scale = std::max(1.0, v.meta.source_affine.cwiseAbs().maxCoeff());
  if (!((out.affine - v.meta.source_affine).cwiseAbs().maxCoeff() <= 1e-6 * scale))
    throw DataError(name + ": affine no longer matches the source affine (resampled or moved?)");
  out.affine = v.meta.source_affine;
  return out;
}

}  // namespace hdssl
