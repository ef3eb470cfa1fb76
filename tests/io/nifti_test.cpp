// NIfTI reading and writing: real files checked against nibabel, exact round trips, and refusal of
// every kind of damaged file.
#include <doctest/doctest.h>

#include <hdssl/core/orientation.hpp>
#include <hdssl/io/nifti.hpp>

#include <nlohmann/json.hpp>

#include "../test_support.hpp"
#include "io_test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using hdssl::Volume;
using hdssl::io::LoadType;
using hdssl::io::NiftiReadOptions;
using hdssl::io::NiftiWriteOptions;

namespace {
/// Write options with a datatype code and NIfTI version, the rest default.
hdssl::io::NiftiWriteOptions write_options(int datatype, int version = 1) {
  hdssl::io::NiftiWriteOptions o;
  o.datatype = datatype;
  o.nifti_version = version;
  return o;
}
}  // namespace

namespace {

using hdssl::test::have_nibabel;
using hdssl::test::run_python;

// nibabel's view of each file: shape, best affine, and checksums of volume `vol` in file order and
// in closest-canonical order. The weighted sum pins the axis order, not only the values.
const char* kNibabelScript = R"PY(
import sys, json
import numpy as np
import nibabel as nib

def checks(img, vol):
    d = np.asarray(img.dataobj, dtype=np.float64)
    if d.ndim == 4:
        d = d[..., vol]
    i, j, k = np.meshgrid(np.arange(d.shape[0]), np.arange(d.shape[1]), np.arange(d.shape[2]), indexing='ij')
    w = ((i * 31 + j * 17 + k * 7) % 101) + 1
    return float(np.nansum(d)), float(np.nansum(d * w)), [int(s) for s in d.shape], int((~np.isfinite(d)).sum())

out = []
for arg in sys.argv[1:]:
    path, vol = arg.rsplit('@', 1)
    vol = int(vol)
    img = nib.load(path)
    s, ws, shape, nonfinite = checks(img, vol)
    can = nib.as_closest_canonical(img)
    cs, cws, cshape, _ = checks(can, vol)
    out.append(dict(file=path, shape=shape, affine=img.affine.tolist(), sum=s, wsum=ws, non_finite=nonfinite,
                    codes=''.join(nib.aff2axcodes(img.affine)),
                    canon_shape=cshape, canon_affine=can.affine.tolist(), canon_wsum=cws, canon_sum=cs))
print(json.dumps(out))
)PY";

double weighted_sum(const torch::Tensor& t) {
  const auto d = t.to(torch::kFloat64);
  const auto i = torch::arange(d.size(0), torch::kFloat64).view({-1, 1, 1});
  const auto j = torch::arange(d.size(1), torch::kFloat64).view({1, -1, 1});
  const auto k = torch::arange(d.size(2), torch::kFloat64).view({1, 1, -1});
  const auto w = torch::fmod(i * 31 + j * 17 + k * 7, 101) + 1;
  return torch::nansum(d * w).item<double>();
}

void check_affine(const Eigen::Matrix4d& a, const nlohmann::json& b, double tol) {
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      const double want = b[r][c].get<double>();
      CHECK(std::abs(a(r, c) - want) <= tol * (1.0 + std::abs(want)));
    }
}

/// Equal shapes and values, NaN matching NaN (real scans can hold NaN voxels).
bool same_values(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (!a.is_floating_point()) return torch::equal(a, b);
  return ((a == b) | (torch::isnan(a) & torch::isnan(b))).all().item<bool>();
}

bool approx_rel(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::max(std::abs(a), std::abs(b))); }

/// A small deterministic test image with distinct values (int16, 7 x 6 x 5).
torch::Tensor test_image(torch::ScalarType st = torch::kInt16) {
  auto t = torch::arange(7 * 6 * 5, torch::kInt64).reshape({7, 6, 5});
  t = (t * 37 + 11).remainder(1000) - 300;  // a permutation-like pattern with negative values
  return t.to(st);
}

Eigen::Matrix4d oblique_affine() {
  // Entries exactly representable in float32, so NIfTI-1's float srow keeps them bit for bit.
  Eigen::Matrix4d a;
  a << -0.75, 0.125, 0.0, 91.5,  //
      0.25, 1.5, -0.0625, -126.25,  //
      0.0, 0.375, 2.5, -72.0,  //
      0, 0, 0, 1;
  return a;
}

}  // namespace

