// The reader's rules on unusual headers, each case against nibabel: where hdssl reads a file, nibabel
// reads the same affine and data; where hdssl refuses, the reason names the field. Files are built at
// test time by editing the header fields of a valid file (NIfTI-1 and NIfTI-2 layouts).
#include <doctest/doctest.h>
#include <hdssl/io/nifti.hpp>
#include <nlohmann/json.hpp>

#include "../test_support.hpp"
#include "io_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using hdssl::test::Bytes;
using hdssl::test::put;

namespace {

// nibabel's verdict per file: the best affine and checksums of the data, or its refusal.
const char* kVerdictScript = R"PY(
import sys, json, logging
import numpy as np
import nibabel as nib
logging.disable(logging.CRITICAL)
out = []
for path in sys.argv[1:]:
    try:
        img = nib.load(path)
        d = np.asarray(img.dataobj, dtype=np.float64)
        i, j, k = np.meshgrid(*[np.arange(n) for n in d.shape[:3]], indexing='ij')
        w = ((i * 31 + j * 17 + k * 7) % 101) + 1
        a = img.affine
        out.append(dict(file=path, read=True, affine=[[float(x) if np.isfinite(x) else None for x in r] for r in a],
                        finite=bool(np.isfinite(a).all()), sum=float(np.nansum(d)), wsum=float(np.nansum(d * w))))
    except Exception as e:
        out.append(dict(file=path, read=False, error=str(e)))
print(json.dumps(out))
)PY";

struct Case {
  std::string name;
  fs::path path;
  bool refuse;                     ///< hdssl must refuse (else: read exactly what nibabel reads)
  std::vector<std::string> words;  ///< words of the refusal
};

double weighted_sum(const torch::Tensor& t) {
  const auto d = t.to(torch::kFloat64);
  const auto i = torch::arange(d.size(0), torch::kFloat64).view({-1, 1, 1});
  const auto j = torch::arange(d.size(1), torch::kFloat64).view({1, -1, 1});
  const auto k = torch::arange(d.size(2), torch::kFloat64).view({1, 1, -1});
  return (d * (torch::fmod(i * 31 + j * 17 + k * 7, 101) + 1)).sum().item<double>();
}

// NIfTI-1 field offsets (bytes) and their NIfTI-2 twins.
struct Layout {
  size_t pixdim, vox_offset, qform_code, sform_code, quatern_b, srow_x;
  bool wide;  // NIfTI-2: int32 codes, double fields, int64 offset
};
constexpr Layout kN1{76, 108, 252, 254, 256, 280, false};
constexpr Layout kN2{104, 168, 344, 348, 352, 400, true};

void put_code(Bytes& b, const Layout& l, size_t at, int v) {
  if (l.wide) put<int32_t>(b, at, v); else put<int16_t>(b, at, static_cast<int16_t>(v));
}
void put_real(Bytes& b, const Layout& l, size_t at, double v) {
  if (l.wide) put<double>(b, at, v); else put<float>(b, at, static_cast<float>(v));
}
/// A rotation about z by 30 degrees as a quaternion (b, c, d) with qfac +1, voxel 1.5 x 2 x 2.5, offsets.
void put_qform(Bytes& b, const Layout& l) {
  const double half = 15.0 * M_PI / 180.0;
  const double q[6] = {0.0, 0.0, std::sin(half), -40.0, 12.5, 7.0};
  for (int i = 0; i < 6; ++i) put_real(b, l, l.quatern_b + (l.wide ? 8 : 4) * static_cast<size_t>(i), q[i]);
  put_real(b, l, l.pixdim + (l.wide ? 8 : 4) * 1, 1.5);
  put_real(b, l, l.pixdim + (l.wide ? 8 : 4) * 2, 2.0);
  put_real(b, l, l.pixdim + (l.wide ? 8 : 4) * 3, 2.5);
  put_real(b, l, l.pixdim, 1.0);
}
void put_pixdim(Bytes& b, const Layout& l, int i, double v) { put_real(b, l, l.pixdim + (l.wide ? 8 : 4) * static_cast<size_t>(i), v); }

}  // namespace

