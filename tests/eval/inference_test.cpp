// Whole-volume inference: the sliding-window grid and its three blend modes (against direct whole-volume
// prediction, hand-derived window ownership and an independent weighted mean), and mapping a prediction
// back onto its input's grid (linear ramps, label maps, the real preprocessing's crop and resample).
#include <doctest/doctest.h>

#include <hdssl/core/volume.hpp>
#include <hdssl/eval/sliding_window.hpp>
#include <hdssl/nn/segmentation_model.hpp>
#include <hdssl/preprocess/pipeline.hpp>
#include <hdssl/preprocess/resample.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <vector>

namespace ev = hdssl::eval;
namespace pp = hdssl::preprocess;
using hdssl::ConfigError;
using hdssl::DataError;

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

ev::SlidingWindowOptions window_options(std::array<int64_t, 3> window, std::array<int64_t, 3> stride, ev::Blend blend,
                                        int64_t batch) {
  ev::SlidingWindowOptions o;
  o.window = window;
  o.stride = stride;
  o.blend = blend;
  o.batch = batch;
  return o;
}

const std::array<ev::Blend, 3> kAllBlends{{ev::Blend::gaussian, ev::Blend::constant, ev::Blend::overwrite}};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Sliding window

TEST_CASE("window_starts: stride steps plus a last window flush with the border") {
  // 100 / 32 / 16: 0, 16, 32, 48, 64 (64 + 32 = 96 < 100), then 100 - 32 = 68.
  CHECK(ev::window_starts(100, 32, 16) == std::vector<int64_t>{0, 16, 32, 48, 64, 68});
  CHECK(ev::window_starts(32, 32, 16) == std::vector<int64_t>{0});
  CHECK(ev::window_starts(20, 32, 16) == std::vector<int64_t>{0});
  CHECK(ev::window_starts(33, 32, 16) == std::vector<int64_t>{0, 1});
  // 40 / 10 / 10: the last stride step already ends at the border; no duplicate start.
  CHECK(ev::window_starts(40, 10, 10) == std::vector<int64_t>{0, 10, 20, 30});
  CHECK(ev::window_starts(41, 10, 10) == std::vector<int64_t>{0, 10, 20, 30, 31});
  CHECK(ev::window_starts(7, 3, 1) == std::vector<int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("sliding window: a volume within one window equals the network on the whole (padded) volume") {
  torch::manual_seed(11);
  hdssl::nn::SegmentationModelOptions mo;
  mo.in_channels = 1;
  mo.base_channels = 4;
  mo.levels = 3;
  mo.classes = 2;
  hdssl::nn::SegmentationModel model(mo);
  model->eval();
  torch::NoGradGuard no_grad;
  int64_t calls = 0;
  auto predict = [&](const torch::Tensor& x) {
    ++calls;
    return model->forward(x);
  };

  // Exactly window-sized.
  const auto image = torch::rand({1, 16, 16, 8});
  const auto direct = model->forward(image.unsqueeze(0))[0];
  REQUIRE(direct.sizes() == torch::IntArrayRef({2, 16, 16, 8}));
  for (ev::Blend blend : kAllBlends) {
    CAPTURE(static_cast<int>(blend));
    calls = 0;
    const auto r = ev::sliding_window_inference(image, predict, window_options({{16, 16, 8}}, {{8, 8, 4}}, blend, 4));
    CHECK(calls == 1);
    CHECK(max_abs_diff(r, direct) < 1e-5);
  }

  // Smaller than the window on every axis: zero-padded after the data up to (16, 16, 8), then cropped.
  const auto small = torch::rand({1, 13, 10, 7});
  auto padded = torch::zeros({1, 1, 16, 16, 8});
  padded[0].slice(1, 0, 13).slice(2, 0, 10).slice(3, 0, 7).copy_(small);
  const auto direct_small = model->forward(padded)[0].slice(1, 0, 13).slice(2, 0, 10).slice(3, 0, 7);
  for (ev::Blend blend : kAllBlends) {
    CAPTURE(static_cast<int>(blend));
    const auto r = ev::sliding_window_inference(small, predict, window_options({{16, 16, 8}}, {{8, 8, 4}}, blend, 4));
    CHECK(r.sizes() == torch::IntArrayRef({2, 13, 10, 7}));
    CHECK(max_abs_diff(r, direct_small) < 1e-5);
  }
  // The padding is really there: the unpadded volume through the network gives other values.
  CHECK(max_abs_diff(model->forward(small.unsqueeze(0))[0], direct_small) > 1e-4);
}

TEST_CASE("sliding window: a pointwise predictor is reproduced exactly by every blend mode") {
  torch::NoGradGuard no_grad;
  // y_k = sum_c W[k][c] x_c + b_k per voxel: (B, 2, ...) -> (B, 3, ...). The bias keeps every output
  // away from 0, so a voxel no window covered (weight 0 -> 0) would show.
  const auto W = torch::tensor({{1.5f, -0.5f}, {0.25f, 2.0f}, {-1.0f, 0.75f}}).view({3, 2, 1, 1, 1});
  const auto bias = torch::tensor({1.0f, -2.0f, 0.5f});
  int64_t windows = 0;
  auto predict = [&](const torch::Tensor& x) {
    windows += x.size(0);
    return torch::conv3d(x, W, bias);
  };
  struct Case {
    std::array<int64_t, 3> size;
    int64_t expect_windows;
  };
  // Window (12, 10, 8), stride (5, 4, 3):
  //   x 37: starts 0 5 10 15 20 25   y 29: 0 4 8 12 16 19   z 23: 0 3 6 9 12 15   -> 6 * 6 * 6 = 216
  //   y 7 (below the window): the single start 0, padded                            -> 6 * 1 * 6 = 36
  for (const Case& c : {Case{{{37, 29, 23}}, 216}, Case{{{37, 7, 23}}, 36}}) {
    CAPTURE(c.size[1]);
    const auto image = torch::randn({2, c.size[0], c.size[1], c.size[2]});
    const auto direct = torch::conv3d(image.unsqueeze(0), W, bias)[0];
    for (ev::Blend blend : kAllBlends) {
      CAPTURE(static_cast<int>(blend));
      windows = 0;
      const auto r = ev::sliding_window_inference(image, predict, window_options({{12, 10, 8}}, {{5, 4, 3}}, blend, 7));
      CHECK(windows == c.expect_windows);
      CHECK((r.scalar_type() == torch::kFloat32));
      CHECK(max_abs_diff(r, direct) < 1e-5);
    }
  }
}

namespace {

// The ownership layout of the next two cases: image (1, 30, 21, 9), window (10, 8, 9), stride (6, 5, 9).
//   x: starts 0 6 12 18 20, centres (start + 4.5) 4.5 10.5 16.5 22.5 24.5
//   y: starts 0 5 10 13,    centres (start + 3.5) 3.5 8.5 13.5 16.5
//   z: the single start 0.
// Windows are visited x-major, so window (ix, iy, 0) is the (4 ix + iy)-th.
const std::vector<int64_t> kStartsX{0, 6, 12, 18, 20}, kStartsY{0, 5, 10, 13};

/// A predictor that fills each window's output with its own visiting index.
std::function<torch::Tensor(const torch::Tensor&)> index_predictor(int64_t& counter) {
  return [&counter](const torch::Tensor& x) {
    auto out = torch::empty({x.size(0), 1, x.size(2), x.size(3), x.size(4)});
    for (int64_t b = 0; b < x.size(0); ++b) out[b].fill_(static_cast<double>(counter + b));
    counter += x.size(0);
    return out;
  };
}

}  // namespace

TEST_CASE("sliding window, overwrite: each voxel belongs to the window whose centre is nearest") {
  // Nearest centre per axis, ties to the later window:
  //   x 0..7 -> 0, 8..13 -> 1, 14..19 -> 2, 20..23 -> 3, 24..29 -> 4
  //   y 0..5 -> 0, 6..10 -> 1 (6 ties 3.5 / 8.5), 11..14 -> 2 (11 ties), 15..20 -> 3 (15 ties 13.5 / 16.5)
  auto owner_x = [](int64_t x) -> int64_t { return x <= 7 ? 0 : x <= 13 ? 1 : x <= 19 ? 2 : x <= 23 ? 3 : 4; };
  auto owner_y = [](int64_t y) -> int64_t { return y <= 5 ? 0 : y <= 10 ? 1 : y <= 14 ? 2 : 3; };
  int64_t counter = 0;
  const auto r = ev::sliding_window_inference(torch::zeros({1, 30, 21, 9}), index_predictor(counter),
                                              window_options({{10, 8, 9}}, {{6, 5, 9}}, ev::Blend::overwrite, 3));
  CHECK(counter == 20);
  REQUIRE(r.sizes() == torch::IntArrayRef({1, 30, 21, 9}));
  const auto a = r.accessor<float, 4>();
  int64_t wrong = 0;
  for (int64_t x = 0; x < 30; ++x)
    for (int64_t y = 0; y < 21; ++y)
      for (int64_t z = 0; z < 9; ++z) wrong += a[0][x][y][z] != static_cast<float>(4 * owner_x(x) + owner_y(y));
  CHECK(wrong == 0);
  // Spot values straight from the tables: (7, 6) -> window (0, 1) = 1; (8, 15) -> (1, 3) = 7; (29, 20) -> 19.
  CHECK(a[0][7][6][0] == 1.0f);
  CHECK(a[0][8][15][4] == 7.0f);
  CHECK(a[0][29][20][8] == 19.0f);
}

TEST_CASE("sliding window, constant and gaussian: the (weighted) mean of the covering windows") {
  const int64_t wx = 10, wy = 8, wz = 9;
  // Gaussian importance as MONAI: exp(-(t - (w - 1) / 2)^2 / (2 sigma^2)), sigma = 0.125 w, per axis;
  // the product normalised to a maximum of 1 and floored at 1e-3.
  auto g1 = [](int64_t t, int64_t w) {
    const double s = 0.125 * static_cast<double>(w), d = static_cast<double>(t) - (static_cast<double>(w) - 1) / 2;
    return std::exp(-d * d / (2 * s * s));
  };
  double gmax = 0;
  for (int64_t i = 0; i < wx; ++i)
    for (int64_t j = 0; j < wy; ++j)
      for (int64_t k = 0; k < wz; ++k) gmax = std::max(gmax, g1(i, wx) * g1(j, wy) * g1(k, wz));
  auto importance = [&](int64_t i, int64_t j, int64_t k) { return std::max(1e-3, g1(i, wx) * g1(j, wy) * g1(k, wz) / gmax); };

  for (ev::Blend blend : {ev::Blend::constant, ev::Blend::gaussian}) {
    CAPTURE(static_cast<int>(blend));
    int64_t counter = 0;
    const auto r = ev::sliding_window_inference(torch::zeros({1, 30, 21, 9}), index_predictor(counter),
                                                window_options({{wx, wy, wz}}, {{6, 5, 9}}, blend, 3));
    const auto a = r.accessor<float, 4>();
    double worst = 0;
    for (int64_t x = 0; x < 30; ++x)
      for (int64_t y = 0; y < 21; ++y)
        for (int64_t z = 0; z < 9; ++z) {
          double sum = 0, weight = 0;
          for (size_t ix = 0; ix < kStartsX.size(); ++ix)
            for (size_t iy = 0; iy < kStartsY.size(); ++iy) {
              const int64_t i = x - kStartsX[ix], j = y - kStartsY[iy];
              if (i < 0 || i >= wx || j < 0 || j >= wy) continue;
              const double w = blend == ev::Blend::constant ? 1.0 : importance(i, j, z);
              sum += w * static_cast<double>(4 * ix + iy);
              weight += w;
            }
          worst = std::max(worst, std::abs(a[0][x][y][z] - sum / weight));
        }
    CHECK(worst < 1e-4);
  }
  // Hand value, constant mode: (12, 12) is covered by x windows 1, 2 and y windows 1, 2:
  // mean of 4 ix + iy over those = 4 * 1.5 + 1.5 = 7.5.
  int64_t counter = 0;
  const auto c = ev::sliding_window_inference(torch::zeros({1, 30, 21, 9}), index_predictor(counter),
                                              window_options({{wx, wy, wz}}, {{6, 5, 9}}, ev::Blend::constant, 3));
  CHECK(c[0][12][12][0].item<float>() == doctest::Approx(7.5));
}

TEST_CASE("sliding window: bad predictor output is a DataError, bad options a ConfigError") {
  const auto image = torch::zeros({1, 20, 20, 10});
  const auto opt = window_options({{8, 8, 4}}, {{4, 4, 2}}, ev::Blend::gaussian, 2);
  auto short_z = [](const torch::Tensor& x) { return x.slice(4, 0, x.size(4) - 1); };
  auto one_window = [](const torch::Tensor& x) { return x.slice(0, 0, 1); };
  auto four_d = [](const torch::Tensor& x) { return x[0]; };
  CHECK_THROWS_AS(ev::sliding_window_inference(image, short_z, opt), DataError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, one_window, opt), DataError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, four_d, opt), DataError);
  auto identity = [](const torch::Tensor& x) { return x; };
  CHECK_THROWS_AS(ev::sliding_window_inference(torch::zeros({20, 20, 10}), identity, opt), DataError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, identity, window_options({{8, 8, 4}}, {{4, 9, 2}}, ev::Blend::constant, 2)),
                  ConfigError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, identity, window_options({{8, 8, 4}}, {{4, 0, 2}}, ev::Blend::constant, 2)),
                  ConfigError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, identity, window_options({{8, 0, 4}}, {{4, 1, 2}}, ev::Blend::constant, 2)),
                  ConfigError);
  CHECK_THROWS_AS(ev::sliding_window_inference(image, identity, window_options({{8, 8, 4}}, {{4, 4, 2}}, ev::Blend::constant, 0)),
                  ConfigError);
  auto zero_sigma = opt;
  zero_sigma.sigma_scale = 0;
  CHECK_THROWS_AS(ev::sliding_window_inference(image, identity, zero_sigma), ConfigError);
}