TEST_CASE("real files: Colin27 T1 and the AAL atlas from mricron-data") {
  const auto ch2 = hdssl::test::mricron("ch2.nii.gz");
  const auto aal = hdssl::test::mricron("aal.nii.gz");
  // Installed by scripts/bootstrap.sh: absent data is a failure, not a pass.
  REQUIRE_MESSAGE(fs::exists(ch2), "mricron-data is not installed (" << ch2 << ")");
  REQUIRE_MESSAGE(fs::exists(aal), "mricron-data is not installed (" << aal << ")");
  const auto h = hdssl::io::read_nifti_header(ch2);
  CHECK(h.version == 1);
  CHECK(h.gzipped);
  CHECK(h.nx == 181);
  CHECK(h.ny == 217);
  CHECK(h.nz == 181);
  const Volume v = hdssl::io::read_nifti(ch2);
  CHECK((v.data.scalar_type() == torch::kFloat32));
  CHECK((v.shape() == std::array<int64_t, 3>{{181, 217, 181}}));
  CHECK(hdssl::axis_codes(v.affine) == "RAS");
  for (int d = 0; d < 3; ++d) CHECK(v.spacing()[d] == doctest::Approx(1.0));
  CHECK(v.meta.non_finite_count == 0);
  CHECK(v.data.min().item<float>() >= 0.0f);
  CHECK(v.data.max().item<float>() <= 255.0f);

  NiftiReadOptions labels;
  labels.load_as = LoadType::Int64;
  const Volume a = hdssl::io::read_nifti(aal, labels);
  CHECK((a.data.scalar_type() == torch::kInt64));
  CHECK((a.shape() == v.shape()));
  CHECK(a.affine.isApprox(v.affine));
  CHECK(std::get<0>(torch::_unique(a.data)).numel() > 50);  // AAL has 116 regions + background

  NiftiReadOptions native;
  native.load_as = LoadType::Native;
  CHECK((hdssl::io::read_nifti(ch2, native).data.scalar_type() == torch::kUInt8));
}

TEST_CASE("real files agree with nibabel: affine, shape, data, closest canonical orientation") {
  const auto dir = hdssl::test::nibabel_data("");
  REQUIRE_MESSAGE(have_nibabel(), "python3-nibabel is not installed");
  REQUIRE_MESSAGE(fs::exists(hdssl::test::nibabel_data("example4d.nii.gz")), "nibabel's test data is missing");
  struct Item {
    fs::path path;
    int64_t volume;
  };
  std::vector<Item> items = {
      {hdssl::test::nibabel_data("anatomical.nii"), 0},          // big-endian int16, LAS
      {hdssl::test::nibabel_data("example4d.nii.gz"), 0},        // 4-D, oblique sform
      {hdssl::test::nibabel_data("example4d.nii.gz"), 1},
      {hdssl::test::nibabel_data("example_nifti2.nii.gz"), 1},   // NIfTI-2
      {hdssl::test::nibabel_data("functional.nii"), 0},          // scl_slope / scl_inter
      {hdssl::test::nibabel_data("functional.nii"), 7},
      {hdssl::test::nibabel_data("standard.nii.gz"), 0},         // sform only
      {hdssl::test::nibabel_data("reoriented_anat_moved.nii"), 0},  // big-endian float32
      {hdssl::test::nibabel_data("resampled_anat_moved.nii"), 0},
  };
  if (fs::exists(hdssl::test::mricron("ch2.nii.gz"))) items.push_back({hdssl::test::mricron("ch2.nii.gz"), 0});
  std::vector<std::string> args;
  for (const auto& it : items) args.push_back(it.path.string() + "@" + std::to_string(it.volume));
  hdssl::test::TempDir tmp;
  const auto ref = run_python(tmp, kNibabelScript, args);
  REQUIRE(ref.size() == items.size());

  for (size_t n = 0; n < items.size(); ++n) {
    const auto& r = ref[n];
    CAPTURE(items[n].path.string());
    CAPTURE(items[n].volume);
    NiftiReadOptions file_order;
    file_order.reorient = false;
    file_order.volume = items[n].volume;
    const Volume v = hdssl::io::read_nifti(items[n].path, file_order);
    CHECK(v.data.size(0) == r["shape"][0].get<int64_t>());
    CHECK(v.data.size(1) == r["shape"][1].get<int64_t>());
    CHECK(v.data.size(2) == r["shape"][2].get<int64_t>());
    check_affine(v.affine, r["affine"], 1e-5);
    CHECK(hdssl::axis_codes(v.affine) == r["codes"].get<std::string>());
    const double sum = torch::nansum(v.data.to(torch::kFloat64)).item<double>();
    CHECK(v.meta.non_finite_count == r["non_finite"].get<int64_t>());
    CHECK(approx_rel(sum, r["sum"].get<double>(), 1e-6));
    CHECK(approx_rel(weighted_sum(v.data), r["wsum"].get<double>(), 1e-6));

    NiftiReadOptions canonical = file_order;
    canonical.reorient = true;
    const Volume c = hdssl::io::read_nifti(items[n].path, canonical);
    CHECK(c.data.size(0) == r["canon_shape"][0].get<int64_t>());
    CHECK(c.data.size(1) == r["canon_shape"][1].get<int64_t>());
    CHECK(c.data.size(2) == r["canon_shape"][2].get<int64_t>());
    check_affine(c.affine, r["canon_affine"], 1e-5);
    CHECK(approx_rel(weighted_sum(c.data), r["canon_wsum"].get<double>(), 1e-6));

    // And back: the file's own voxel order and affine, exactly.
    const Volume back = hdssl::to_source_orientation(c);
    CHECK(same_values(back.data, v.data));
    CHECK(back.affine == v.affine);
  }
}

