// The pipeline on synthetic CT and MRI volumes whose every output is known by construction, its options
// JSON, non-finite handling, and the preprocessed-volume cache (hit, miss, damage, concurrent fills).
#include <doctest/doctest.h>

#include <hdssl/preprocess/cache.hpp>
#include <hdssl/preprocess/nifti_files.hpp>
#include <hdssl/preprocess/pipeline.hpp>

#include "../test_support.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <unistd.h>

using hdssl::Volume;
namespace pp = hdssl::preprocess;
using nlohmann::json;

namespace {

constexpr double kAir = -1000, kTissue = 40, kGas = -900, kBone = 2000;

Eigen::Vector3d world(const Eigen::Matrix4d& a, double i, double j, double k) {
  return (a * Eigen::Vector4d(i, j, k, 1.0)).head<3>();
}

// A CT phantom at 1 x 1 x 2 mm (the preset's spacing, so resampling keeps every value):
// 40 x 36 x 10, air outside, tissue box x [5,35) y [6,30), gas x,y [15,20) z [3,6), one bone voxel.
Volume ct_phantom() {
  Volume v;
  v.data = torch::full({40, 36, 10}, kAir, torch::kFloat32);
  v.data.slice(0, 5, 35).slice(1, 6, 30).fill_(kTissue);
  v.data.slice(0, 15, 20).slice(1, 15, 20).slice(2, 3, 6).fill_(kGas);
  v.data.index_put_({30, 25, 8}, kBone);
  v.affine << 1, 0, 0, -20,  //
      0, 1, 0, 7.5,          //
      0, 0, 2, 100,          //
      0, 0, 0, 1;
  v.source = "phantom_ct.nii.gz";
  return v;
}

Volume ct_labels() {
  Volume l;
  l.data = torch::zeros({40, 36, 10}, torch::kUInt8);
  l.data.slice(0, 10, 14).slice(1, 8, 12).slice(2, 2, 9).fill_(3);
  l.affine = ct_phantom().affine;
  l.source = "phantom_ct_labels.nii.gz";
  return l;
}

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.eq(b).all().item<bool>();
}

json info_json(const pp::Preprocessed& p) { return json(p.info); }

bool same_result(const pp::Preprocessed& a, const pp::Preprocessed& b) {
  bool ok = same(a.image.data, b.image.data) && same(a.body_mask, b.body_mask) && a.image.affine == b.image.affine &&
            info_json(a) == info_json(b) && a.image.source == b.image.source &&
            a.labels.has_value() == b.labels.has_value();
  if (ok && a.labels) ok = same(a.labels->data, b.labels->data) && a.labels->affine == b.labels->affine;
  return ok;
}

}  // namespace

TEST_CASE("CT pipeline: crop, window, body mask and pad on a phantom with known answers") {
  const Volume in = ct_phantom();
  const auto out = pp::preprocess(in, pp::PreprocessOptions::ct(), ct_labels());
  // crop box (> -500 HU) = tissue box [5,35) x [6,30) x [0,10) -> 30 x 24 x 10; pad to 128 x 128 x 32
  CHECK(out.info.crop.begin == std::array<int64_t, 3>{{5, 6, 0}});
  CHECK(out.info.crop.end == std::array<int64_t, 3>{{35, 30, 10}});
  CHECK(out.info.padding.before == std::array<int64_t, 3>{{49, 52, 11}});
  CHECK(out.info.padding.after == std::array<int64_t, 3>{{49, 52, 11}});
  REQUIRE(out.image.shape() == std::array<int64_t, 3>{{128, 128, 32}});
  CHECK((out.image.data.scalar_type() == torch::kFloat32));
  // output voxel = input voxel + (49 - 5, 52 - 6, 11 - 0)
  const int64_t dx = 44, dy = 46, dz = 11;
  auto val = [&](int64_t x, int64_t y, int64_t z) { return out.image.data[x + dx][y + dy][z + dz].item<float>(); };
  CHECK(val(10, 10, 1) == doctest::Approx((kTissue + 1350) / 2350).epsilon(1e-7));
  CHECK(val(16, 16, 4) == doctest::Approx((kGas + 1350) / 2350).epsilon(1e-7));
  CHECK(val(30, 25, 8) == 1.0f);
  CHECK(out.image.data[0][0][0].item<float>() == 0.0f);  // padding
  CHECK(out.image.data.min().item<float>() >= 0.0f);
  CHECK(out.image.data.max().item<float>() <= 1.0f);
  // World positions survive: output (x+dx, ...) sits where input (x, ...) was.
  CHECK((world(out.image.affine, 10 + dx, 10 + dy, 1 + dz) - world(in.affine, 10, 10, 1)).norm() < 1e-9);
  // Body = the whole tissue box including the enclosed gas; nothing in the padding.
  auto expect_mask = torch::zeros({128, 128, 32}, torch::kBool);
  expect_mask.slice(0, 49, 79).slice(1, 52, 76).slice(2, 11, 21).fill_(true);
  CHECK(same(out.body_mask, expect_mask));
  // Labels follow the image voxel for voxel.
  REQUIRE(out.labels.has_value());
  CHECK((out.labels->data.scalar_type() == torch::kUInt8));
  auto expect_labels = torch::zeros({128, 128, 32}, torch::kUInt8);
  expect_labels.slice(0, 10 + dx, 14 + dx).slice(1, 8 + dy, 12 + dy).slice(2, 2 + dz, 9 + dz).fill_(3);
  CHECK(same(out.labels->data, expect_labels));
  CHECK(out.labels->affine == out.image.affine);
}

