// The synthetic cohort (data/cohort.hpp): labels stay aligned with the image they were warped with, the
// deformation is real, a seed gives the same subject, and the files and datalists keep roles apart.
#include <doctest/doctest.h>

#include "../test_support.hpp"
#include "hdssl/data/cohort.hpp"
#include "hdssl/data/datalist.hpp"

#include <set>

namespace {

/// A 40 x 36 x 30 volume at 2 mm of nested boxes labelled 1..3, and an image equal to 10 x label.
std::pair<hdssl::Volume, hdssl::Volume> boxes() {
  hdssl::Volume lab;
  lab.data = torch::zeros({40, 36, 30}, torch::kLong);
  lab.data.slice(0, 4, 36).slice(1, 4, 32).slice(2, 4, 26).fill_(1);
  lab.data.slice(0, 10, 30).slice(1, 10, 26).slice(2, 8, 22).fill_(2);
  lab.data.slice(0, 16, 24).slice(1, 14, 22).slice(2, 12, 18).fill_(3);
  lab.affine.topLeftCorner<3, 3>() *= 2.0;
  lab.affine.block<3, 1>(0, 3) << -40, -36, -30;
  lab.source = "boxes";
  hdssl::Volume img = lab;
  img.data = lab.data.to(torch::kFloat32) * 10;
  return {img, lab};
}

}  // namespace

TEST_CASE("cohort: warped labels stay on the warped image, the warp is real, a seed repeats the subject") {
  const auto [img, lab] = boxes();
  hdssl::data::CohortOptions o;
  o.spacing = 2.0;  // the source grid: resampling is the identity, only the warp acts
  o.deformation_mm = 3.0;
  o.control_spacing_mm = 20.0;
  o.bias = 0, o.noise = 0, o.gamma = {{1.0, 1.0}};
  const auto s = hdssl::data::make_subject(img, lab, o, 7);
  REQUIRE(s.image.data.sizes() == lab.data.sizes());
  REQUIRE(s.labels.data.sizes() == lab.data.sizes());
  CHECK((s.image.affine - lab.affine).cwiseAbs().maxCoeff() < 1e-9);
  // Same displaced points for both: wherever the linear image is not a blend of regions (a multiple of 10),
  // it must equal 10 x the nearest-neighbour label.
  const auto tens = s.image.data / 10;
  const auto pure = (tens - tens.round()).abs() < 1e-4;
  CHECK(pure.to(torch::kFloat64).mean().item<double>() > 0.6);
  const auto same = (tens.round().to(torch::kLong) == s.labels.data) | ~pure;
  CHECK(same.all().item<bool>());
  // The warp moves boundaries: a good share of voxels changed label, yet every label survived.
  const double changed = (s.labels.data != lab.data).to(torch::kFloat64).mean().item<double>();
  CHECK(changed > 0.02);
  CHECK(changed < 0.5);
  for (int64_t v = 0; v <= 3; ++v) CHECK((s.labels.data == v).any().item<bool>());
  // Deterministic per (seed, subject); another subject or seed is another draw.
  const auto again = hdssl::data::make_subject(img, lab, o, 7);
  CHECK(torch::equal(again.image.data, s.image.data));
  CHECK(torch::equal(again.labels.data, s.labels.data));
  CHECK(!torch::equal(hdssl::data::make_subject(img, lab, o, 8).labels.data, s.labels.data));
  o.seed = 1;
  CHECK(!torch::equal(hdssl::data::make_subject(img, lab, o, 7).labels.data, s.labels.data));
  // No deformation: labels come back unchanged.
  o.deformation_mm = 0;
  CHECK(torch::equal(hdssl::data::make_subject(img, lab, o, 7).labels.data, lab.data));
}

TEST_CASE("cohort: contrast, bias and noise change intensities only; bad options are refused") {
  const auto [img, lab] = boxes();
  hdssl::data::CohortOptions o;
  o.spacing = 2.0;
  o.deformation_mm = 0;
  const auto s = hdssl::data::make_subject(img, lab, o, 3);
  CHECK(torch::equal(s.labels.data, lab.data));
  CHECK(!torch::allclose(s.image.data, img.data));
  CHECK(s.image.data.min().item<float>() >= 0.0f);
  o.gamma = {{1.5, 1.0}};
  CHECK_THROWS_AS(hdssl::data::make_subject(img, lab, o, 3), hdssl::ConfigError);
  o = {};
  hdssl::Volume shifted = lab;
  shifted.affine(0, 3) += 5;
  CHECK_THROWS_AS(hdssl::data::make_subject(img, shifted, o, 0), hdssl::DataError);
}

TEST_CASE("cohort files: pre-training subjects unlabelled and apart; labelled-k lists train on the first k") {
  const auto [img, lab] = boxes();
  hdssl::test::TempDir dir;
  hdssl::data::CohortOptions o;
  o.spacing = 4.0;
  o.pretrain_subjects = 2, o.labelled_subjects = 3, o.validation_subjects = 1, o.test_subjects = 1;
  nlohmann::ordered_json classes = {{"outer", {1}}, {"inner", {2, 3}}};
  int lines = 0;
  const auto f = hdssl::data::write_cohort(img, lab, classes, dir.path, o, [&](const std::string&) { ++lines; });
  CHECK(lines == 7);
  const auto pre = hdssl::data::read_datalist(f.pretrain);
  REQUIRE(pre.training.size() == 2);
  for (const auto& s : pre.training) CHECK(!s.label);
  REQUIRE(f.labelled.size() == 3);  // 1, 2 and 3 labelled subjects
  std::set<std::string> pre_images;
  for (const auto& s : pre.training) pre_images.insert(s.image.string());
  size_t expect[] = {1, 2, 3};
  for (size_t i = 0; i < f.labelled.size(); ++i) {
    const auto d = hdssl::data::read_datalist(f.labelled[i]);
    CHECK(d.training.size() == expect[i]);
    CHECK(d.validation.size() == 1);
    CHECK(d.test.size() == 1);
    for (const auto* list : {&d.training, &d.validation, &d.test})
      for (const auto& s : *list) {
        REQUIRE(s.label);
        CHECK(std::filesystem::exists(*s.label));
        CHECK(pre_images.count(s.image.string()) == 0);
      }
    CHECK(d.test[0].image != d.validation[0].image);
  }
  // The labelled files read back on their image's grid.
  const auto d = hdssl::data::read_datalist(f.labelled.back());
  hdssl::io::NiftiReadOptions lo;
  lo.load_as = hdssl::io::LoadType::Int64;
  const auto a = hdssl::io::read_nifti(d.training[0].image), b = hdssl::io::read_nifti(*d.training[0].label, lo);
  CHECK(a.data.sizes() == b.data.sizes());
  CHECK((a.affine - b.affine).cwiseAbs().maxCoeff() < 1e-4);
}
