// Orientation codes and exact reorientation (hand-built affines), and the hdssl-inspect driver.
#include <doctest/doctest.h>

#include <hdssl/core/orientation.hpp>
#include <hdssl/io/nifti.hpp>

#include <nlohmann/json.hpp>

#include "../test_support.hpp"
#include "io_test_support.hpp"

#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using hdssl::Volume;

namespace {

Eigen::Matrix4d make_affine(const Eigen::Matrix3d& m, const Eigen::Vector3d& t) {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a.topLeftCorner<3, 3>() = m;
  a.block<3, 1>(0, 3) = t;
  return a;
}

Volume numbered_volume(int64_t nx, int64_t ny, int64_t nz, const Eigen::Matrix4d& affine) {
  Volume v;
  v.data = torch::arange(nx * ny * nz, torch::kFloat64).reshape({nx, ny, nz});
  v.affine = affine;
  v.meta.source_affine = affine;
  v.meta.source_shape = {{nx, ny, nz}};
  return v;
}

/// Every voxel of `b` must hold the value found at the same world position in `a`.
void check_same_world_content(const Volume& a, const Volume& b) {
  const Eigen::Matrix4d to_a = a.affine.inverse() * b.affine;  // b voxel -> a voxel
  const auto bs = b.shape();
  auto acc_a = a.data.accessor<double, 3>();
  auto acc_b = b.data.accessor<double, 3>();
  for (int64_t i = 0; i < bs[0]; ++i)
    for (int64_t j = 0; j < bs[1]; ++j)
      for (int64_t k = 0; k < bs[2]; ++k) {
        const Eigen::Vector4d p = to_a * Eigen::Vector4d(static_cast<double>(i), static_cast<double>(j), static_cast<double>(k), 1.0);
        const int64_t ai = std::llround(p[0]), aj = std::llround(p[1]), ak = std::llround(p[2]);
        REQUIRE(std::abs(p[0] - static_cast<double>(ai)) < 1e-9);
        REQUIRE(std::abs(p[1] - static_cast<double>(aj)) < 1e-9);
        REQUIRE(std::abs(p[2] - static_cast<double>(ak)) < 1e-9);
        REQUIRE(acc_b[i][j][k] == acc_a[ai][aj][ak]);
      }
}

struct Run {
  int status = -1;
  std::string out, err;
};

/// Runs hdssl-inspect with the given arguments, capturing stdout/stderr and the exit status.
Run run_inspect(const hdssl::test::TempDir& tmp, const std::vector<std::string>& args) {
  const auto out = tmp / "stdout.txt";
  const auto err = tmp / "stderr.txt";
  std::string cmd = "'" + (hdssl::test::bin_dir() / "hdssl-inspect").string() + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " > '" + out.string() + "' 2> '" + err.string() + "'";
  Run r;
  const int raw = std::system(cmd.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream fo(out), fe(err);
  std::stringstream so, se;
  so << fo.rdbuf();
  se << fe.rdbuf();
  r.out = so.str();
  r.err = se.str();
  return r;
}

bool have_inspect() { return fs::exists(hdssl::test::bin_dir() / "hdssl-inspect"); }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST_CASE("axis codes of hand-built affines") {
  CHECK(hdssl::axis_codes(Eigen::Matrix4d::Identity()) == "RAS");
  CHECK(hdssl::axis_codes(make_affine(Eigen::Vector3d(-1, -1, 1).asDiagonal(), {0, 0, 0})) == "LPS");
  CHECK(hdssl::axis_codes(make_affine(Eigen::Vector3d(-2, 3, -0.5).asDiagonal(), {5, 6, 7})) == "LAI");
  Eigen::Matrix3d perm;
  perm << 0, 0, 2,  //
      -3, 0, 0,     //
      0, 1, 0;
  // column 0 = (0, -3, 0): P; column 1 = (0, 0, 1): S; column 2 = (2, 0, 0): R
  CHECK(hdssl::axis_codes(make_affine(perm, {1, 2, 3})) == "PSR");
  // Oblique: rotation by 60 degrees about z. Column 0 = (cos 60, sin 60, 0) is closest to A,
  // column 1 = (-sin 60, cos 60, 0) to L.
  const double c = std::cos(M_PI / 3), s = std::sin(M_PI / 3);
  Eigen::Matrix3d rot;
  rot << c, -s, 0, s, c, 0, 0, 0, 1;
  CHECK(hdssl::axis_codes(make_affine(rot, {0, 0, 0})) == "ALS");
  // 30 degrees: still RAS; anisotropic spacing must not change the answer.
  const double c3 = std::cos(M_PI / 6), s3 = std::sin(M_PI / 6);
  Eigen::Matrix3d rot30;
  rot30 << c3, -s3, 0, s3, c3, 0, 0, 0, 1;
  CHECK(hdssl::axis_codes(make_affine(rot30 * Eigen::Vector3d(0.5, 4.0, 1.0).asDiagonal(), {0, 0, 0})) == "RAS");

  CHECK(hdssl::axis_codes(hdssl::orientation_from_codes("lpi")) == "LPI");
  CHECK_THROWS_AS(hdssl::orientation_from_codes("RAR"), hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::orientation_from_codes("RAX"), hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::orientation_from_codes("RA"), hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::io_orientation(make_affine(Eigen::Vector3d(1, 0, 1).asDiagonal(), {0, 0, 0})), hdssl::DataError);
}

TEST_CASE("LPS volume to RAS and back, by hand") {
  // LPS with spacing (1.5, 2, 3): x runs to the left, y to posterior.
  const Eigen::Matrix4d lps = make_affine(Eigen::Vector3d(-1.5, -2.0, 3.0).asDiagonal(), {100, 50, -20});
  const Volume v = numbered_volume(4, 5, 6, lps);
  const Volume ras = hdssl::as_closest_canonical(v);
  CHECK(hdssl::axis_codes(ras.affine) == "RAS");
  CHECK((ras.shape() == std::array<int64_t, 3>{{4, 5, 6}}));
  // new[i, j, k] = old[3 - i, 4 - j, k]
  auto o = v.data.accessor<double, 3>();
  auto n = ras.data.accessor<double, 3>();
  CHECK(n[0][0][0] == o[3][4][0]);
  CHECK(n[3][4][5] == o[0][0][5]);
  CHECK(n[1][2][3] == o[2][2][3]);
  // Hand-computed affine: voxel (0,0,0) of the new grid is old voxel (3,4,0), at
  // x = 100 - 1.5*3 = 95.5, y = 50 - 2*4 = 42, z = -20; columns are the negated old ones.
  Eigen::Matrix4d expect = make_affine(Eigen::Vector3d(1.5, 2.0, 3.0).asDiagonal(), {95.5, 42.0, -20.0});
  CHECK(ras.affine == expect);
  check_same_world_content(v, ras);

  const Volume back = hdssl::to_source_orientation(ras);
  CHECK(torch::equal(back.data, v.data));
  CHECK(back.affine == lps);
}

TEST_CASE("permuted and oblique affines: RAS and back exactly, world content preserved") {
  Eigen::Matrix3d perm;
  perm << 0, 0, 2.5,  //
      -1.25, 0, 0,    //
      0, -0.75, 0;
  const std::vector<Eigen::Matrix4d> affines = {
      make_affine(perm, {10.5, -3.25, 7}),
      make_affine(Eigen::Vector3d(1, -1, -1).asDiagonal(), {0, 0, 0}),
      // oblique, sheared and permuted: voxel axes (i, j, k) ~ (S, L, A)
      make_affine((Eigen::Matrix3d() << 0.1, -0.9, 0.05, 0.2, 0.05, 1.1, 1.3, 0.1, -0.2).finished(), {-4, 8, 1}),
  };
  for (const auto& a : affines) {
    CAPTURE(hdssl::axis_codes(a));
    const Volume v = numbered_volume(3, 4, 5, a);
    const Volume ras = hdssl::as_closest_canonical(v);
    CHECK(hdssl::axis_codes(ras.affine) == "RAS");
    check_same_world_content(v, ras);
    const Volume back = hdssl::to_source_orientation(ras);
    CHECK(torch::equal(back.data, v.data));
    CHECK(back.affine == a);
  }
  CHECK(hdssl::axis_codes(affines[2]) == "SLA");

  // Any orientation to any other: reorient to LPI and check against a hand-built expectation.
  const Volume v = numbered_volume(3, 4, 5, Eigen::Matrix4d::Identity());
  const Volume lpi = hdssl::reorient(v, hdssl::orientation_from_codes("LPI"));
  CHECK(hdssl::axis_codes(lpi.affine) == "LPI");
  CHECK(torch::equal(lpi.data, v.data.flip({0, 1, 2})));
  check_same_world_content(v, lpi);

  // Trailing dimensions (time, channels) follow the spatial permutation untouched.
  const torch::Tensor series = torch::arange(3 * 4 * 5 * 2, torch::kFloat32).reshape({3, 4, 5, 2});
  const auto r = hdssl::reorientation_between(hdssl::io_orientation(affines[0]), hdssl::ras_orientation());
  const torch::Tensor moved = hdssl::apply_reorientation(series, r);
  for (int64_t t = 0; t < 2; ++t) {
    using torch::indexing::Ellipsis;
    CHECK(torch::equal(moved.index({Ellipsis, t}), hdssl::apply_reorientation(series.index({Ellipsis, t}), r)));
  }
}

TEST_CASE("to_source_orientation refuses a volume whose grid changed") {
  const Eigen::Matrix4d lps = make_affine(Eigen::Vector3d(-1, -1, 1).asDiagonal(), {0, 0, 0});
  Volume ras = hdssl::as_closest_canonical(numbered_volume(4, 5, 6, lps));
  Volume cropped = ras;
  cropped.data = ras.data.narrow(0, 0, 3).contiguous();
  CHECK_THROWS_AS(hdssl::to_source_orientation(cropped), hdssl::DataError);
  Volume moved = ras;
  moved.affine(0, 3) += 5.0;
  CHECK_THROWS_AS(hdssl::to_source_orientation(moved), hdssl::DataError);
  Volume fresh;
  fresh.data = torch::zeros({2, 2, 2});
  CHECK_THROWS_AS(hdssl::to_source_orientation(fresh), hdssl::DataError);
}

TEST_CASE("hdssl-inspect: valid files, --json, --volume, non-finite count") {
  if (!have_inspect()) {
    MESSAGE("hdssl-inspect not built; skipped");
    return;
  }
  hdssl::test::TempDir tmp;
  // A float file with 3 non-finite voxels and known statistics.
  torch::Tensor d = torch::arange(1, 1 + 4 * 5 * 6, torch::kFloat32).reshape({4, 5, 6});  // 1..120
  d.index_put_({0, 0, 0}, std::numeric_limits<float>::quiet_NaN());  // removes the value 1
  d.index_put_({3, 4, 5}, std::numeric_limits<float>::infinity());   // removes 120
  d.index_put_({1, 0, 0}, -std::numeric_limits<float>::infinity());  // removes the value at x=1: 31
  const auto nan_file = tmp / "nan.nii.gz";
  hdssl::io::write_nifti(nan_file, d, Eigen::Matrix4d::Identity());

  Run r = run_inspect(tmp, {nan_file.string()});
  CHECK(r.status == 0);
  CHECK(r.out.find("non-finite voxels: 3") != std::string::npos);
  CHECK(r.out.find("RAS") != std::string::npos);
  CHECK(r.out.find("4 x 5 x 6") != std::string::npos);
  CHECK(r.err.empty());

  r = run_inspect(tmp, {"--json", "--percentiles", "0,50,100", nan_file.string()});
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 1);
  CHECK(j[0]["non_finite"].get<int64_t>() == 3);
  CHECK((j[0]["dims"] == nlohmann::json({4, 5, 6})));
  CHECK((j[0]["orientation"] == "RAS"));
  CHECK((j[0]["datatype"] == "float32"));
  // Finite values: 2..119 without 31: 117 values. Hand-computed: min 2, max 119,
  // mean = (sum 2..119 - 31) / 117 = (7139 - 31) / 117; median = sorted index 58 = 61
  // (indices 0..28 hold 2..30, index k >= 29 holds k + 3).
  CHECK(j[0]["min"].get<double>() == 2.0);
  CHECK(j[0]["max"].get<double>() == 119.0);
  CHECK(j[0]["mean"].get<double>() == doctest::Approx((7139.0 - 31.0) / 117.0));
  CHECK(j[0]["percentiles"]["50"].get<double>() == 61.0);
  CHECK(j[0]["percentiles"]["0"].get<double>() == 2.0);
  CHECK(j[0]["percentiles"]["100"].get<double>() == 119.0);
  CHECK(j[0]["affine"][0][0].get<double>() == 1.0);

  const auto ch2 = hdssl::test::mricron("ch2.nii.gz");
  if (fs::exists(ch2)) {
    r = run_inspect(tmp, {"--threads", "1", ch2.string()});
    CHECK(r.status == 0);
    CHECK(r.out.find("181 x 217 x 181") != std::string::npos);
    CHECK(r.out.find("uint8") != std::string::npos);
    CHECK(r.out.find("non-finite voxels: 0") != std::string::npos);

    // Cost per file without LibTorch's start-up: one file vs five, reported (not asserted: speed is a
    // benchmark's business, and this machine is shared). CPU time of the child (user + sys) is the
    // figure to read, since wall time on a busy test machine mostly measures the other jobs.
    auto child_cpu = [] {
      rusage u{};
      getrusage(RUSAGE_CHILDREN, &u);
      return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
    };
    const double c0 = child_cpu();
    const auto t0 = std::chrono::steady_clock::now();
    run_inspect(tmp, {ch2.string()});
    const double c1 = child_cpu();
    const auto t1 = std::chrono::steady_clock::now();
    run_inspect(tmp, {ch2.string(), ch2.string(), ch2.string(), ch2.string(), ch2.string()});
    const double c2 = child_cpu();
    const auto t2 = std::chrono::steady_clock::now();
    const double wall_one = std::chrono::duration<double>(t1 - t0).count();
    const double wall_per_file = (std::chrono::duration<double>(t2 - t1).count() - wall_one) / 4.0;
    const double cpu_per_file = ((c2 - c1) - (c1 - c0)) / 4.0;
    MESSAGE("hdssl-inspect ch2.nii.gz: one file " << wall_one << " s wall / " << (c1 - c0) << " s CPU (with start-up); each further file "
            << wall_per_file << " s wall / " << cpu_per_file << " s CPU");
  }
  const auto four_d = hdssl::test::nibabel_data("example4d.nii.gz");
  if (fs::exists(four_d)) {
    r = run_inspect(tmp, {"--volume", "1", four_d.string()});
    CHECK(r.status == 0);
    CHECK(r.out.find("128 x 96 x 24 x 2") != std::string::npos);
    r = run_inspect(tmp, {"--volume", "2", four_d.string()});
    CHECK(r.status == 2);
    CHECK(r.err.find("volume index 2") != std::string::npos);
  }
  // Real files against numpy: one with NaN voxels, one scaled 4-D series (volume 3).
  const auto nan_real = hdssl::test::nibabel_data("resampled_anat_moved.nii");
  const auto scaled = hdssl::test::nibabel_data("functional.nii");
  if (hdssl::test::have_nibabel() && fs::exists(nan_real) && fs::exists(scaled)) {
    const char* script = R"PY(
import sys, json
import numpy as np
import nibabel as nib
out = []
for arg in sys.argv[1:]:
    path, vol = arg.rsplit('@', 1)
    d = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    if d.ndim == 4:
        d = d[..., int(vol)]
    d = d.astype(np.float32).astype(np.float64)   # the tool summarises float32 values
    f = d[np.isfinite(d)]
    out.append(dict(min=f.min(), max=f.max(), mean=f.mean(), non_finite=int(d.size - f.size),
                    p=list(np.percentile(f, [0.5, 1, 50, 99, 99.5]))))
print(json.dumps(out))
)PY";
    const auto ref = hdssl::test::run_python(tmp, script, {nan_real.string() + "@0", scaled.string() + "@3"});
    const Run a = run_inspect(tmp, {"--json", nan_real.string()});
    const Run b = run_inspect(tmp, {"--json", "--volume", "3", scaled.string()});
    REQUIRE(a.status == 0);
    REQUIRE(b.status == 0);
    const nlohmann::json got[2] = {nlohmann::json::parse(a.out)[0], nlohmann::json::parse(b.out)[0]};
    for (int f = 0; f < 2; ++f) {
      CAPTURE(f);
      CHECK(got[f]["non_finite"].get<int64_t>() == ref[f]["non_finite"].get<int64_t>());
      CHECK(got[f]["min"].get<double>() == doctest::Approx(ref[f]["min"].get<double>()).epsilon(1e-12));
      CHECK(got[f]["max"].get<double>() == doctest::Approx(ref[f]["max"].get<double>()).epsilon(1e-12));
      CHECK(got[f]["mean"].get<double>() == doctest::Approx(ref[f]["mean"].get<double>()).epsilon(1e-12));
      const char* keys[5] = {"0.5", "1", "50", "99", "99.5"};
      for (int k = 0; k < 5; ++k) CHECK(got[f]["percentiles"][keys[k]].get<double>() == doctest::Approx(ref[f]["p"][k].get<double>()).epsilon(1e-9));
    }
    CHECK(got[0]["non_finite"].get<int64_t>() > 0);
  }