TEST_CASE("4-D volume selection and the volume index check") {
  const auto f = hdssl::test::nibabel_data("example4d.nii.gz");
  REQUIRE_MESSAGE(fs::exists(f), "nibabel's test data is missing (" << f << ")");
  NiftiReadOptions o;
  o.volume = 1;
  const Volume v1 = hdssl::io::read_nifti(f, o);
  CHECK(v1.meta.num_volumes == 2);
  CHECK(v1.meta.volume_index == 1);
  o.volume = 2;
  CHECK_THROWS_AS(hdssl::io::read_nifti(f, o), hdssl::ConfigError);
  o.volume = -1;
  CHECK_THROWS_AS(hdssl::io::read_nifti(f, o), hdssl::ConfigError);
  try {
    o.volume = 5;
    hdssl::io::read_nifti(f, o);
  } catch (const hdssl::ConfigError& e) {
    CHECK(std::string(e.what()).find(f.string()) != std::string::npos);
    CHECK(std::string(e.what()).find("volume index 5") != std::string::npos);
  }
  // A 6-D CIFTI file is refused with a reason, not misread.
  const auto cifti = hdssl::test::nibabel_data("row_major.dconn.nii");
  if (fs::exists(cifti)) CHECK_THROWS_AS(hdssl::io::read_nifti(cifti), hdssl::IoError);
}