TEST_CASE("CT pipeline: a 0.5 x 0.5 x 1 mm volume gives what its exact 1 x 1 x 2 subsample gives") {
  // Doubling the resolution by repeating each voxel; resampling back to 1 x 1 x 2 lands exactly on the
  // even voxels, so the whole pipeline must match the coarse phantom's result, geometry included.
  const Volume coarse = ct_phantom();
  Volume fine = coarse;
  fine.data = coarse.data.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2).contiguous();
  fine.affine.topLeftCorner<3, 3>() = coarse.affine.topLeftCorner<3, 3>() * 0.5;
  const auto a = pp::preprocess(coarse, pp::PreprocessOptions::ct());
  const auto b = pp::preprocess(fine, pp::PreprocessOptions::ct());
  CHECK(b.info.input_shape == std::array<int64_t, 3>{{80, 72, 20}});
  CHECK(b.info.resampled_shape == std::array<int64_t, 3>{{40, 36, 10}});
  CHECK(same(a.image.data, b.image.data));
  CHECK(same(a.body_mask, b.body_mask));
  CHECK((a.image.affine - b.image.affine).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("CT pipeline: the body mask excludes outside air that the crop kept") {
  Volume in = ct_phantom();
  // A notch of air cut into the tissue from the box edge on every slice: inside the crop box, open to
  // the border of the cropped image, so it is outside air and not body.
  in.data.slice(0, 5, 9).slice(1, 20, 22).fill_(kAir);
  const auto out = pp::preprocess(in, pp::PreprocessOptions::ct());
  const int64_t dx = 44, dy = 46, dz = 11;
  CHECK_FALSE(out.body_mask[6 + dx][21 + dy][5 + dz].item<bool>());
  CHECK(out.body_mask[10 + dx][21 + dy][5 + dz].item<bool>());
  CHECK(out.body_mask[16 + dx][16 + dy][4 + dz].item<bool>());  // enclosed gas is still body
  CHECK(out.body_mask.sum().item<int64_t>() == 30 * 24 * 10 - 4 * 2 * 10);
}

TEST_CASE("MRI pipeline: percentile scaling, crop after scaling, body threshold on the [0,1] scale") {
  // 1.5 mm isotropic (the preset's spacing). Background 0; a dim rim (value 50) around a body (500)
  // with 5 bright voxels (1000); n = 30 * 28 * 20 voxels.
  Volume v;
  v.data = torch::zeros({30, 28, 20}, torch::kFloat32);
  v.data.slice(0, 3, 27).slice(1, 3, 25).fill_(50.0f);
  v.data.slice(0, 6, 24).slice(1, 5, 22).slice(2, 2, 18).fill_(500.0f);
  for (int i = 0; i < 5; ++i) v.data.index_put_({10 + i, 10, 10}, 1000.0f);
  v.affine = Eigen::Matrix4d::Identity();
  v.affine.topLeftCorner<3, 3>() *= 1.5;
  v.source = "phantom_mr.nii.gz";
  const auto out = pp::preprocess(v, pp::PreprocessOptions::mri());
  // Hand percentiles: n = 16800 sorted values end with 18*17*16 - 5 = 4891 of 500 then 5 of 1000.
  // 99.9: h = 16799 * 0.999 = 16782.201 -> order statistics 16782, 16783 are both 500 (1000s start at 16795).
  // 0.01: h = 1.6799 -> both 0.
  CHECK(out.info.intensity_range[0] == 0.0);
  CHECK(out.info.intensity_range[1] == doctest::Approx(500.0));
  // Scaled: rim 0.1 (< 0.3: cropped away), body 1, bright clipped to 1.
  CHECK(out.info.crop.begin == std::array<int64_t, 3>{{6, 5, 2}});
  CHECK(out.info.crop.end == std::array<int64_t, 3>{{24, 22, 18}});
  // 18 x 17 x 16 padded to 128 x 128 x 32: before (55, 55, 8)
  CHECK(out.info.padding.before == std::array<int64_t, 3>{{55, 55, 8}});
  CHECK(out.image.data[55][55][8].item<float>() == 1.0f);
  CHECK(out.image.data.max().item<float>() == 1.0f);
  CHECK(out.body_mask.sum().item<int64_t>() == 18 * 17 * 16);
  CHECK((world(out.image.affine, 55, 55, 8) - world(v.affine, 6, 5, 2)).norm() < 1e-9);
}

TEST_CASE("presets carry the paper's numbers") {
  const auto ct = pp::PreprocessOptions::preset("ct");
  REQUIRE(ct.spacing.has_value());
  CHECK(*ct.spacing == std::array<double, 3>{{1.0, 1.0, 2.0}});
  CHECK(ct.window == std::array<double, 2>{{-1350.0, 1000.0}});
  CHECK(ct.crop_threshold.value() == -500.0);
  CHECK(ct.intensity == pp::IntensityMode::window);
  CHECK(ct.threshold_space == pp::ThresholdSpace::input);
  CHECK(ct.patch_size == std::array<int64_t, 3>{{128, 128, 32}});
  const auto mri = pp::PreprocessOptions::preset("mri");
  CHECK(*mri.spacing == std::array<double, 3>{{1.5, 1.5, 1.5}});
  CHECK(mri.percentiles == std::array<double, 2>{{0.01, 99.9}});
  CHECK(mri.crop_threshold.value() == 0.3);
  CHECK(mri.intensity == pp::IntensityMode::percentile);
  CHECK(mri.threshold_space == pp::ThresholdSpace::scaled);
  CHECK_THROWS_AS(pp::PreprocessOptions::preset("pet"), hdssl::ConfigError);
}

TEST_CASE("options JSON: round trip, preset with overrides, every field overridable") {
  for (const auto& o : {pp::PreprocessOptions::ct(), pp::PreprocessOptions::mri()}) {
    const json j = o;
    CHECK(json(pp::options_from_json(j)) == j);
  }
  const json over = {{"preset", "mri"},
                     {"spacing", nullptr},
                     {"intensity", "window"},
                     {"window", {-175, 250}},
                     {"percentiles", {1, 99.99}},
                     {"threshold_space", "input"},
                     {"crop_threshold", nullptr},
                     {"body_threshold", -400},
                     {"body_connectivity", "face"},
                     {"body_per_slice", true},
                     {"patch_size", {96, 96, 16}},
                     {"replace_non_finite", true},
                     {"non_finite_value", -1024}};
  const auto o = over.get<pp::PreprocessOptions>();
  CHECK_FALSE(o.spacing.has_value());
  CHECK(o.intensity == pp::IntensityMode::window);
  CHECK(o.window == std::array<double, 2>{{-175, 250}});
  CHECK(o.percentiles == std::array<double, 2>{{1, 99.99}});
  CHECK(o.threshold_space == pp::ThresholdSpace::input);
  CHECK_FALSE(o.crop_threshold.has_value());
  CHECK(o.body_threshold == -400);
  CHECK(o.body_connectivity == pp::Connectivity::face);
  CHECK(o.body_per_slice);
  CHECK(o.patch_size == std::array<int64_t, 3>{{96, 96, 16}});
  CHECK(o.replace_non_finite);
  CHECK(o.non_finite_value.value() == -1024);
  json back = o;
  CHECK(json(pp::options_from_json(back)) == back);
  // Partial override keeps the rest of the preset.
  const auto m = pp::options_from_json({{"preset", "mri"}, {"percentiles", {1, 99.99}}});
  CHECK(m.crop_threshold.value() == 0.3);
  CHECK(m.percentiles == std::array<double, 2>{{1, 99.99}});
}

TEST_CASE("options JSON: unknown keys, wrong types and bad values are ConfigErrors naming the key") {
  auto message = [](const json& j) -> std::string {
    try {
      pp::options_from_json(j);
    } catch (const hdssl::ConfigError& e) {
      return e.what();
    }
    return "";
  };
  CHECK(message({{"windw", {0, 1}}}).find("'windw'") != std::string::npos);
  CHECK(message({{"window", "wide"}}).find("'window'") != std::string::npos);
  CHECK(message({{"window", {1, 2, 3}}}).find("'window'") != std::string::npos);
  CHECK(message({{"window", {100, -100}}}).find("'window'") != std::string::npos);
  CHECK(message({{"spacing", {1, 0, 1}}}).find("'spacing'") != std::string::npos);
  CHECK(message({{"patch_size", {128, 128.5, 32}}}).find("'patch_size'") != std::string::npos);
  CHECK(message({{"patch_size", {128, 0, 32}}}).find("'patch_size'") != std::string::npos);
  CHECK(message({{"body_per_slice", 1}}).find("'body_per_slice'") != std::string::npos);
  CHECK(message({{"body_connectivity", "diagonal"}}).find("'body_connectivity'") != std::string::npos);
  CHECK(message({{"intensity", "zscore"}}).find("'intensity'") != std::string::npos);
  CHECK(message({{"percentiles", {50, 40}}}).find("'percentiles'") != std::string::npos);
  CHECK(message({{"crop_threshold", "high"}}).find("'crop_threshold'") != std::string::npos);
  CHECK(message({{"preset", "pet"}}).find("'preset'") != std::string::npos);
  CHECK(message(json::array()).find("JSON object") != std::string::npos);
}

TEST_CASE("non-finite voxels: refused with source and count, or replaced as documented") {
  Volume in = ct_phantom();
  in.data.index_put_({0, 0, 0}, NAN);
  in.data.index_put_({1, 0, 0}, INFINITY);
  in.data.index_put_({39, 35, 9}, -INFINITY);
  std::string msg;
  try {
    pp::preprocess(in, pp::PreprocessOptions::ct());
  } catch (const hdssl::DataError& e) {
    msg = e.what();
  }
  CHECK(msg.find("phantom_ct.nii.gz") != std::string::npos);
  CHECK(msg.find("3 non-finite") != std::string::npos);
  // Replaced by an explicit value or by the smallest finite voxel (-1000 here, the air): both equal the
  // result on the clean phantom, since these voxels were air.
  const auto clean = pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct());
  auto opt = pp::PreprocessOptions::ct();
  opt.replace_non_finite = true;
  const auto by_min = pp::preprocess(in, opt);
  CHECK(by_min.info.non_finite_replaced == 3);
  CHECK(same(by_min.image.data, clean.image.data));
  opt.non_finite_value = kAir;
  const auto by_value = pp::preprocess(in, opt);
  CHECK(same(by_value.image.data, clean.image.data));
  CHECK(same(by_value.body_mask, clean.body_mask));
  // A body threshold above every voxel leaves no body: refused, naming the source.
  auto no_body = pp::PreprocessOptions::ct();
  no_body.body_threshold = 5000;
  CHECK_THROWS_WITH_AS(pp::preprocess(ct_phantom(), no_body), doctest::Contains("phantom_ct.nii.gz"), hdssl::DataError);
  // Nothing above the crop threshold: refused.
  auto no_crop = pp::PreprocessOptions::ct();
  no_crop.crop_threshold = 5000;
  CHECK_THROWS_WITH_AS(pp::preprocess(ct_phantom(), no_crop), doctest::Contains("crop threshold"), hdssl::DataError);
  // Labels on another grid are refused.
  Volume lab = ct_labels();
  lab.affine(0, 3) += 1.0;
  CHECK_THROWS_AS(pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct(), lab), hdssl::DataError);
}

