#pragma once
// Volume: a 3-D image tensor in (X, Y, Z) voxel order with its geometry.
//
// Axis convention (method.md section 1): arrays are indexed [x, y, z] = NIfTI (i, j, k); NIfTI stores
// x fastest, so the raw buffer viewed C-contiguously is (Z, Y, X) and is permuted once at load time.
// Tensors stay (X, Y, Z) / (N, C, X, Y, Z) everywhere so reference weights load without permutation.
#include <torch/torch.h>

#include <Eigen/Dense>
#include <array>
#include <cstdint>
#include <string>

namespace hdssl {

/// Header fields kept from the source file, so outputs can be written back into the same space.
struct NiftiMeta {
  int nifti_version = 1;                 ///< 1 or 2
  int datatype = 16;                     ///< NIFTI_TYPE_* on disk (16 = float32)
  double scl_slope = 1.0;                ///< intensity scaling applied at load (0 in file = none)
  double scl_inter = 0.0;
  int qform_code = 0;                    ///< as found in the file
  int sform_code = 0;
  int xyz_units = 2;                     ///< NIFTI_UNITS_MM
  int time_units = 0;
  int intent_code = 0;
  std::string description;               ///< descrip field
  std::array<int64_t, 3> source_shape{{0, 0, 0}};  ///< shape in the file's own voxel order
  Eigen::Matrix4d source_affine = Eigen::Matrix4d::Identity();  ///< affine before reorientation
  int64_t num_volumes = 1;               ///< 4th dimension of the file (1 for 3-D)
  int64_t volume_index = 0;              ///< which volume of a 4-D file this is
  int64_t non_finite_count = 0;          ///< NaN/Inf voxels found at load
};

/// A 3-D image: tensor (X, Y, Z) plus its voxel-to-world (RAS, mm) affine.
struct Volume {
  torch::Tensor data;                                   ///< (X, Y, Z)
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity(); ///< voxel (i, j, k, 1) -> RAS mm
  NiftiMeta meta;
  std::string source;                                   ///< file it came from, for messages

  /// Voxel size per axis: the norms of the affine's first three columns.
  Eigen::Vector3d spacing() const {
    return affine.topLeftCorner<3, 3>().colwise().norm().transpose();
  }
  std::array<int64_t, 3> shape() const {
    return {{data.size(0), data.size(1), data.size(2)}};
  }
};

}  // namespace hdssl