TEST_CASE("round trip is exact for every datatype, NIfTI-1 and -2, .nii and .nii.gz") {
  hdssl::test::TempDir tmp;
  struct Dt {
    const char* name;
    torch::ScalarType holder;  // tensor type that holds the full range
    double lo, hi;
  };
  const std::vector<Dt> dts = {
      {"uint8", torch::kUInt8, 0, 255},          {"int8", torch::kInt8, -128, 127},
      {"int16", torch::kInt16, -32768, 32767},   {"uint16", torch::kInt32, 0, 65535},
      {"int32", torch::kInt32, -2147483648.0, 2147483647.0}, {"uint32", torch::kInt64, 0, 4294967295.0},
      {"int64", torch::kInt64, -4e18, 4e18},     {"float32", torch::kFloat32, -1e30, 1e30},
      {"float64", torch::kFloat64, -1e300, 1e300},
  };
  torch::manual_seed(7);
  for (const auto& dt : dts) {
    // Values spread over the whole range, including both ends.
    torch::Tensor data;
    if (dt.holder == torch::kFloat32 || dt.holder == torch::kFloat64) {
      data = torch::randn({9, 8, 7}, torch::kFloat64) * 1000.0;
      data.index_put_({0, 0, 0}, dt.lo);
      data.index_put_({8, 7, 6}, dt.hi);
      data.index_put_({1, 0, 0}, 1e-20);
      data = data.to(dt.holder);
    } else {
      auto u = torch::rand({9, 8, 7}, torch::kFloat64);
      data = (u * (dt.hi - dt.lo) + dt.lo).floor().clamp(dt.lo, dt.hi).to(torch::kInt64);
      data.index_put_({0, 0, 0}, static_cast<int64_t>(dt.lo));
      data.index_put_({8, 7, 6}, static_cast<int64_t>(dt.hi));
      data = data.to(dt.holder);
    }
    for (int version : {1, 2})
      for (const char* ext : {".nii", ".nii.gz"}) {
        CAPTURE(dt.name);
        CAPTURE(version);
        CAPTURE(ext);
        const auto path = tmp / (std::string("rt_") + dt.name + "_v" + std::to_string(version) + ext);
        NiftiWriteOptions w;
        w.datatype = hdssl::io::datatype_from_name(dt.name);
        w.nifti_version = version;
        hdssl::io::write_nifti(path, data, oblique_affine(), w);
        const auto h = hdssl::io::read_nifti_header(path);
        CHECK(h.version == version);
        CHECK(h.datatype == w.datatype);
        CHECK(h.qform_code == 1);
        CHECK(h.sform_code == 1);
        NiftiReadOptions r;
        r.reorient = false;
        r.load_as = LoadType::Native;
        const Volume v = hdssl::io::read_nifti(path, r);
        CHECK(v.affine == oblique_affine());
        CHECK((v.data.sizes() == data.sizes()));
        CHECK(torch::equal(v.data.to(torch::kFloat64), data.to(torch::kFloat64)));
        if (dt.holder == torch::kInt64) CHECK(torch::equal(v.data.to(torch::kInt64), data.to(torch::kInt64)));
      }
  }
}

TEST_CASE("NIfTI-2 keeps a double-precision affine bit for bit; NIfTI-1 rounds it to float32") {
  hdssl::test::TempDir tmp;
  Eigen::Matrix4d a = oblique_affine();
  a(0, 3) = 0.1;  // not representable in float32
  a(1, 1) = 1.0 / 3.0;
  NiftiWriteOptions w;
  w.nifti_version = 2;
  hdssl::io::write_nifti(tmp / "a.nii", test_image(), a, w);
  NiftiReadOptions r;
  r.reorient = false;
  CHECK(hdssl::io::read_nifti(tmp / "a.nii", r).affine == a);
  w.nifti_version = 1;
  hdssl::io::write_nifti(tmp / "b.nii", test_image(), a, w);
  const Eigen::Matrix4d b = hdssl::io::read_nifti(tmp / "b.nii", r).affine;
  CHECK(b(0, 3) == static_cast<double>(0.1f));
  CHECK(b(1, 1) == static_cast<double>(1.0f / 3.0f));
}

TEST_CASE("scl_slope / scl_inter: stored integers are scaled at load, exactly") {
  hdssl::test::TempDir tmp;
  // values = 10 + 0.5 * k for integer k: exact in float32 and exact after (v - 10) / 0.5.
  const torch::Tensor k = test_image(torch::kInt64);
  const torch::Tensor values = k.to(torch::kFloat64) * 0.5 + 10.0;
  NiftiWriteOptions w;
  w.datatype = hdssl::io::datatype_from_name("int16");
  w.scl_slope = 0.5;
  w.scl_inter = 10.0;
  for (const char* name : {"s.nii", "s.nii.gz"}) {
    hdssl::io::write_nifti(tmp / name, values, oblique_affine(), w);
    const auto h = hdssl::io::read_nifti_header(tmp / name);
    CHECK(h.scaled);
    CHECK(h.scl_slope == 0.5);
    CHECK(h.scl_inter == 10.0);
    NiftiReadOptions r;
    r.reorient = false;
    const Volume v = hdssl::io::read_nifti(tmp / name, r);
    CHECK((v.data.scalar_type() == torch::kFloat32));
    CHECK(torch::equal(v.data.to(torch::kFloat64), values));
    // The stored integers are the k's: read the raw bytes independently of the reader.
    if (std::string(name) == "s.nii") {
      const auto bytes = hdssl::test::read_file_bytes(tmp / name);
      int16_t first = 0, second = 0;
      std::memcpy(&first, bytes.data() + 352, 2);
      std::memcpy(&second, bytes.data() + 354, 2);  // x = 1, y = 0, z = 0: x is fastest on disk
      CHECK(first == k[0][0][0].item<int64_t>());
      CHECK(second == k[1][0][0].item<int64_t>());
    }
  }
  // A slope of 0 in the file means no scaling.
  {
    hdssl::io::write_nifti(tmp / "z.nii", test_image(), oblique_affine(), write_options(4));
    auto bytes = hdssl::test::read_file_bytes(tmp / "z.nii");
    hdssl::test::put<float>(bytes, 112, 0.0f);
    hdssl::test::put<float>(bytes, 116, 55.0f);
    hdssl::test::write_file_bytes(tmp / "z.nii", bytes);
    NiftiReadOptions r;
    r.reorient = false;
    CHECK(torch::equal(hdssl::io::read_nifti(tmp / "z.nii", r).data, test_image().to(torch::kFloat32)));
  }
  // Integer labels refuse non-integer scaled values rather than truncating them.
  NiftiReadOptions labels;
  labels.load_as = LoadType::Int64;
  CHECK_THROWS_AS(hdssl::io::read_nifti(tmp / "s.nii", labels), hdssl::DataError);
}

