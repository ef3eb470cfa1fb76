// Resampling and crop/pad: values against hand and double-precision computations, geometry against
// world-point mapping through the affines.
#include <doctest/doctest.h>

#include <hdssl/preprocess/crop_pad.hpp>
#include <hdssl/preprocess/resample.hpp>

#include <cmath>

using hdssl::Volume;
namespace pp = hdssl::preprocess;

namespace {

Eigen::Vector3d world(const Eigen::Matrix4d& a, double i, double j, double k) {
  return (a * Eigen::Vector4d(i, j, k, 1.0)).head<3>();
}

// An oblique affine: rotation about an arbitrary axis, spacings (0.8, 1.2, 2.5), origin off zero.
Eigen::Matrix4d oblique_affine() {
  const Eigen::Matrix3d rot = Eigen::AngleAxisd(0.3, Eigen::Vector3d(1, 2, 3).normalized()).toRotationMatrix();
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a.topLeftCorner<3, 3>() = rot * Eigen::Vector3d(0.8, 1.2, 2.5).asDiagonal();
  a.block<3, 1>(0, 3) = Eigen::Vector3d(-90.5, 12.25, 40.0);
  return a;
}

// f(i, j, k) = 2 + 0.5 i - 1.25 j + 3 k: trilinear interpolation reproduces a linear function exactly.
double linear_f(double i, double j, double k) { return 2.0 + 0.5 * i - 1.25 * j + 3.0 * k; }

Volume linear_volume(int64_t X, int64_t Y, int64_t Z, torch::ScalarType dtype) {
  Volume v;
  v.data = torch::empty({X, Y, Z}, torch::kFloat64);
  auto acc = v.data.accessor<double, 3>();
  for (int64_t i = 0; i < X; ++i)
    for (int64_t j = 0; j < Y; ++j)
      for (int64_t k = 0; k < Z; ++k) acc[i][j][k] = linear_f(double(i), double(j), double(k));
  v.data = v.data.to(dtype);
  v.affine = oblique_affine();
  v.source = "linear.nii";
  return v;
}

}  // namespace

TEST_CASE("resample: output size is round(n * old / new) and the spacing is the target") {
  Volume v;
  v.data = torch::zeros({181, 5, 10});
  v.affine = Eigen::Matrix4d::Identity();
  // 181 * 1 / 1.5 = 120.67 -> 121;  5 * 1 / 2 = 2.5 -> 3 (half away from zero);  10 * 1 / 0.3 = 33.3 -> 33
  const auto g = pp::resample_grid(v, Eigen::Vector3d(1.5, 2.0, 0.3));
  CHECK(g.shape == std::array<int64_t, 3>{{121, 3, 33}});
  Volume o;
  o.affine = g.affine;
  CHECK(o.spacing()[0] == doctest::Approx(1.5));
  CHECK(o.spacing()[1] == doctest::Approx(2.0));
  CHECK(o.spacing()[2] == doctest::Approx(0.3));
}

TEST_CASE("resample: linear function reproduced exactly on an oblique grid, float32 and float64") {
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const Volume v = linear_volume(11, 9, 6, dtype);
    const Eigen::Vector3d target(1.1, 0.7, 1.9);
    const Volume r = pp::resample(v, target, pp::Interpolation::linear);
    // hand: 11*0.8/1.1 = 8 ; 9*1.2/0.7 = 15.43 -> 15 ; 6*2.5/1.9 = 7.89 -> 8
    REQUIRE(r.shape() == std::array<int64_t, 3>{{8, 15, 8}});
    CHECK((r.data.scalar_type() == dtype));
    const double ratio[3] = {1.1 / 0.8, 0.7 / 1.2, 1.9 / 2.5};
    const double last[3] = {10, 8, 5};
    const Eigen::Matrix4d inv = v.affine.inverse();
    auto rd = r.data.to(torch::kFloat64);
    auto acc = rd.accessor<double, 3>();
    double max_err = 0, max_world_err = 0;
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t j = 0; j < 15; ++j)
        for (int64_t k = 0; k < 8; ++k) {
          // Independent route to the sampled position: world point of the output voxel, back through
          // the inverse of the input affine, clamped to the input grid.
          const Eigen::Vector3d p = (inv * r.affine * Eigen::Vector4d(double(i), double(j), double(k), 1)).head<3>();
          max_world_err = std::max({max_world_err, std::abs(p[0] - i * ratio[0]), std::abs(p[1] - j * ratio[1]),
                                    std::abs(p[2] - k * ratio[2])});
          const double expect = linear_f(std::min(p[0], last[0]), std::min(p[1], last[1]), std::min(p[2], last[2]));
          max_err = std::max(max_err, std::abs(acc[i][j][k] - expect));
        }
    CHECK(max_world_err < 1e-9);
    CHECK(max_err < (dtype == torch::kFloat64 ? 1e-10 : 2e-5));
  }
}

