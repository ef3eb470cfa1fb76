#pragma once
// Resampling a Volume to a target voxel spacing: trilinear for images, nearest neighbour for label maps.
//
// Grid convention ("first voxel centre stays put", the convention of nibabel-style spacing changes):
//   ratio r_a      = new_spacing_a / old_spacing_a                 (old spacing = norm of affine column a)
//   new size n'_a  = max(1, lround(n_a * old_spacing_a / new_spacing_a))   (round half away from zero)
//   new affine     = old affine with column a multiplied by r_a; translation column unchanged
//   output voxel i' samples the old grid at continuous index  i = r (.) i'  (element-wise product).
// So the centre of voxel (0,0,0) is the same world point before and after, axis directions are kept
// (oblique affines included), and every output voxel's world position A' i' equals A (r (.) i').
// Samples past the last old voxel centre (possible when n'_a * r_a > n_a - 1) take the edge value:
// coordinates are clamped to [0, n_a - 1] per axis, never extrapolated, never zero-filled.
//
// Why not torch::nn::functional::interpolate: align_corners=true maps first *and* last centres onto each
// other (the spacing becomes (n-1)/(n'-1) * old, not the requested one), align_corners=false keeps the
// outer extent and shifts the first centre by (r-1)/2 voxels. Neither is the convention above, so the
// kernel is written here: per-axis (index, weight) tables computed in double precision, an 8-tap
// weighted sum accumulated in double, parallel over x-planes with at::parallel_for.
//
// Nearest neighbour (labels): old index = floor(r_a * i' + 0.5) clamped to [0, n_a - 1] (ties go up);
// values are copied unchanged, whatever the dtype.
#include <torch/torch.h>

#include <Eigen/Dense>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/volume.hpp"

namespace hdssl::preprocess {

enum class Interpolation { linear, nearest };

/// Where a resampling puts its output: shape, affine and the per-axis ratio new/old spacing.
struct ResampleGrid {
  std::array<int64_t, 3> shape{{0, 0, 0}};
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();
  Eigen::Vector3d ratio = Eigen::Vector3d::Ones();
};

/// Largest output accepted (voxels): a mistyped spacing (0.001 mm) must not try to allocate terabytes.
constexpr int64_t kMaxResampledVoxels = int64_t{1} << 31;

/// The output grid of resampling `v` to `spacing` (mm), under the convention in this file's header.
inline ResampleGrid resample_grid(const Volume& v, const Eigen::Vector3d& spacing) {
  const std::string what = "resample of '" + v.source + "': ";
  if (!v.data.defined() || v.data.dim() != 3) throw DataError(what + "volume data must be a 3-D (X, Y, Z) tensor");
  if (v.data.numel() == 0) throw DataError(what + "volume is empty");
  const Eigen::Vector3d old_sp = v.spacing();
  ResampleGrid g;
  g.affine = v.affine;
  double total = 1.0;
  for (int a = 0; a < 3; ++a) {
    if (!std::isfinite(spacing[a]) || spacing[a] <= 0)
      throw ConfigError(what + "target spacing " + std::to_string(spacing[a]) + " on axis " + std::to_string(a) +
                        " must be a finite positive number of mm");
    if (!std::isfinite(old_sp[a]) || old_sp[a] <= 0)
      throw DataError(what + "affine column " + std::to_string(a) + " has zero or non-finite length");
    const double n = static_cast<double>(v.data.size(a)) * old_sp[a] / spacing[a];
    const double rounded = std::max(1.0, std::round(n));
    total *= rounded;
    if (total > static_cast<double>(kMaxResampledVoxels))
      throw ConfigError(what + "target spacing would produce more than 2^31 voxels");
    g.shape[a] = static_cast<int64_t>(rounded);
    g.ratio[a] = spacing[a] / old_sp[a];
    g.affine.block<3, 1>(0, a) *= g.ratio[a];
  }
  return g;
}

namespace detail {

/// Per-axis linear taps: output i reads old voxels i0 and i1 with weights (1 - w) and w.
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<double> w;
};

/// Continuous old index of output voxel i, with near-integers snapped so exact grids stay exact.
inline double source_coordinate(int64_t i, double ratio, double offset = 0) {
  const double p = static_cast<double>(i) * ratio + offset;
  const double r = std::round(p);
  return std::abs(p - r) < 1e-9 ? r : p;
}

inline AxisTaps linear_taps(int64_t n_out, int64_t n_in, double ratio, double offset = 0) {
  AxisTaps t;
  t.i0.resize(n_out);
  t.i1.resize(n_out);
  t.w.resize(n_out);
  const double last = static_cast<double>(n_in - 1);
  for (int64_t i = 0; i < n_out; ++i) {
    const double p = std::min(std::max(source_coordinate(i, ratio, offset), 0.0), last);
    const int64_t f = static_cast<int64_t>(std::floor(p));
    t.i0[i] = f;
    t.i1[i] = std::min(f + 1, n_in - 1);
    t.w[i] = p - static_cast<double>(f);
  }
  return t;
}

inline torch::Tensor nearest_indices(int64_t n_out, int64_t n_in, double ratio, double offset = 0) {
  auto idx = torch::empty({n_out}, torch::kLong);
  auto* p = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t k = static_cast<int64_t>(std::floor(source_coordinate(i, ratio, offset) + 0.5));
    p[i] = std::min(std::max(k, int64_t{0}), n_in - 1);
  }
  return idx;
}

