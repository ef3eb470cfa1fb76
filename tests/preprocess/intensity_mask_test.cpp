// Windowing and percentiles against hand values; the body mask against hand-built phantoms and against
// a naive fixed-point flood fill.
#include <doctest/doctest.h>

#include <hdssl/preprocess/body_mask.hpp>
#include <hdssl/preprocess/intensity.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace pp = hdssl::preprocess;

TEST_CASE("CT window clip and scale: hand values for both windows") {
  const auto hu = torch::tensor({-2000.0, -1350.0, -175.0, 0.0, 250.0, 1000.0, 3000.0});
  const auto a = pp::clip_and_scale(hu, -1350, 1000);
  CHECK((a.scalar_type() == torch::kFloat32));
  const double expect_a[] = {0.0, 0.0, 1175.0 / 2350, 1350.0 / 2350, 1600.0 / 2350, 1.0, 1.0};
  for (int i = 0; i < 7; ++i) CHECK(a[i].item<float>() == doctest::Approx(expect_a[i]).epsilon(1e-7));
  const auto b = pp::clip_and_scale(hu, -175, 250);
  const double expect_b[] = {0.0, 0.0, 0.0, 175.0 / 425, 1.0, 1.0, 1.0};
  for (int i = 0; i < 7; ++i) CHECK(b[i].item<float>() == doctest::Approx(expect_b[i]).epsilon(1e-7));
  CHECK_THROWS_AS(pp::clip_and_scale(hu, 5, 5), hdssl::ConfigError);
  CHECK_THROWS_AS(pp::clip_and_scale(hu, 10, -10), hdssl::ConfigError);
}