TEST_CASE("non-finite voxels load and are counted") {
  hdssl::test::TempDir tmp;
  torch::Tensor d = test_image(torch::kFloat32);
  d.index_put_({1, 2, 3}, std::numeric_limits<float>::quiet_NaN());
  d.index_put_({4, 0, 1}, std::numeric_limits<float>::infinity());
  d.index_put_({6, 5, 4}, -std::numeric_limits<float>::infinity());
  hdssl::io::write_nifti(tmp / "nan.nii.gz", d, oblique_affine());
  const Volume v = hdssl::io::read_nifti(tmp / "nan.nii.gz");
  CHECK(v.meta.non_finite_count == 3);
  CHECK(torch::isnan(v.data).sum().item<int64_t>() == 1);
  // Values that cannot be stored in an integer type are refused at write time.
  NiftiWriteOptions w;
  w.datatype = hdssl::io::datatype_from_name("int16");
  CHECK_THROWS_AS(hdssl::io::write_nifti(tmp / "nan_int.nii", d, oblique_affine(), w), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::io::write_nifti(tmp / "big.nii", test_image(torch::kInt32) * 1000, oblique_affine(), w), hdssl::DataError);
  CHECK_FALSE(fs::exists(tmp / "nan_int.nii"));
}

TEST_CASE("4-D round trip and writing back into the source orientation") {
  hdssl::test::TempDir tmp;
  const torch::Tensor series = torch::stack({test_image(), test_image() * 2, test_image() * 3}, 3);
  hdssl::io::write_nifti(tmp / "s4.nii.gz", series, oblique_affine(), write_options(4, 2));
  NiftiReadOptions r;
  r.reorient = false;
  r.volume = 2;
  r.load_as = LoadType::Native;
  const Volume v = hdssl::io::read_nifti(tmp / "s4.nii.gz", r);
  CHECK(v.meta.num_volumes == 3);
  CHECK(torch::equal(v.data, test_image() * 3));

  // LPS file -> read as RAS -> written back with to_source_orientation: the same file content.
  Eigen::Matrix4d lps = Eigen::Matrix4d::Identity();
  lps.diagonal() << -1.5, -2.0, 3.0, 1.0;
  lps.block<3, 1>(0, 3) << 100.0, 50.0, -20.0;
  hdssl::io::write_nifti(tmp / "lps.nii", test_image(), lps, write_options(4));
  const Volume ras = hdssl::io::read_nifti(tmp / "lps.nii");
  CHECK(hdssl::axis_codes(ras.affine) == "RAS");
  CHECK(ras.meta.source_affine == lps);
  NiftiWriteOptions back;
  back.datatype = 4;
  back.to_source_orientation = true;
  hdssl::io::write_nifti(tmp / "back.nii", ras, back);
  r.volume = 0;
  const Volume b = hdssl::io::read_nifti(tmp / "back.nii", r);
  CHECK(b.affine == lps);
  CHECK(torch::equal(b.data, test_image()));
  CHECK(hdssl::test::read_file_bytes(tmp / "back.nii") == hdssl::test::read_file_bytes(tmp / "lps.nii"));
}