TEST_CASE("FNV-1a 64: published test vectors, streamed file hash equals one-shot hash") {
  CHECK(pp::fnv1a64("") == 0xcbf29ce484222325ull);
  CHECK(pp::fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(pp::fnv1a64("foobar") == 0x85944171f73967e8ull);
  CHECK(pp::hex64(0xaf63dc4c8601ec8cull) == "af63dc4c8601ec8c");
  hdssl::test::TempDir dir;
  std::string big(3 * 1024 * 1024 + 17, '\0');  // spans several 1 MiB read pieces
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::ofstream(dir / "big.bin", std::ios::binary) << big;
  CHECK(pp::hash_file(dir / "big.bin") == pp::fnv1a64(big));
  CHECK_THROWS_AS(pp::hash_file(dir / "absent.bin"), hdssl::IoError);
}

namespace {

void write_file(const std::filesystem::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary) << content;
}

std::vector<std::filesystem::path> entries(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path());
  return out;
}

}  // namespace

TEST_CASE("cache: miss then hit, keys follow content and options, entries round-trip exactly") {
  hdssl::test::TempDir dir;
  write_file(dir / "img.nii", "image bytes v1");
  write_file(dir / "lab.nii", "label bytes");
  pp::PreprocessCache cache(dir / "cache");
  int computed = 0;
  auto compute = [&] {
    ++computed;
    return pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct(), ct_labels());
  };
  const std::vector<std::filesystem::path> src = {dir / "img.nii", dir / "lab.nii"};
  const auto a = cache.get_or_compute(src, pp::PreprocessOptions::ct(), compute);
  const auto b = cache.get_or_compute(src, pp::PreprocessOptions::ct(), compute);
  CHECK(computed == 1);
  CHECK(cache.hits() == 1);
  CHECK(cache.misses() == 1);
  CHECK(same_result(a, b));
  CHECK(pp::detail::meta_to_json(a.image) == pp::detail::meta_to_json(b.image));
  CHECK(pp::detail::meta_to_json(*a.labels) == pp::detail::meta_to_json(*b.labels));

  const auto k1 = cache.key(src, pp::PreprocessOptions::ct());
  auto other = pp::PreprocessOptions::ct();
  other.window = {{-175, 250}};
  CHECK(cache.key(src, other).id != k1.id);
  CHECK(cache.key({dir / "img.nii"}, pp::PreprocessOptions::ct()).id != k1.id);
  write_file(dir / "img.nii", "image bytes v2");  // same size, other content
  CHECK(cache.key(src, pp::PreprocessOptions::ct()).id != k1.id);
  write_file(dir / "img.nii", "image bytes v1");
  CHECK(cache.key(src, pp::PreprocessOptions::ct()).id == k1.id);
  CHECK(k1.id.size() == 16);
  CHECK_THROWS_AS(cache.key({dir / "absent.nii"}, pp::PreprocessOptions::ct()), hdssl::IoError);
}