// ---------------------------------------------------------------------------------------------------------
// Mapping back onto the input grid

namespace {

/// A diagonal (axis-aligned) affine with signed spacings and an origin.
Eigen::Matrix4d grid_affine(const Eigen::Vector3d& spacing, const Eigen::Vector3d& origin) {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  for (int i = 0; i < 3; ++i) a(i, i) = spacing[i];
  a.block<3, 1>(0, 3) = origin;
  return a;
}

/// f(world) = c . world + d evaluated at every voxel centre of a diagonal grid.
torch::Tensor ramp_on_grid(const Eigen::Vector3d& c, double d, const Eigen::Vector3d& spacing, const Eigen::Vector3d& origin,
                           const std::array<int64_t, 3>& n, torch::ScalarType dtype) {
  auto t = torch::empty({n[0], n[1], n[2]}, torch::kFloat64);
  auto a = t.accessor<double, 3>();
  for (int64_t i = 0; i < n[0]; ++i)
    for (int64_t j = 0; j < n[1]; ++j)
      for (int64_t k = 0; k < n[2]; ++k)
        a[i][j][k] = c[0] * (origin[0] + spacing[0] * i) + c[1] * (origin[1] + spacing[1] * j) +
                     c[2] * (origin[2] + spacing[2] * k) + d;
  return t.to(dtype);
}

/// What mapping that ramp from the `from` grid onto the `to` grid must give, computed per axis from the
/// grids alone: q = (world - from origin) / from spacing; outside when q < -0.5 or q > n - 0.5; otherwise
/// the ramp at q clamped to [0, n - 1] (exact between the first and last source centres, the edge value
/// in the half voxel beyond them). Also counts the voxels strictly between the outer centres.
torch::Tensor expected_onto(const Eigen::Vector3d& c, double d, const Eigen::Vector3d& from_spacing,
                            const Eigen::Vector3d& from_origin, const std::array<int64_t, 3>& from_n,
                            const Eigen::Vector3d& to_spacing, const Eigen::Vector3d& to_origin,
                            const std::array<int64_t, 3>& to_n, double outside, int64_t* exact_count) {
  auto t = torch::empty({to_n[0], to_n[1], to_n[2]}, torch::kFloat64);
  auto a = t.accessor<double, 3>();
  *exact_count = 0;
  for (int64_t i = 0; i < to_n[0]; ++i)
    for (int64_t j = 0; j < to_n[1]; ++j)
      for (int64_t k = 0; k < to_n[2]; ++k) {
        const std::array<int64_t, 3> idx{{i, j, k}};
        double v = d;
        bool in = true, exact = true;
        for (int ax = 0; ax < 3; ++ax) {
          const double w = to_origin[ax] + to_spacing[ax] * static_cast<double>(idx[ax]);
          const double q = (w - from_origin[ax]) / from_spacing[ax];
          const double last = static_cast<double>(from_n[ax] - 1);
          if (q < -0.5 - 1e-9 || q > last + 0.5 + 1e-9) in = false;
          if (q < 0 || q > last) exact = false;
          v += c[ax] * (from_origin[ax] + from_spacing[ax] * std::clamp(q, 0.0, last));
        }
        a[i][j][k] = in ? v : outside;
        *exact_count += in && exact;
      }
  return t;
}

}  // namespace