TEST_CASE("files written here read the same in nibabel") {
  REQUIRE_MESSAGE(have_nibabel(), "python3-nibabel is not installed");
  hdssl::test::TempDir tmp;
  const torch::Tensor values = test_image(torch::kInt64).to(torch::kFloat64) * 0.5 + 10.0;
  NiftiWriteOptions w;
  w.datatype = 4;
  w.scl_slope = 0.5;
  w.scl_inter = 10.0;
  hdssl::io::write_nifti(tmp / "n1.nii.gz", values, oblique_affine(), w);
  w.nifti_version = 2;
  hdssl::io::write_nifti(tmp / "n2.nii", values, oblique_affine(), w);
  const auto ref = run_python(tmp, kNibabelScript, {(tmp / "n1.nii.gz").string() + "@0", (tmp / "n2.nii").string() + "@0"});
  for (const auto& r : ref) {
    check_affine(oblique_affine(), r["affine"], 1e-12);
    CHECK(approx_rel(r["wsum"].get<double>(), weighted_sum(values), 1e-12));
  }
}

TEST_CASE("writing is atomic and reports failures") {
  hdssl::test::TempDir tmp;
  hdssl::io::write_nifti(tmp / "x.nii.gz", test_image(), oblique_affine());
  hdssl::io::write_nifti(tmp / "x.nii.gz", test_image() + 1, oblique_affine());  // replaces in place
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);  // no temporary left behind
  NiftiReadOptions r;
  r.reorient = false;
  CHECK(torch::equal(hdssl::io::read_nifti(tmp / "x.nii.gz", r).data, (test_image() + 1).to(torch::kFloat32)));
  CHECK_THROWS_AS(hdssl::io::write_nifti(tmp / "no_such_dir" / "x.nii", test_image(), oblique_affine()), hdssl::IoError);
  CHECK_THROWS_AS(hdssl::io::write_nifti(tmp / "y.nii", torch::zeros({3, 3}), oblique_affine()), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::io::datatype_from_name("complex64"), hdssl::ConfigError);
}

TEST_CASE("every damaged file is refused with an IoError naming the file and the reason") {
  hdssl::test::TempDir tmp;
  // The valid originals: an int16 image with random (poorly compressible) values in each version.
  torch::manual_seed(3);
  const torch::Tensor data = torch::randint(-30000, 30000, {11, 9, 8}, torch::kInt16);
  NiftiWriteOptions w;
  w.datatype = 4;
  hdssl::io::write_nifti(tmp / "valid1.nii", data, oblique_affine(), w);
  w.nifti_version = 2;
  hdssl::io::write_nifti(tmp / "valid2.nii", data, oblique_affine(), w);
  NiftiReadOptions r;
  r.reorient = false;
  r.load_as = LoadType::Native;
  REQUIRE(torch::equal(hdssl::io::read_nifti(tmp / "valid1.nii", r).data, data));
  REQUIRE(torch::equal(hdssl::io::read_nifti(tmp / "valid2.nii", r).data, data));

  const auto cases = hdssl::test::make_corrupt_files(tmp.path, hdssl::test::read_file_bytes(tmp / "valid1.nii"),
                                                     hdssl::test::read_file_bytes(tmp / "valid2.nii"));
  CHECK(cases.size() >= 30);
  for (const auto& c : cases) {
    CAPTURE(c.name);
    bool refused = false;
    std::string message;
    try {
      hdssl::io::read_nifti(c.path);
    } catch (const hdssl::IoError& e) {
      refused = true;
      message = e.what();
    }
    CAPTURE(message);
    CHECK(refused);
    CHECK(message.find(c.path.string()) != std::string::npos);
    for (const auto& word : c.words) CHECK(message.find(word) != std::string::npos);
    // The header-only entry point refuses whatever is visible in the header alone, and never crashes.
    try {
      hdssl::io::read_nifti_header(c.path);
    } catch (const hdssl::IoError& e) {
      CHECK(std::string(e.what()).find(c.path.string()) != std::string::npos);
    }
  }
  CHECK_THROWS_AS(hdssl::io::read_nifti(tmp / "missing.nii"), hdssl::IoError);
  CHECK_THROWS_AS(hdssl::io::read_nifti(tmp.path), hdssl::IoError);  // a folder
}