TEST_CASE("percentiles follow numpy's linear rule: hand values") {
  // 1..10 shuffled: h = 9 q / 100
  auto x = torch::tensor({7.0f, 3.0f, 10.0f, 1.0f, 5.0f, 9.0f, 2.0f, 8.0f, 4.0f, 6.0f});
  CHECK(pp::percentile(x, 25) == doctest::Approx(3.25).epsilon(1e-12));   // h 2.25: 3 + .25
  CHECK(pp::percentile(x, 50) == doctest::Approx(5.5).epsilon(1e-12));    // h 4.5
  CHECK(pp::percentile(x, 0) == 1.0);
  CHECK(pp::percentile(x, 100) == 10.0);
  CHECK(pp::percentile(x, 99.9) == doctest::Approx(9.991).epsilon(1e-12));  // h 8.991
  CHECK(pp::percentile(x, 0.01) == doctest::Approx(1.0009).epsilon(1e-12));  // h 0.0009
  // 0..10000 in a scrambled order: h = 10000 q / 100 = 100 q
  auto y = torch::randperm(10001, torch::kLong).to(torch::kFloat64);
  const auto p = pp::percentiles(y, {0.01, 99.9, 1, 99.99});
  CHECK(p[0] == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(p[1] == doctest::Approx(9990.0).epsilon(1e-12));
  CHECK(p[2] == doctest::Approx(100.0).epsilon(1e-12));
  CHECK(p[3] == doctest::Approx(9999.0).epsilon(1e-12));
  // Repeated values: [0, 0, 0, 10] at 50 -> h 1.5 between 0 and 0
  CHECK(pp::percentile(torch::tensor({0.0, 10.0, 0.0, 0.0}), 50) == 0.0);
  CHECK(pp::percentile(torch::tensor({0.0, 10.0, 0.0, 0.0}), 90) == doctest::Approx(7.0).epsilon(1e-12));  // h 2.7
}

TEST_CASE("percentiles agree with a full sort on random data of odd size") {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(100.0f, 40.0f);
  std::vector<float> v(12345);
  for (auto& e : v) e = dist(rng);
  const auto t = torch::from_blob(v.data(), {15, 823}, torch::kFloat32).clone();
  std::vector<double> s(v.begin(), v.end());
  std::sort(s.begin(), s.end());
  for (double q : {0.01, 0.5, 1.0, 37.3, 50.0, 99.0, 99.9, 99.99}) {
    const double h = (s.size() - 1) * q / 100.0;
    const size_t k = static_cast<size_t>(h);
    const double expect = s[k] + (h - k) * (s[std::min(k + 1, s.size() - 1)] - s[k]);
    CHECK(pp::percentile(t, q) == doctest::Approx(expect).epsilon(1e-12));
  }
}

TEST_CASE("MRI percentile clip and scale; errors for bad input") {
  auto y = torch::randperm(10001, torch::kLong).to(torch::kFloat32).view({1, 73, 137});
  const auto [scaled, range] = pp::percentile_clip_and_scale(y, 1, 99, "mr.nii");
  CHECK(range.first == doctest::Approx(100.0));
  CHECK(range.second == doctest::Approx(9900.0));
  CHECK(scaled.min().item<float>() == 0.0f);
  CHECK(scaled.max().item<float>() == 1.0f);
  const auto idx = (y == 5000.0f).nonzero()[0];
  CHECK(scaled.index({idx[0], idx[1], idx[2]}).item<float>() == doctest::Approx(4900.0 / 9800).epsilon(1e-7));
  CHECK_THROWS_AS(pp::percentile_clip_and_scale(torch::ones({4, 4, 4}), 1, 99, "flat.nii"), hdssl::DataError);
  CHECK_THROWS_AS(pp::percentile(torch::tensor({1.0, std::nan("")}), 50), hdssl::DataError);
  CHECK_THROWS_AS(pp::percentile(torch::tensor({1.0, 2.0}), 101), hdssl::ConfigError);
  CHECK_THROWS_AS(pp::percentile(torch::empty({0}), 50), hdssl::DataError);
  try {
    pp::percentile_clip_and_scale(torch::ones({4, 4, 4}), 1, 99, "flat.nii");
  } catch (const hdssl::DataError& e) {
    CHECK(std::string(e.what()).find("flat.nii") != std::string::npos);
  }
}

namespace {

constexpr float kAir = -1000.0f, kTissue = 40.0f;

// A 20 x 20 x 6 phantom: a tissue block x, y in [3, 17) on every slice, outside air.
torch::Tensor phantom() {
  auto img = torch::full({20, 20, 6}, kAir);
  img.slice(0, 3, 17).slice(1, 3, 17).fill_(kTissue);
  return img;
}

torch::Tensor block_mask() {
  auto m = torch::zeros({20, 20, 6}, torch::kBool);
  m.slice(0, 3, 17).slice(1, 3, 17).fill_(true);
  return m;
}

// Naive oracle: outside = air on the in-plane border; repeat outside |= air & neighbour-of-outside until
// nothing changes. Neighbours: all offsets with |d| <= 1 per axis, restricted to faces for `face`,
// to dz = 0 for per-slice.
torch::Tensor oracle_mask(const torch::Tensor& img, float thr, bool full, bool per_slice) {
  const int64_t X = img.size(0), Y = img.size(1), Z = img.size(2);
  auto a = img.accessor<float, 3>();
  std::vector<char> out(X * Y * Z, 0);
  auto at = [&](int64_t x, int64_t y, int64_t z) -> char& { return out[(x * Y + y) * Z + z]; };
  for (int64_t x = 0; x < X; ++x)
    for (int64_t y = 0; y < Y; ++y)
      for (int64_t z = 0; z < Z; ++z)
        if ((x == 0 || y == 0 || x == X - 1 || y == Y - 1) && a[x][y][z] < thr) at(x, y, z) = 1;
  bool changed = true;
  while (changed) {
    changed = false;
    for (int64_t x = 0; x < X; ++x)
      for (int64_t y = 0; y < Y; ++y)
        for (int64_t z = 0; z < Z; ++z) {
          if (at(x, y, z) || !(a[x][y][z] < thr)) continue;
          for (int dx = -1; dx <= 1 && !at(x, y, z); ++dx)
            for (int dy = -1; dy <= 1; ++dy)
              for (int dz = -1; dz <= 1; ++dz) {
                const int nz = std::abs(dx) + std::abs(dy) + std::abs(dz);
                if (nz == 0 || (!full && nz > 1) || (per_slice && dz != 0)) continue;
                const int64_t u = x + dx, v = y + dy, w = z + dz;
                if (u < 0 || v < 0 || w < 0 || u >= X || v >= Y || w >= Z) continue;
                if (at(u, v, w)) {
                  at(x, y, z) = 1;
                  changed = true;
                }
              }
        }
  }
  auto m = torch::empty({X, Y, Z}, torch::kBool);
  auto ma = m.accessor<bool, 3>();
  for (int64_t x = 0; x < X; ++x)
    for (int64_t y = 0; y < Y; ++y)
      for (int64_t z = 0; z < Z; ++z) ma[x][y][z] = !at(x, y, z);
  return m;
}

bool same(const torch::Tensor& a, const torch::Tensor& b) { return a.sizes() == b.sizes() && a.eq(b).all().item<bool>(); }

}  // namespace

TEST_CASE("body mask: enclosed air counts as body in every mode") {
  auto img = phantom();
  img.slice(0, 7, 10).slice(1, 7, 10).slice(2, 1, 4).fill_(kAir);  // inner air (bowel gas)
  for (bool per_slice : {false, true})
    for (auto conn : {pp::Connectivity::face, pp::Connectivity::full}) {
      const auto m = pp::body_mask(img, -500, conn, per_slice);
      CHECK((m.scalar_type() == torch::kBool));
      CHECK(same(m, block_mask()));
    }
}

TEST_CASE("body mask: a channel from the inner air to the border empties it (3-D) or its slice (per slice)") {
  auto img = phantom();
  img.slice(0, 7, 10).slice(1, 7, 10).slice(2, 1, 4).fill_(kAir);  // cavity on slices 1..3
  img.slice(0, 0, 8).slice(1, 8, 9).slice(2, 2, 3).fill_(kAir);    // channel to x = 0 on slice 2 only
  auto expect3d = block_mask();
  expect3d.slice(0, 7, 10).slice(1, 7, 10).slice(2, 1, 4).fill_(false);
  expect3d.slice(0, 0, 8).slice(1, 8, 9).slice(2, 2, 3).fill_(false);
  auto expect2d = block_mask();
  expect2d.slice(0, 7, 10).slice(1, 7, 10).slice(2, 2, 3).fill_(false);
  expect2d.slice(0, 0, 8).slice(1, 8, 9).slice(2, 2, 3).fill_(false);
  for (auto conn : {pp::Connectivity::face, pp::Connectivity::full}) {
    CHECK(same(pp::body_mask(img, -500, conn, false), expect3d));
    CHECK(same(pp::body_mask(img, -500, conn, true), expect2d));
  }
}

TEST_CASE("body mask: a diagonal-only gap leaks with full connectivity, not with face connectivity") {
  auto img = phantom();
  img.index_put_({3, 3}, kAir);  // the block's corner column becomes outside air
  img.index_put_({4, 4}, kAir);  // enclosed air touching it only diagonally (in-plane)
  auto expect_face = block_mask();
  expect_face.index_put_({3, 3}, false);
  auto expect_full = expect_face.clone();
  expect_full.index_put_({4, 4}, false);
  for (bool per_slice : {false, true}) {
    CHECK(same(pp::body_mask(img, -500, pp::Connectivity::face, per_slice), expect_face));
    CHECK(same(pp::body_mask(img, -500, pp::Connectivity::full, per_slice), expect_full));
  }
}

TEST_CASE("body mask: threshold is strict, NaN is not air, z faces are not seeds") {
  auto img = torch::full({6, 6, 4}, -500.0f);  // not < -500: nothing is air
  CHECK(pp::body_mask(img, -500).all().item<bool>());
  img.fill_(-600.0f);
  CHECK_FALSE(pp::body_mask(img, -500).any().item<bool>());
  img.index_put_({0, 2, 1}, NAN);  // a NaN on the border is not air and stays body
  auto m = pp::body_mask(img, -500);
  CHECK(m.sum().item<int64_t>() == 1);
  CHECK(m[0][2][1].item<bool>());
  // Air enclosed in-plane on all slices, open only through the z = 0 face: body (z faces do not seed).
  auto tube = torch::full({8, 8, 5}, kTissue);
  tube.slice(0, 3, 5).slice(1, 3, 5).fill_(kAir);
  CHECK(pp::body_mask(tube, -500).all().item<bool>());
}

TEST_CASE("body mask agrees with a naive fixed-point flood fill on random phantoms") {
  torch::manual_seed(3);
  for (int trial = 0; trial < 6; ++trial) {
    const auto img = torch::where(torch::rand({23, 19, 9}) < 0.55, torch::full({}, kAir), torch::full({}, kTissue));
    for (bool per_slice : {false, true})
      for (bool full : {false, true}) {
        const auto m = pp::body_mask(img, -500, full ? pp::Connectivity::full : pp::Connectivity::face, per_slice);
        const auto o = oracle_mask(img, -500, full, per_slice);
        CHECK(same(m, o));
      }
  }
}