  r = run_inspect(tmp, {"--help"});
  CHECK(r.status == 0);
  for (const char* opt : {"--json", "--volume", "--threads", "--percentiles", "non-finite", "Exit status"})
    CHECK(r.out.find(opt) != std::string::npos);
}

TEST_CASE("hdssl-inspect: each damaged file gives status 2 and one stderr line; the other files are still reported") {
  if (!have_inspect()) {
    MESSAGE("hdssl-inspect not built; skipped");
    return;
  }
  hdssl::test::TempDir tmp;
  torch::manual_seed(5);
  const torch::Tensor data = torch::randint(-30000, 30000, {11, 9, 8}, torch::kInt16);
  hdssl::io::NiftiWriteOptions w;
  w.datatype = 4;
  hdssl::io::write_nifti(tmp / "valid1.nii", data, Eigen::Matrix4d::Identity(), w);
  w.nifti_version = 2;
  hdssl::io::write_nifti(tmp / "valid2.nii", data, Eigen::Matrix4d::Identity(), w);
  const auto cases = hdssl::test::make_corrupt_files(tmp.path, hdssl::test::read_file_bytes(tmp / "valid1.nii"),
                                                     hdssl::test::read_file_bytes(tmp / "valid2.nii"));
  const std::string valid = (tmp / "valid1.nii").string();
  const std::string valid2 = (tmp / "valid2.nii").string();
  // Each start of the driver costs LibTorch's start-up (about a second), so every damaged file goes
  // through one run, each between two valid files; a few also run alone for their exit status.
  std::vector<std::string> args = {valid};
  for (const auto& c : cases) {
    args.push_back(c.path.string());
    args.push_back(valid2);
  }
  const Run all = run_inspect(tmp, args);
  CHECK(all.status == 2);
  std::vector<std::string> err_lines;
  {
    std::istringstream in(all.err);
    for (std::string line; std::getline(in, line);) err_lines.push_back(line);
  }
  REQUIRE(err_lines.size() == cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(cases[i].name);
    CAPTURE(err_lines[i]);
    CHECK(err_lines[i].find(cases[i].path.string() + ":") != std::string::npos);
    CHECK(all.out.find(cases[i].path.string() + "\n") == std::string::npos);
  }
  // every valid file was still reported: 1 + one per damaged file
  size_t reports = 0;
  for (size_t pos = all.out.find("non-finite voxels:"); pos != std::string::npos; pos = all.out.find("non-finite voxels:", pos + 1)) ++reports;
  CHECK(reports == cases.size() + 1);

  for (size_t i = 0; i < cases.size(); i += 7) {
    CAPTURE(cases[i].name);
    const Run r = run_inspect(tmp, {cases[i].path.string(), valid});
    CHECK(r.status == 2);
    CHECK(count_lines(r.err) == 1);
    CHECK(r.out.find(valid) != std::string::npos);
  }
  // --json still parses with a refused file in it, which appears with its error.
  const Run r = run_inspect(tmp, {"--json", valid, cases.front().path.string()});
  CHECK(r.status == 2);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j.size() == 2);
  CHECK(j[0].contains("affine"));
  CHECK(j[1].contains("error"));
}