TEST_CASE("resample: trilinear weights match a hand computation on a non-linear 2x2x2 volume") {
  Volume v;
  // v[x][y][z]: 000=0 001=1 010=2 011=10 100=-3 101=4 110=5 111=20
  v.data = torch::tensor({0.0, 1.0, 2.0, 10.0, -3.0, 4.0, 5.0, 20.0}, torch::kFloat64).view({2, 2, 2});
  v.affine = Eigen::Matrix4d::Identity();
  const Volume r = pp::resample(v, Eigen::Vector3d(0.25, 0.25, 0.25), pp::Interpolation::linear);
  REQUIRE(r.shape() == std::array<int64_t, 3>{{8, 8, 8}});
  auto a = r.data.accessor<double, 3>();
  // (0.25, 0.5, 0.75): z: c00 = 0.75, c01 = 8, c10 = 2.25, c11 = 16.25; y: 4.375, 9.25; x: 5.59375
  CHECK(a[1][2][3] == doctest::Approx(5.59375).epsilon(1e-12));
  CHECK(a[2][2][2] == doctest::Approx((0 + 1 + 2 + 10 - 3 + 4 + 5 + 20) / 8.0).epsilon(1e-12));
  CHECK(a[0][0][0] == 0.0);
  CHECK(a[7][7][7] == 20.0);  // 1.75 clamped to the last centre: edge value, no extrapolation
  CHECK(a[6][0][0] == -3.0);
  // World: output voxel (4, 4, 4) lies at old index (1, 1, 1).
  const Eigen::Vector3d w = world(r.affine, 4, 4, 4);
  CHECK((w - Eigen::Vector3d(1, 1, 1)).norm() < 1e-12);
}