TEST_CASE("unusual headers: hdssl reads what nibabel reads, or refuses naming the field") {
  REQUIRE_MESSAGE(hdssl::test::have_nibabel(), "python3-nibabel is part of the set-up (scripts/bootstrap.sh)");
  hdssl::test::TempDir tmp;
  torch::manual_seed(11);
  const torch::Tensor data = torch::randint(-3000, 3000, {9, 7, 6}, torch::kInt16);
  Eigen::Matrix4d affine;
  affine << -1.5, 0, 0, 60, 0, 2, 0, -70, 0, 0, 2.5, -30, 0, 0, 0, 1;
  hdssl::io::NiftiWriteOptions w;
  w.datatype = 4;
  hdssl::io::write_nifti(tmp / "v1.nii", data, affine, w);
  w.nifti_version = 2;
  hdssl::io::write_nifti(tmp / "v2.nii", data, affine, w);
  const Bytes v1 = hdssl::test::read_file_bytes(tmp / "v1.nii"), v2 = hdssl::test::read_file_bytes(tmp / "v2.nii");

  std::vector<Case> cases;
  auto add = [&](const std::string& name, const Bytes& b, bool refuse, std::vector<std::string> words = {}) {
    const fs::path p = tmp / (name + ".nii");
    hdssl::test::write_file_bytes(p, b);
    cases.push_back({name, p, refuse, std::move(words)});
  };
  for (const auto* lp : {&kN1, &kN2}) {
    const Layout& l = *lp;
    const Bytes& v = l.wide ? v2 : v1;
    const std::string n = l.wide ? "n2_" : "n1_";
    const int64_t header = l.wide ? 540 : 348;
    auto qform_only = [&] {
      Bytes b = v;
      put_code(b, l, l.sform_code, 0);
      put_code(b, l, l.qform_code, 1);
      put_qform(b, l);
      return b;
    };
    add(n + "qform_only", qform_only(), false);
    {  // the data would start inside the extension flag: read shifted by nifticlib's rules
      Bytes b = v;
      if (l.wide) put<int64_t>(b, l.vox_offset, header); else put<float>(b, l.vox_offset, static_cast<float>(header));
      add(n + "vox_offset_in_extension_flag", b, true, {"vox_offset", "extension flag"});
    }
    {
      Bytes b = qform_only();
      put_pixdim(b, l, 1, -1.5);
      put_pixdim(b, l, 3, -2.5);
      add(n + "negative_pixdim_qform", b, false);
    }
    {
      Bytes b = v;
      put_code(b, l, l.sform_code, 0);
      put_code(b, l, l.qform_code, 0);
      put_pixdim(b, l, 2, -2.0);
      add(n + "negative_pixdim_no_codes", b, false);
    }
    for (const double qfac : {-1.0, -2.0, 0.0, 3.0}) {
      Bytes b = qform_only();
      put_pixdim(b, l, 0, qfac);
      add(n + "qfac_" + std::to_string(static_cast<int>(qfac)), b, false);
    }
    for (int i = 0; i < 6; ++i) {
      static const char* names[6] = {"quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"};
      Bytes b = qform_only();
      put_real(b, l, l.quatern_b + (l.wide ? 8 : 4) * static_cast<size_t>(i),
               i % 2 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN());
      add(n + "nonfinite_" + names[i], b, true, {names[i]});
    }
    {  // a NaN quaternion the sform makes irrelevant
      Bytes b = v;
      put_code(b, l, l.qform_code, 1);
      put_code(b, l, l.sform_code, 2);
      put_real(b, l, l.quatern_b, std::numeric_limits<double>::quiet_NaN());
      add(n + "nan_quaternion_under_sform", b, false);
    }
    {
      Bytes b = qform_only();
      for (int i = 0; i < 3; ++i) put_real(b, l, l.quatern_b + (l.wide ? 8 : 4) * static_cast<size_t>(i), 0.8);
      add(n + "quaternion_not_a_rotation", b, true, {"quaternion", "rotation"});
    }
    {  // codes outside 0..5 are ignored: an sform coded 9 gives way to the qform, a qform coded 7 to pixdim
      Bytes b = qform_only();
      put_code(b, l, l.sform_code, 9);
      add(n + "sform_code_9", b, false);
      Bytes c = qform_only();
      put_code(c, l, l.qform_code, 7);
      add(n + "qform_code_7", c, false);
      Bytes d = qform_only();
      put_code(d, l, l.sform_code, -3);
      add(n + "sform_code_negative", d, false);
    }
    {  // a badly scaled but regular sform: axes of 1e-4, 1 and 1e4 mm
      Bytes b = v;
      put_code(b, l, l.sform_code, 2);
      const double rows[3][4] = {{-1e-4, 0, 0, 1}, {0, 1, 0, 2}, {0, 0, 1e4, 3}};
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 4; ++c)
          put_real(b, l, l.srow_x + (l.wide ? 32 : 16) * static_cast<size_t>(r) + (l.wide ? 8 : 4) * static_cast<size_t>(c), rows[r][c]);
      add(n + "badly_scaled_sform", b, false);
      Bytes s = b;  // voxel axes 0 and 1 equal: singular
      const double same[3][4] = {{-1e-4, -1e-4, 0, 1}, {0, 0, 0, 2}, {0, 0, 1e4, 3}};
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 4; ++c)
          put_real(s, l, l.srow_x + (l.wide ? 32 : 16) * static_cast<size_t>(r) + (l.wide ? 8 : 4) * static_cast<size_t>(c), same[r][c]);
      add(n + "collinear_sform", s, true, {"collinear"});
    }
  }

  std::vector<std::string> paths;
  for (const auto& c : cases) paths.push_back(c.path.string());
  const auto verdicts = hdssl::test::run_python(tmp, kVerdictScript, paths);
  REQUIRE(verdicts.size() == cases.size());
  hdssl::io::NiftiReadOptions r;
  r.reorient = false;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const auto& nb = verdicts[i];
    CAPTURE(c.name);
    CAPTURE(nb.dump());
    std::string message;
    std::optional<hdssl::Volume> got;
    try {
      got = hdssl::io::read_nifti(c.path, r);
    } catch (const hdssl::IoError& e) {
      message = e.what();
    }
    CAPTURE(message);
    if (c.refuse) {
      CHECK_FALSE(got.has_value());
      CHECK(message.find(c.path.string()) != std::string::npos);
      for (const auto& word : c.words) CHECK(message.find(word) != std::string::npos);
      // Where nibabel reads the file anyway, what it reads is not a usable geometry or data.
      if (nb.at("read").get<bool>() && nb.at("finite").get<bool>()) CHECK(c.name.find("vox_offset") == std::string::npos);
      continue;
    }
    REQUIRE(got.has_value());
    REQUIRE(nb.at("read").get<bool>());
    REQUIRE(nb.at("finite").get<bool>());
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b) {
        const double want = nb["affine"][a][b].get<double>();
        CHECK(std::abs(got->affine(a, b) - want) <= 1e-5 * (1.0 + std::abs(want)));
      }
    CHECK(got->data.to(torch::kFloat64).sum().item<double>() == doctest::Approx(nb["sum"].get<double>()));
    CHECK(weighted_sum(got->data) == doctest::Approx(nb["wsum"].get<double>()));
  }
}