template <typename T>
void trilinear_kernel(const T* in, T* out, const std::array<int64_t, 3>& n_in, const std::array<int64_t, 3>& n_out,
                      const AxisTaps& tx, const AxisTaps& ty, const AxisTaps& tz) {
  const int64_t sx = n_in[1] * n_in[2], sy = n_in[2];
  at::parallel_for(0, n_out[0], 1, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      const T* p0 = in + tx.i0[x] * sx;
      const T* p1 = in + tx.i1[x] * sx;
      const double wx = tx.w[x];
      for (int64_t y = 0; y < n_out[1]; ++y) {
        const int64_t y0 = ty.i0[y] * sy, y1 = ty.i1[y] * sy;
        const double wy = ty.w[y];
        const T *p00 = p0 + y0, *p01 = p0 + y1, *p10 = p1 + y0, *p11 = p1 + y1;
        T* o = out + (x * n_out[1] + y) * n_out[2];
        for (int64_t z = 0; z < n_out[2]; ++z) {
          const int64_t z0 = tz.i0[z], z1 = tz.i1[z];
          const double wz = tz.w[z];
          // Interpolate along z, then y, then x; double accumulation keeps float inputs exact to rounding.
          const double c00 = p00[z0] + wz * (static_cast<double>(p00[z1]) - p00[z0]);
          const double c01 = p01[z0] + wz * (static_cast<double>(p01[z1]) - p01[z0]);
          const double c10 = p10[z0] + wz * (static_cast<double>(p10[z1]) - p10[z0]);
          const double c11 = p11[z0] + wz * (static_cast<double>(p11[z1]) - p11[z0]);
          const double c0 = c00 + wy * (c01 - c00);
          const double c1 = c10 + wy * (c11 - c10);
          o[z] = static_cast<T>(c0 + wx * (c1 - c0));
        }
      }
    }
  });
}

}  // namespace detail

/// Resamples `v` to `spacing` (mm per axis). Linear: float32 output (float64 input stays float64;
/// integer inputs are converted to float32). Nearest: same dtype as the input.
inline Volume resample(const Volume& v, const Eigen::Vector3d& spacing, Interpolation interp) {
  const ResampleGrid g = resample_grid(v, spacing);
  Volume out;
  out.affine = g.affine;
  out.meta = v.meta;
  out.source = v.source;
  const torch::Tensor src = v.data.to(torch::kCPU).contiguous();
  const std::array<int64_t, 3> n_in = v.shape();
  if (interp == Interpolation::nearest) {
    out.data = src.index_select(0, detail::nearest_indices(g.shape[0], n_in[0], g.ratio[0]))
                   .index_select(1, detail::nearest_indices(g.shape[1], n_in[1], g.ratio[1]))
                   .index_select(2, detail::nearest_indices(g.shape[2], n_in[2], g.ratio[2]))
                   .contiguous();
    return out;
  }
  const torch::Tensor in = src.scalar_type() == torch::kFloat64 ? src : src.to(torch::kFloat32).contiguous();
  out.data = torch::empty({g.shape[0], g.shape[1], g.shape[2]}, in.options());
  const auto tx = detail::linear_taps(g.shape[0], n_in[0], g.ratio[0]);
  const auto ty = detail::linear_taps(g.shape[1], n_in[1], g.ratio[1]);
  const auto tz = detail::linear_taps(g.shape[2], n_in[2], g.ratio[2]);
  if (in.scalar_type() == torch::kFloat64)
    detail::trilinear_kernel(in.data_ptr<double>(), out.data.data_ptr<double>(), n_in, g.shape, tx, ty, tz);
  else
    detail::trilinear_kernel(in.data_ptr<float>(), out.data.data_ptr<float>(), n_in, g.shape, tx, ty, tz);
  out.meta.datatype = in.scalar_type() == torch::kFloat64 ? 64 : 16;  // NIFTI_TYPE_FLOAT64 / FLOAT32
  out.meta.scl_slope = 1.0;
  out.meta.scl_inter = 0.0;
  return out;
}