TEST_CASE("resample: the first voxel centre stays put and world points map consistently") {
  const Volume v = linear_volume(20, 16, 12, torch::kFloat32);
  const Volume r = pp::resample(v, Eigen::Vector3d(1.5, 1.5, 1.5), pp::Interpolation::linear);
  CHECK((world(r.affine, 0, 0, 0) - world(v.affine, 0, 0, 0)).norm() < 1e-12);
  // Output voxel (2, 3, 4) is old continuous index (2 * 1.5/0.8, 3 * 1.5/1.2, 4 * 1.5/2.5).
  const Eigen::Vector3d expect = world(v.affine, 2 * 1.875, 3 * 1.25, 4 * 0.6);
  CHECK((world(r.affine, 2, 3, 4) - expect).norm() < 1e-9);
  // Directions are unchanged: the columns stay parallel.
  for (int a = 0; a < 3; ++a)
    CHECK(r.affine.block<3, 1>(0, a).normalized().dot(v.affine.block<3, 1>(0, a).normalized()) ==
          doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("resample: labels use nearest neighbour with ties rounded up and keep their dtype") {
  Volume v;
  v.data = torch::tensor({10, 20, 30, 40}, torch::kInt16).view({4, 1, 1});
  v.affine = Eigen::Matrix4d::Identity();
  const Volume up = pp::resample(v, Eigen::Vector3d(0.5, 1, 1), pp::Interpolation::nearest);
  CHECK((up.data.scalar_type() == torch::kInt16));
  // old positions 0, .5, 1, 1.5, 2, 2.5, 3, 3.5 -> 0, 1, 1, 2, 2, 3, 3, 3 (clamped)
  const std::vector<int16_t> expect_up = {10, 20, 20, 30, 30, 40, 40, 40};
  REQUIRE(up.data.numel() == 8);
  for (int i = 0; i < 8; ++i) CHECK(up.data.view({-1})[i].item<int16_t>() == expect_up[i]);

  Volume w;
  w.data = torch::tensor({1, 2, 3, 4, 5}, torch::kUInt8).view({1, 5, 1});
  w.affine = Eigen::Matrix4d::Identity();
  const Volume down = pp::resample(w, Eigen::Vector3d(1, 2, 1), pp::Interpolation::nearest);
  // 5 / 2 = 2.5 -> 3 voxels at old 0, 2, 4
  REQUIRE(down.data.numel() == 3);
  CHECK(down.data.view({-1})[0].item<uint8_t>() == 1);
  CHECK(down.data.view({-1})[1].item<uint8_t>() == 3);
  CHECK(down.data.view({-1})[2].item<uint8_t>() == 5);
  // No new label values ever appear.
  const Volume mixed = pp::resample(w, Eigen::Vector3d(1, 0.7, 1), pp::Interpolation::nearest);
  CHECK(torch::isin(mixed.data, w.data).all().item<bool>());
}

TEST_CASE("resample: bad spacings and absurd outputs are refused with typed errors") {
  const Volume v = linear_volume(4, 4, 4, torch::kFloat32);
  CHECK_THROWS_AS(pp::resample(v, Eigen::Vector3d(0, 1, 1), pp::Interpolation::linear), hdssl::ConfigError);
  CHECK_THROWS_AS(pp::resample(v, Eigen::Vector3d(1, -1, 1), pp::Interpolation::linear), hdssl::ConfigError);
  CHECK_THROWS_AS(pp::resample(v, Eigen::Vector3d(1, 1, NAN), pp::Interpolation::linear), hdssl::ConfigError);
  CHECK_THROWS_AS(pp::resample(v, Eigen::Vector3d(1e-4, 1e-4, 1e-4), pp::Interpolation::linear), hdssl::ConfigError);
  Volume flat = v;
  flat.affine(0, 0) = flat.affine(1, 0) = flat.affine(2, 0) = 0;
  CHECK_THROWS_AS(pp::resample(flat, Eigen::Vector3d(1, 1, 1), pp::Interpolation::linear), hdssl::DataError);
}

TEST_CASE("bounding box: exact extent of voxels above the threshold") {
  auto x = torch::full({10, 12, 8}, -1000.0);
  x.index_put_({3, 4, 2}, 0.0);
  x.index_put_({7, 9, 5}, -499.0);
  x.index_put_({8, 1, 6}, -500.0);  // not strictly above -500: outside the box
  const auto box = pp::bounding_box(x, -500.0);
  REQUIRE(box.has_value());
  CHECK(box->begin == std::array<int64_t, 3>{{3, 4, 2}});
  CHECK(box->end == std::array<int64_t, 3>{{8, 10, 6}});
  CHECK_FALSE(pp::bounding_box(x, 10.0).has_value());
}

TEST_CASE("crop keeps every voxel at its world position") {
  const Volume v = linear_volume(10, 9, 8, torch::kFloat64);
  pp::Box box;
  box.begin = {{2, 3, 1}};
  box.end = {{7, 9, 4}};
  const Volume c = pp::crop(v, box);
  CHECK(c.shape() == std::array<int64_t, 3>{{5, 6, 3}});
  CHECK(c.data[0][0][0].item<double>() == linear_f(2, 3, 1));
  CHECK(c.data[4][5][2].item<double>() == linear_f(6, 8, 3));
  CHECK((world(c.affine, 0, 0, 0) - world(v.affine, 2, 3, 1)).norm() < 1e-12);
  CHECK((world(c.affine, 4, 5, 2) - world(v.affine, 6, 8, 3)).norm() < 1e-12);
  CHECK(c.affine.topLeftCorner<3, 3>() == v.affine.topLeftCorner<3, 3>());
  box.end[0] = 11;
  CHECK_THROWS_AS(pp::crop(v, box), hdssl::DataError);
}

TEST_CASE("pad to the patch size: centred, documented values, affine shifted by the leading pad") {
  const auto p = pp::padding_to({{100, 130, 19}}, {{128, 128, 32}});
  CHECK(p.before == std::array<int64_t, 3>{{14, 0, 6}});
  CHECK(p.after == std::array<int64_t, 3>{{14, 0, 7}});

  const Volume v = linear_volume(5, 140, 3, torch::kFloat32);
  const auto q = pp::padding_to(v.shape(), {{8, 128, 6}});
  CHECK(q.before == std::array<int64_t, 3>{{1, 0, 1}});
  CHECK(q.after == std::array<int64_t, 3>{{2, 0, 2}});
  const Volume padded = pp::pad(v, q, -7.0);
  CHECK(padded.shape() == std::array<int64_t, 3>{{8, 140, 6}});
  CHECK(padded.data[0][0][0].item<float>() == -7.0f);
  CHECK(padded.data[7][139][5].item<float>() == -7.0f);
  CHECK(padded.data[1][0][1].item<float>() == static_cast<float>(linear_f(0, 0, 0)));
  CHECK(padded.data[5][10][3].item<float>() == static_cast<float>(linear_f(4, 10, 2)));
  CHECK((world(padded.affine, 1, 0, 1) - world(v.affine, 0, 0, 0)).norm() < 1e-12);
  CHECK((world(padded.affine, 5, 10, 3) - world(v.affine, 4, 10, 2)).norm() < 1e-12);

  const auto mask = torch::ones({5, 140, 3}, torch::kBool);
  const auto pm = pp::pad(mask, q, 0.0);
  CHECK((pm.scalar_type() == torch::kBool));
  CHECK(pm.sum().item<int64_t>() == 5 * 140 * 3);
  CHECK_FALSE(pm[0][0][0].item<bool>());
}

TEST_CASE("resample: results do not depend on the number of threads") {
  torch::manual_seed(11);
  Volume v;
  v.data = torch::randn({37, 29, 23});
  v.affine = oblique_affine();
  const int before = torch::get_num_threads();
  torch::set_num_threads(1);
  const Volume one = pp::resample(v, Eigen::Vector3d(0.9, 1.3, 1.7), pp::Interpolation::linear);
  torch::set_num_threads(std::max(2, before));
  const Volume many = pp::resample(v, Eigen::Vector3d(0.9, 1.3, 1.7), pp::Interpolation::linear);
  torch::set_num_threads(before);
  CHECK(torch::equal(one.data, many.data));
}