TEST_CASE("float64 voxels beyond float32's range: refused as float32 with the reason, exact as float64") {
  REQUIRE(hdssl::test::have_nibabel());
  hdssl::test::TempDir tmp;
  torch::Tensor d = torch::arange(4 * 3 * 2, torch::kFloat64).reshape({4, 3, 2});
  d.index_put_({1, 1, 1}, 1e39);
  d.index_put_({2, 0, 1}, -5e300);
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();
  hdssl::io::NiftiWriteOptions w;
  w.datatype = hdssl::io::datatype_from_name("float64");
  hdssl::io::write_nifti(tmp / "big.nii", d, affine, w);
  hdssl::io::NiftiReadOptions r;
  r.reorient = false;
  try {
    hdssl::io::read_nifti(tmp / "big.nii", r);
    FAIL("float64 values beyond float32 loaded as float32");
  } catch (const hdssl::IoError& e) {
    const std::string m = e.what();
    CHECK(m.find("float32") != std::string::npos);
    CHECK(m.find("5e+300") != std::string::npos);
  }
  r.load_as = hdssl::io::LoadType::Native;
  const auto v = hdssl::io::read_nifti(tmp / "big.nii", r);
  CHECK(torch::equal(v.data, d));
  const auto nb = hdssl::test::run_python(tmp, kVerdictScript, {(tmp / "big.nii").string()});
  CHECK(nb[0]["wsum"].get<double>() == doctest::Approx(weighted_sum(d)));
}