TEST_CASE("resample_onto: a linear ramp comes back exactly inside the source grid, `outside` beyond it") {
  // From: 2 mm voxels, x flipped, origin off the target's by several voxels. To: 1 mm voxels, x flipped too.
  //   x: q = ((16 - i) - 13) / -2 = (i - 3) / 2   -> inside i in [2, 14], exact in [3, 13]
  //   y: q = (j + 4) / 2                          -> inside j <= 5, exact j <= 4
  //   z: q = (k - 5) / 2                          -> inside k in [4, 18], exact in [5, 17]
  const Eigen::Vector3d fs(-2, 2, 2), fo(13, -4, 5), ts(-1, 1, 1), to(16, 0, 0);
  const std::array<int64_t, 3> fn{{6, 5, 7}}, tn{{20, 16, 18}};
  const Eigen::Vector3d c(0.75, -1.25, 0.5);
  const double d = 3.0, outside = -50.0;
  const auto src = ramp_on_grid(c, d, fs, fo, fn, torch::kFloat32);
  const auto out = pp::resample_onto(src, grid_affine(fs, fo), grid_affine(ts, to), tn, pp::Interpolation::linear, outside);
  CHECK((out.scalar_type() == torch::kFloat32));
  REQUIRE(out.sizes() == torch::IntArrayRef({20, 16, 18}));
  int64_t exact = 0;
  const auto expect = expected_onto(c, d, fs, fo, fn, ts, to, tn, outside, &exact);
  CHECK(exact == 11 * 5 * 13);
  CHECK(max_abs_diff(out, expect) < 1e-4);
  CHECK((out == outside).sum().item<int64_t>() == 20 * 16 * 18 - 13 * 6 * 14);
  // Spot values: voxel (3, 0, 5) is source voxel (0, 2, 0) at world (13, 0, 5): 9.75 - 0 + 2.5 + 3.
  CHECK(out[3][0][5].item<float>() == doctest::Approx(15.25).epsilon(1e-6));
  CHECK(out[1][0][5].item<float>() == outside);   // q_x = -1: a whole voxel before the first centre
  CHECK(out[3][6][5].item<float>() == outside);   // q_y = 5 > 4.5

  // 4-D: two float64 channels with different ramps, each mapped on its own.
  const Eigen::Vector3d c2(-0.5, 0.25, 2.0);
  const auto two = torch::stack({ramp_on_grid(c, d, fs, fo, fn, torch::kFloat64), ramp_on_grid(c2, -1.0, fs, fo, fn, torch::kFloat64)});
  const auto out2 = pp::resample_onto(two, grid_affine(fs, fo), grid_affine(ts, to), tn, pp::Interpolation::linear, outside);
  REQUIRE(out2.sizes() == torch::IntArrayRef({2, 20, 16, 18}));
  CHECK((out2.scalar_type() == torch::kFloat64));
  CHECK(max_abs_diff(out2[0], expect) < 1e-9);
  CHECK(max_abs_diff(out2[1], expected_onto(c2, -1.0, fs, fo, fn, ts, to, tn, outside, &exact)) < 1e-9);
}