TEST_CASE("cache: damaged entries are detected, reported and rebuilt, never trusted") {
  hdssl::test::TempDir dir;
  write_file(dir / "img.nii", "image bytes");
  pp::PreprocessCache cache(dir / "cache");
  std::vector<std::string> warnings;
  cache.set_warning_handler([&](const std::string& w) { warnings.push_back(w); });
  int computed = 0;
  auto compute = [&] {
    ++computed;
    return pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct());
  };
  const std::vector<std::filesystem::path> src = {dir / "img.nii"};
  const auto ref = cache.get_or_compute(src, pp::PreprocessOptions::ct(), compute);
  const auto path = cache.entry_path(cache.key(src, pp::PreprocessOptions::ct()));
  REQUIRE(std::filesystem::exists(path));
  const auto good_size = std::filesystem::file_size(path);

  SUBCASE("truncated") { std::filesystem::resize_file(path, good_size / 2); }
  SUBCASE("one flipped bit in the image data") {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(good_size - 1000));
    char c;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(good_size - 1000));
    f.put(static_cast<char>(c ^ 0x10));
  }
  SUBCASE("garbage") { write_file(path, "not a safetensors file"); }
  SUBCASE("empty") { write_file(path, ""); }

  const auto again = cache.get_or_compute(src, pp::PreprocessOptions::ct(), compute);
  CHECK(computed == 2);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find(path.string()) != std::string::npos);
  CHECK(same_result(again, ref));
  // The rebuilt entry is whole again and served without recomputing.
  CHECK(std::filesystem::file_size(path) == good_size);
  const auto third = cache.get_or_compute(src, pp::PreprocessOptions::ct(), compute);
  CHECK(computed == 2);
  CHECK(same_result(third, ref));
}