/// Resamples data on the grid `from_affine` onto the grid (`to_affine`, `to_shape`): the inverse of the
/// preprocessing's resample + crop + pad, used to put a prediction back onto its input's grid. data is
/// (X, Y, Z) or (C, X, Y, Z) on the `from` grid. Both grids must share their axis directions (the
/// preprocessing only rescales and shifts axes), so each output axis reads one input axis at
/// i_from = scale * i_to + offset. Target voxels whose centre falls outside the `from` grid (more than half
/// a voxel past its first or last centre: what the crop removed) get `outside`; the rest are
/// interpolated as resample() does (linear: float32 out; nearest: values copied, same dtype).
inline torch::Tensor resample_onto(const torch::Tensor& data, const Eigen::Matrix4d& from_affine,
                                   const Eigen::Matrix4d& to_affine, const std::array<int64_t, 3>& to_shape,
                                   Interpolation interp, double outside = 0) {
  if (!data.defined() || (data.dim() != 3 && data.dim() != 4) || data.numel() == 0)
    throw DataError("resample onto a grid: data must be a non-empty (X, Y, Z) or (C, X, Y, Z) tensor");
  const Eigen::Matrix4d m = from_affine.inverse() * to_affine;  // to-index -> from-index
  if (!m.allFinite()) throw DataError("resample onto a grid: the source affine is singular");
  const double tol = 1e-6 * std::max(1.0, m.topLeftCorner<3, 3>().cwiseAbs().maxCoeff());
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      if (r != c && std::abs(m(r, c)) > tol)
        throw DataError("resample onto a grid: the two grids' axes are not parallel (only rescaled and shifted grids are mapped)");
  const bool channels = data.dim() == 4;
  const torch::Tensor src = (channels ? data : data.unsqueeze(0)).to(torch::kCPU).contiguous();
  const std::array<int64_t, 3> n_in{{src.size(1), src.size(2), src.size(3)}};
  std::array<torch::Tensor, 3> inside;
  for (int a = 0; a < 3; ++a) {
    auto in = torch::empty({to_shape[a]}, torch::kBool);
    auto* p = in.data_ptr<bool>();
    for (int64_t i = 0; i < to_shape[a]; ++i) {
      const double q = m(a, a) * static_cast<double>(i) + m(a, 3);
      p[i] = q >= -0.5 - 1e-6 && q <= static_cast<double>(n_in[a]) - 0.5 + 1e-6;
    }
    inside[a] = in;
  }
  const auto mask = inside[0].view({-1, 1, 1}) & inside[1].view({1, -1, 1}) & inside[2].view({1, 1, -1});
  torch::Tensor out;
  if (interp == Interpolation::nearest) {
    out = src.index_select(1, detail::nearest_indices(to_shape[0], n_in[0], m(0, 0), m(0, 3)))
              .index_select(2, detail::nearest_indices(to_shape[1], n_in[1], m(1, 1), m(1, 3)))
              .index_select(3, detail::nearest_indices(to_shape[2], n_in[2], m(2, 2), m(2, 3)));
  } else {
    const torch::Tensor in = src.scalar_type() == torch::kFloat64 ? src : src.to(torch::kFloat32).contiguous();
    out = torch::empty({in.size(0), to_shape[0], to_shape[1], to_shape[2]}, in.options());
    const auto tx = detail::linear_taps(to_shape[0], n_in[0], m(0, 0), m(0, 3));
    const auto ty = detail::linear_taps(to_shape[1], n_in[1], m(1, 1), m(1, 3));
    const auto tz = detail::linear_taps(to_shape[2], n_in[2], m(2, 2), m(2, 3));
    for (int64_t c = 0; c < in.size(0); ++c) {
      if (in.scalar_type() == torch::kFloat64)
        detail::trilinear_kernel(in[c].data_ptr<double>(), out[c].data_ptr<double>(), n_in, to_shape, tx, ty, tz);
      else
        detail::trilinear_kernel(in[c].data_ptr<float>(), out[c].data_ptr<float>(), n_in, to_shape, tx, ty, tz);
    }
  }
  out = torch::where(mask.unsqueeze(0), out, torch::full({}, outside, out.options())).contiguous();
  return channels ? out : out[0];
}

}  // namespace hdssl::preprocess