TEST_CASE("resample_onto: nearest copies label maps; shifted grids overlap exactly; rotations are refused") {
  // Same 1.5 mm grid shifted by (2, -1, 3) voxels: target j reads source j + (2, -1, 3).
  torch::manual_seed(5);
  const auto labels = torch::randint(0, 6, {12, 10, 8}, torch::kInt16);
  const Eigen::Vector3d s(1.5, 1.5, 1.5), o(2, -3, 1);
  const Eigen::Vector3d shifted = o + 1.5 * Eigen::Vector3d(2, -1, 3);
  const auto out = pp::resample_onto(labels, grid_affine(s, o), grid_affine(s, shifted), {{11, 9, 7}}, pp::Interpolation::nearest, 9);
  CHECK((out.scalar_type() == torch::kInt16));
  REQUIRE(out.sizes() == torch::IntArrayRef({11, 9, 7}));
  // Overlap: x j <= 9 (source 2..11), y j >= 1 (source 0..7), z j <= 4 (source 3..7).
  CHECK(out.slice(0, 0, 10).slice(1, 1, 9).slice(2, 0, 5).equal(labels.slice(0, 2, 12).slice(1, 0, 8).slice(2, 3, 8)));
  CHECK((out.slice(0, 10, 11) == 9).all().item<bool>());
  CHECK((out.slice(1, 0, 1) == 9).all().item<bool>());
  CHECK((out.slice(2, 5, 7) == 9).all().item<bool>());
  CHECK((out == 9).sum().item<int64_t>() == 11 * 9 * 7 - 10 * 8 * 5);

  // 2 mm -> 1 mm, same origin: x index floor(i / 2 + 0.5), ties up: 0 1 1 2 2 3 3, then i = 7 (q = 3.5, half
  // a voxel past the last centre: still inside) clamped to 3, and i = 8 (q = 4) outside.
  auto ramp = torch::arange(4, torch::kUInt8).view({4, 1, 1}).expand({4, 2, 2}).contiguous();
  const auto fine = pp::resample_onto(ramp, grid_affine({2, 1, 1}, {0, 0, 0}), grid_affine({1, 1, 1}, {0, 0, 0}), {{9, 2, 2}},
                                      pp::Interpolation::nearest, 77);
  CHECK((fine.scalar_type() == torch::kUInt8));
  CHECK(fine.select(2, 0).select(1, 0).to(torch::kLong).equal(torch::tensor({0, 1, 1, 2, 2, 3, 3, 3, 77}, torch::kLong)));

  // Not axis-aligned to each other: 30 degrees about z, and a swap of x and y.
  Eigen::Matrix4d rot = Eigen::Matrix4d::Identity();
  const double a = M_PI / 6;
  rot(0, 0) = std::cos(a), rot(0, 1) = -std::sin(a), rot(1, 0) = std::sin(a), rot(1, 1) = std::cos(a);
  Eigen::Matrix4d swap = Eigen::Matrix4d::Zero();
  swap(0, 1) = swap(1, 0) = swap(2, 2) = swap(3, 3) = 1;
  const auto f = torch::rand({6, 6, 6});
  CHECK_THROWS_AS(pp::resample_onto(f, rot, Eigen::Matrix4d::Identity(), {{6, 6, 6}}, pp::Interpolation::linear), DataError);
  CHECK_THROWS_AS(pp::resample_onto(f, Eigen::Matrix4d::Identity(), swap, {{6, 6, 6}}, pp::Interpolation::nearest), DataError);
  CHECK_THROWS_AS(pp::resample_onto(torch::rand({6, 6}), Eigen::Matrix4d::Identity(), Eigen::Matrix4d::Identity(), {{6, 6, 6}},
                                    pp::Interpolation::linear),
                  DataError);
}