TEST_CASE("cache: several threads filling the same key at once all get the same whole entry") {
  hdssl::test::TempDir dir;
  write_file(dir / "img.nii", "image bytes");
  pp::PreprocessCache cache(dir / "cache");
  const auto ref = pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct());
  std::atomic<int> computed{0};
  std::vector<pp::Preprocessed> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      results[t] = cache.get_or_compute({dir / "img.nii"}, pp::PreprocessOptions::ct(), [&] {
        // Hold every computation until all four threads have missed, so the stores really race.
        ++computed;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (computed.load() < 4 && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return ref;
      });
    });
  for (auto& th : threads) th.join();
  CHECK(computed.load() == 4);
  for (const auto& r : results) CHECK(same_result(r, ref));
  const auto files = entries(dir / "cache");
  REQUIRE(files.size() == 1);  // one entry, no temporary left behind
  CHECK(files[0].extension() == ".safetensors");
  const auto loaded = cache.load(cache.key({dir / "img.nii"}, pp::PreprocessOptions::ct()));
  REQUIRE(loaded.has_value());
  CHECK(same_result(*loaded, ref));
}

TEST_CASE("cache: stale temporaries of dead writers are removed, young ones and entries kept") {
  hdssl::test::TempDir dir;
  pp::PreprocessCache cache(dir / "cache");
  const auto old_tmp = dir / "cache" / ".0123456789abcdef.tmp-1-2-3-4";
  const auto young_tmp = dir / "cache" / ".0123456789abcdef.tmp-5-6-7-8";
  const auto entry = dir / "cache" / "0123456789abcdef.safetensors";
  for (const auto& p : {old_tmp, young_tmp, entry}) write_file(p, "x");
  std::filesystem::last_write_time(old_tmp, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  std::filesystem::last_write_time(entry, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  CHECK(cache.remove_stale_temporaries() == 1);
  CHECK_FALSE(std::filesystem::exists(old_tmp));
  CHECK(std::filesystem::exists(young_tmp));
  CHECK(std::filesystem::exists(entry));
}

// Runs only as a child process of the test below (the environment names the shared folder).
// Run only as the child of the race test below (which passes --no-skip); skipped, and reported so, otherwise.
TEST_CASE("cache child process filler" * doctest::skip(std::getenv("HDSSL_TEST_CACHE_CHILD_DIR") == nullptr)) {
  const char* shared = std::getenv("HDSSL_TEST_CACHE_CHILD_DIR");
  REQUIRE(shared != nullptr);
  const std::filesystem::path dir(shared);
  pp::PreprocessCache cache(dir / "cache");
  const auto got = cache.get_or_compute({dir / "img.nii"}, pp::PreprocessOptions::ct(), [&] {
    // Announce the miss, then wait (up to 30 s) until the other process has missed too, so both
    // really write the same entry at the same time.
    write_file(dir / ("computing-" + std::to_string(::getpid())), "");
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    auto count = [&] {
      int n = 0;
      for (const auto& e : entries(dir)) n += e.filename().string().rfind("computing-", 0) == 0;
      return n;
    };
    while (count() < 2 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct(), ct_labels());
  });
  CHECK(same_result(got, pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct(), ct_labels())));
}

TEST_CASE("cache: two processes filling the same key at once leave one whole entry") {
  hdssl::test::TempDir dir;
  write_file(dir / "img.nii", "image bytes for two processes");
  const auto exe = hdssl::test::bin_dir() / "test_preprocess";
  REQUIRE(std::filesystem::exists(exe));
  const std::string one = "HDSSL_TEST_CACHE_CHILD_DIR='" + dir.path.string() + "' '" + exe.string() +
                          "' --test-case='cache child process filler' --no-skip=true --no-version=true > /dev/null 2>&1";
  const std::string both = one + " & a=$!; " + one + " & b=$!; wait $a; ra=$?; wait $b; rb=$?; exit $((ra + rb))";
  CHECK(std::system(both.c_str()) == 0);
  int missed = 0;
  for (const auto& e : entries(dir.path)) missed += e.filename().string().rfind("computing-", 0) == 0;
  CHECK(missed == 2);  // both computed and stored: the race really happened
  const auto files = entries(dir / "cache");
  REQUIRE(files.size() == 1);
  pp::PreprocessCache cache(dir / "cache");
  const auto loaded = cache.load(cache.key({dir / "img.nii"}, pp::PreprocessOptions::ct()));
  REQUIRE(loaded.has_value());
  CHECK(same_result(*loaded, pp::preprocess(ct_phantom(), pp::PreprocessOptions::ct(), ct_labels())));
}

TEST_CASE("real MRI: Colin27 (ch2) with the AAL atlas through the mri preset and the cache") {
  const auto ch2 = hdssl::test::mricron("ch2.nii.gz");
  const auto aal = hdssl::test::mricron("aal.nii.gz");
  if (!std::filesystem::exists(ch2) || !std::filesystem::exists(aal)) {
    MESSAGE("mricron-data not installed: skipped");
    return;
  }
  const Volume in = hdssl::io::read_nifti(ch2);
  REQUIRE(in.shape() == std::array<int64_t, 3>{{181, 217, 181}});
  const auto opt = pp::PreprocessOptions::mri();
  hdssl::test::TempDir dir;
  pp::PreprocessCache cache(dir / "cache");
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = pp::preprocess_nifti(ch2, aal, opt, &cache);
  const auto t1 = std::chrono::steady_clock::now();
  const auto again = pp::preprocess_nifti(ch2, aal, opt, &cache);
  const auto t2 = std::chrono::steady_clock::now();
  MESSAGE("ch2 + aal, mri preset: read + preprocess + store " << std::chrono::duration<double>(t1 - t0).count()
                                                              << " s, cache hit " << std::chrono::duration<double>(t2 - t1).count() << " s");
  CHECK(cache.misses() == 1);
  CHECK(cache.hits() == 1);
  CHECK(same_result(out, again));

  // 1 mm -> 1.5 mm: 181 / 1.5 = 120.67 -> 121, 217 / 1.5 = 144.67 -> 145
  CHECK(out.info.resampled_shape == std::array<int64_t, 3>{{121, 145, 121}});
  // Clip values: the numpy-rule percentiles of the resampled image, here from a full sort.
  const Volume res = pp::resample(in, Eigen::Vector3d(1.5, 1.5, 1.5), pp::Interpolation::linear);
  const auto flat = res.data.reshape({-1}).to(torch::kFloat64);
  std::vector<double> s(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
  std::sort(s.begin(), s.end());
  for (int i = 0; i < 2; ++i) {
    const double h = (s.size() - 1) * opt.percentiles[i] / 100.0;
    const size_t k = static_cast<size_t>(h);
    CHECK(out.info.intensity_range[i] == doctest::Approx(s[k] + (h - k) * (s[k + 1] - s[k])).epsilon(1e-12));
  }
  // Geometry: the first cropped voxel sits, after padding, where the resampled grid put it.
  const auto& b = out.info.crop.begin;
  const auto& p = out.info.padding.before;
  const Eigen::Vector3d expect = world(in.affine, 1.5 * b[0], 1.5 * b[1], 1.5 * b[2]);  // ch2 spacing is 1 mm
  CHECK((world(out.image.affine, double(p[0]), double(p[1]), double(p[2])) - expect).norm() < 1e-6);
  CHECK(out.image.spacing().isApprox(Eigen::Vector3d(1.5, 1.5, 1.5), 1e-9));
  // The crop is tight: every face of the unpadded region holds a voxel above 0.3, and the image is in [0, 1].
  const auto sz = out.info.crop.size();
  const auto body = out.image.data.slice(0, p[0], p[0] + sz[0]).slice(1, p[1], p[1] + sz[1]).slice(2, p[2], p[2] + sz[2]);
  for (int a = 0; a < 3; ++a) {
    CHECK(body.select(a, 0).max().item<float>() > 0.3f);
    CHECK(body.select(a, sz[a] - 1).max().item<float>() > 0.3f);
  }
  CHECK(out.image.data.min().item<float>() == 0.0f);
  CHECK(out.image.data.max().item<float>() == 1.0f);
  // Voxels at or above the body threshold are never air, so they are body.
  CHECK_FALSE(((out.image.data >= 0.03f) & ~out.body_mask).any().item<bool>());
  // Labels: nearest neighbour adds no value that the atlas does not have.
  REQUIRE(out.labels.has_value());
  CHECK(out.labels->data.sizes() == out.image.data.sizes());
  hdssl::io::NiftiReadOptions lo;
  lo.load_as = hdssl::io::LoadType::Int64;
  const auto atlas = hdssl::io::read_nifti(aal, lo);
  CHECK(torch::isin(out.labels->data, std::get<0>(torch::_unique(atlas.data))).all().item<bool>());
  CHECK(out.labels->data.gt(0).any().item<bool>());
}