TEST_CASE("a byte-swapped (big-endian) file written by hand reads like its native twin") {
  hdssl::test::TempDir tmp;
  hdssl::io::write_nifti(tmp / "le.nii", test_image(), oblique_affine(), write_options(4));
  auto bytes = hdssl::test::read_file_bytes(tmp / "le.nii");
  // Swap the header fields we know (all 2-, 4-byte fields of NIfTI-1) and the int16 voxels.
  auto swap_at = [&](size_t off, size_t size) { std::reverse(bytes.begin() + static_cast<std::ptrdiff_t>(off), bytes.begin() + static_cast<std::ptrdiff_t>(off + size)); };
  swap_at(0, 4);                                              // sizeof_hdr
  swap_at(32, 4); swap_at(36, 2);                             // extents, session_error
  for (size_t i = 0; i < 8; ++i) swap_at(40 + 2 * i, 2);      // dim
  for (size_t off : {56, 60, 64}) swap_at(off, 4);            // intent_p*
  for (size_t off : {68, 70, 72, 74}) swap_at(off, 2);        // intent_code, datatype, bitpix, slice_start
  for (size_t i = 0; i < 8; ++i) swap_at(76 + 4 * i, 4);      // pixdim
  for (size_t off : {108, 112, 116}) swap_at(off, 4);         // vox_offset, scl_slope, scl_inter
  swap_at(120, 2);                                            // slice_end
  for (size_t off : {124, 128, 132, 136, 140, 144}) swap_at(off, 4);
  swap_at(252, 2); swap_at(254, 2);                           // qform_code, sform_code
  for (size_t i = 0; i < 18; ++i) swap_at(256 + 4 * i, 4);    // quatern, qoffset, srow
  for (size_t v = 352; v < bytes.size(); v += 2) swap_at(v, 2);
  hdssl::test::write_file_bytes(tmp / "be.nii", bytes);
  const auto h = hdssl::io::read_nifti_header(tmp / "be.nii");
  CHECK(h.byte_swapped);
  NiftiReadOptions r;
  r.reorient = false;
  const Volume a = hdssl::io::read_nifti(tmp / "le.nii", r);
  const Volume b = hdssl::io::read_nifti(tmp / "be.nii", r);
  CHECK(torch::equal(a.data, b.data));
  CHECK(a.affine == b.affine);
}

TEST_CASE("flip_in_place (the reader's reorientation) equals torch::flip on every axis and element size") {
  for (const auto dtype : {torch::kUInt8, torch::kInt16, torch::kFloat32, torch::kFloat64, torch::kInt64}) {
    const torch::Tensor src = torch::arange(5 * 4 * 3, torch::kInt64).reshape({5, 4, 3}).to(dtype);
    for (int dim = 0; dim < 3; ++dim) {
      torch::Tensor t = src.clone();
      hdssl::flip_in_place(t, dim);
      CHECK_MESSAGE(torch::equal(t, src.flip({dim})), "dtype " << dtype << ", dim " << dim);
    }
  }
}

TEST_CASE("reading with reorientation equals reading as stored then reorienting, for every flip and permutation") {
  hdssl::test::TempDir tmp;
  const torch::Tensor data = torch::rand({6, 5, 4});
  // LPI with the voxel axes permuted (i -> S, j -> L, k -> P): a permutation and flips on two axes.
  Eigen::Matrix4d affine = Eigen::Matrix4d::Zero();
  affine(2, 0) = -1.5;
  affine(0, 1) = -0.8;
  affine(1, 2) = -1.2;
  affine(3, 3) = 1.0;
  affine.block<3, 1>(0, 3) << 10, -20, 30;
  hdssl::io::write_nifti(tmp / "perm.nii", data, affine);
  NiftiReadOptions stored;
  stored.reorient = false;
  const Volume a = hdssl::io::read_nifti(tmp / "perm.nii", stored);
  const Volume expected = hdssl::as_closest_canonical(a);
  const Volume b = hdssl::io::read_nifti(tmp / "perm.nii");
  CHECK(hdssl::axis_codes(b.affine) == "RAS");
  CHECK(torch::equal(b.data, expected.data));
  CHECK(b.affine == expected.affine);
}