TEST_CASE("resample_onto undoes the real preprocessing's resample and crop of a linear ramp") {
  // Input: 1 mm grid, origin (-10, 4, 7), shape (24, 18, 30), f(world) = 2 x - z + y + 5 (float32).
  const Eigen::Vector3d c(2, 1, -1), in_sp(1, 1, 1), in_o(-10, 4, 7);
  const double d = 5;
  const std::array<int64_t, 3> in_n{{24, 18, 30}};
  hdssl::Volume v;
  v.data = ramp_on_grid(c, d, in_sp, in_o, in_n, torch::kFloat32);
  v.affine = grid_affine(in_sp, in_o);
  v.source = "ramp";

  // Spacing (2, 1.5, 3): sizes round(24/2, 18/1.5, 30/3) = (12, 12, 10); the last centres (22, 16.5, 27)
  // stay inside the input, so the resampled values are the ramp: -18 + 4 i + 1.5 j - 3 k in [-45, 42.5].
  // Crop to > 5: the largest value of x-plane i is 4 i - 1.5, so i >= 2; y and z keep everything.
  // Window [-100, 100] clips nothing; body threshold far below everything; patch (1, 1, 1) pads nothing.
  pp::PreprocessOptions o;
  o.spacing = std::array<double, 3>{{2.0, 1.5, 3.0}};
  o.intensity = pp::IntensityMode::window;
  o.window = {{-100.0, 100.0}};
  o.threshold_space = pp::ThresholdSpace::input;
  o.crop_threshold = 5.0;
  o.body_threshold = -1e6;
  o.patch_size = {{1, 1, 1}};
  const auto p = pp::preprocess(v, o);
  CHECK(p.info.resampled_shape == std::array<int64_t, 3>{{12, 12, 10}});
  CHECK(p.info.crop.begin == std::array<int64_t, 3>{{2, 0, 0}});
  CHECK(p.info.crop.end == std::array<int64_t, 3>{{12, 12, 10}});
  REQUIRE(p.image.data.sizes() == torch::IntArrayRef({10, 12, 10}));

  // Back onto the input grid. The preprocessed grid: origin (-10 + 2 * 2, 4, 7) = (-6, 4, 7), spacing
  // (2, 1.5, 3), 10 x 12 x 10 voxels; values (f + 100) / 200, i.e. the ramp c / 200, d' = (5 + 100) / 200.
  //   x: q = (i - 4) / 2   -> outside for i <= 2, edge value at i = 3 and 23, exact for 4..22
  //   y: q = j / 1.5       -> inside for all j <= 17, edge value at j = 17
  //   z: q = k / 3         -> exact k <= 27, edge value at k = 28, outside at k = 29
  const double outside = -1;
  const auto back = pp::resample_onto(p.image.data, p.image.affine, v.affine, in_n, pp::Interpolation::linear, outside);
  REQUIRE(back.sizes() == torch::IntArrayRef({24, 18, 30}));
  int64_t exact = 0;
  const auto expect = expected_onto(c / 200, (d + 100) / 200, {2, 1.5, 3}, {-6, 4, 7}, {{10, 12, 10}}, in_sp, in_o, in_n,
                                    outside, &exact);
  CHECK(exact == 19 * 17 * 28);
  CHECK(max_abs_diff(back, expect) < 1e-4);
  // Exact part against the input itself, rescaled.
  const auto inner = back.slice(0, 4, 23).slice(1, 0, 17).slice(2, 0, 28);
  CHECK(max_abs_diff(inner, (v.data.slice(0, 4, 23).slice(1, 0, 17).slice(2, 0, 28) + 100) / 200) < 1e-4);
  CHECK((back.slice(0, 0, 3) == outside).all().item<bool>());
  CHECK((back.slice(2, 29, 30) == outside).all().item<bool>());
  CHECK((back == outside).sum().item<int64_t>() == 24 * 18 * 30 - 21 * 18 * 29);
}
