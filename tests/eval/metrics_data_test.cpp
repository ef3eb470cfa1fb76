// Downstream evaluation without a network: Dice against hand values, the class map (parsing, errors,
// one-hot targets, predicted label maps), K-fold splits and their datalists, the fine-tuning schedule
// against the step numbers of method.md 7, and the segmentation patch sampler.
#include <doctest/doctest.h>

#include <hdssl/data/datalist.hpp>
#include <hdssl/eval/classes.hpp>
#include <hdssl/eval/dice.hpp>
#include <hdssl/eval/folds.hpp>
#include <hdssl/sampling/segmentation_patches.hpp>
#include <hdssl/train/finetune_schedule.hpp>

#include "../test_support.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace ev = hdssl::eval;
using hdssl::ConfigError;
using hdssl::DataError;
using hdssl::IoError;

namespace {

constexpr double kEps = 1e-5;

/// A (1, 4, 4, 4) float mask with ones at the given flat indices.
torch::Tensor mask64(const std::vector<int64_t>& on) {
  auto t = torch::zeros({64}, torch::kFloat32);
  for (int64_t i : on) t[i] = 1.0f;
  return t.view({1, 4, 4, 4});
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Dice

TEST_CASE("dice: an empty class on one side scores ~0, on both sides exactly 1") {
  const auto none = mask64({});
  // Prediction has 3 voxels, truth none: (0 + eps) / (3 + 0 + eps).
  const auto a = ev::dice_per_class(mask64({1, 5, 9}), none);
  REQUIRE(a.size() == 1);
  CHECK(a[0] == doctest::Approx(kEps / (3 + kEps)).epsilon(1e-12));
  CHECK(a[0] < 1e-5);
  // Truth has 2 voxels, prediction none: (0 + eps) / (0 + 2 + eps).
  const auto b = ev::dice_per_class(none, mask64({3, 40}));
  CHECK(b[0] == doctest::Approx(kEps / (2 + kEps)).epsilon(1e-12));
  CHECK(b[0] < 1e-5);
  // Neither: eps / eps.
  const auto c = ev::dice_per_class(none, none);
  CHECK(c[0] == 1.0);
}

TEST_CASE("dice: partial overlap, several classes in one call, soft values") {
  // 3 voxels predicted {0, 1, 2}, 2 true {2, 7}, 1 overlapping (voxel 2):
  // sum pg = 1, sum p^2 = 3, sum g^2 = 2 -> (2 * 1 + eps) / (3 + 2 + eps).
  const auto d = ev::dice_per_class(mask64({0, 1, 2}), mask64({2, 7}));
  CHECK(d[0] == doctest::Approx((2 + kEps) / (5 + kEps)).epsilon(1e-12));

  // Three classes at once:
  //   class 0: prediction == truth (4 voxels)                  -> (8 + eps) / (8 + eps) = 1
  //   class 1: predicted {0,1,2}, true {2,7}                   -> (2 + eps) / (5 + eps)
  //   class 2: true {10,11,12,13}, predicted those and {20,21}  -> (8 + eps) / (6 + 4 + eps)
  const auto pred = torch::cat({mask64({4, 5, 6, 7}), mask64({0, 1, 2}), mask64({10, 11, 12, 13, 20, 21})});
  const auto truth = torch::cat({mask64({4, 5, 6, 7}), mask64({2, 7}), mask64({10, 11, 12, 13})}).to(torch::kUInt8);
  const auto k3 = ev::dice_per_class(pred, truth);
  REQUIRE(k3.size() == 3);
  CHECK(k3[0] == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(k3[1] == doctest::Approx((2 + kEps) / (5 + kEps)).epsilon(1e-12));
  CHECK(k3[2] == doctest::Approx((8 + kEps) / (10 + kEps)).epsilon(1e-12));

  // Soft prediction p = (0.5, 0.25, 0, 1), truth g = (1, 0, 0, 1), shape (K = 1, 4):
  // sum pg = 0.5 + 1 = 1.5; sum p^2 = 0.25 + 0.0625 + 1 = 1.3125; sum g^2 = 2
  // -> (3 + eps) / (3.3125 + eps).
  const auto soft = ev::dice_per_class(torch::tensor({{0.5, 0.25, 0.0, 1.0}}), torch::tensor({{1.0, 0.0, 0.0, 1.0}}));
  CHECK(soft[0] == doctest::Approx((3 + kEps) / (3.3125 + kEps)).epsilon(1e-12));
}

TEST_CASE("dice: mismatched or malformed inputs are DataErrors") {
  CHECK_THROWS_AS(ev::dice_per_class(torch::zeros({2, 4, 4, 4}), torch::zeros({2, 4, 4, 3})), DataError);
  CHECK_THROWS_AS(ev::dice_per_class(torch::zeros({2, 4, 4, 4}), torch::zeros({3, 4, 4, 4})), DataError);
  CHECK_THROWS_AS(ev::dice_per_class(torch::zeros({4}), torch::zeros({4})), DataError);
  CHECK_THROWS_AS(ev::dice_per_class(torch::Tensor(), torch::zeros({1, 4})), DataError);
}

TEST_CASE("dice summary: mean and sample standard deviation") {
  // mean(1, 2, 3, 4) = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 over n - 1 = 3.
  CHECK(ev::mean({1, 2, 3, 4}) == doctest::Approx(2.5));
  CHECK(ev::stddev({1, 2, 3, 4}) == doctest::Approx(std::sqrt(5.0 / 3.0)).epsilon(1e-12));
  // (0.2, 0.8): mean 0.5, deviations 0.09 + 0.09 over 1.
  CHECK(ev::stddev({0.2, 0.8}) == doctest::Approx(std::sqrt(0.18)).epsilon(1e-12));
  CHECK(ev::stddev({0.7}) == 0.0);
  CHECK(ev::stddev({2, 2, 2}) == doctest::Approx(0.0));
  CHECK(std::isnan(ev::mean({})));
}

// ---------------------------------------------------------------------------------------------------------
// Classes

TEST_CASE("classes: inline JSON and files keep the object's order and merge label values") {
  // Alphabetical order would be brainstem, cerebellum, frontal: the object's own order must survive.
  const std::string text = R"(  {"frontal": [3, 4, 5, 6], "cerebellum": [91, 92], "brainstem": 7})";
  const auto m = ev::read_classes(text);
  REQUIRE(m.size() == 3);
  CHECK(m.names() == std::vector<std::string>{"frontal", "cerebellum", "brainstem"});
  CHECK(m[0].values == std::vector<int64_t>{3, 4, 5, 6});
  CHECK(m[1].values == std::vector<int64_t>{91, 92});
  CHECK(m[2].values == std::vector<int64_t>{7});

  hdssl::test::TempDir dir;
  const auto file = dir / "classes.json";
  std::ofstream(file) << R"({"z_last": [2], "a_first": [1, -4]})" << "\n";
  const auto f = ev::read_classes(file.string());
  CHECK(f.names() == std::vector<std::string>{"z_last", "a_first"});
  CHECK(f[1].values == std::vector<int64_t>{1, -4});

  // to_json writes the same object back.
  nlohmann::ordered_json j;
  to_json(j, m);
  const auto again = ev::classes_from_json(j, "round trip");
  CHECK(again.names() == m.names());
  for (size_t k = 0; k < m.size(); ++k) CHECK(again[k].values == m[k].values);
}

TEST_CASE("classes: invalid definitions are ConfigErrors naming the class, a missing file an IoError") {
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1], "spleen": [0, 2]})"), Contains("'spleen'"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1], "spleen": [0, 2]})"), Contains("background"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1, 5], "spleen": [5]})"), Contains("label value 5"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1, 5], "spleen": [5]})"), Contains("'spleen'"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1.5]})"), Contains("'liver'"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": ["1"]})"), Contains("integers"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": true})"), Contains("'liver'"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": []})"), Contains("'liver'"), ConfigError);
  CHECK_THROWS_AS(ev::read_classes("{}"), ConfigError);
  CHECK_THROWS_AS(ev::read_classes("[1, 2]"), IoError);  // not inline (no '{'): read as a path that does not exist
  CHECK_THROWS_AS(ev::read_classes(R"({"liver": [1)"), ConfigError);
  // A name given twice: the parser would keep only the last, so label value 1 would become background.
  CHECK_THROWS_WITH_AS(ev::read_classes(R"({"liver": [1], "spleen": [2], "liver": [3]})"), Contains("'liver' is named twice"),
                       ConfigError);
  // Nested keys of the same name are no class names.
  CHECK(ev::read_classes(R"({"liver": [1], "spleen": [2]})").size() == 2);
  // Duplicate names through the constructor.
  auto make = [](std::vector<ev::SegmentationClass> c) { return ev::ClassMap(std::move(c)); };
  CHECK_THROWS_WITH_AS(make({{"liver", {1}}, {"liver", {2}}}), Contains("'liver'"), ConfigError);
  CHECK_THROWS_WITH_AS(make({{"liver", {1}}, {"spleen", {}}}), Contains("'spleen'"), ConfigError);
  CHECK_THROWS_AS(make({{"", {1}}}), ConfigError);

  hdssl::test::TempDir dir;
  const auto missing = (dir / "nope.json").string();
  CHECK_THROWS_WITH_AS(ev::read_classes(missing), Contains("nope.json"), IoError);
  const auto bad = dir / "bad.json";
  std::ofstream(bad) << R"({"kidney": [0]})";
  CHECK_THROWS_WITH_AS(ev::read_classes(bad.string()), Contains("'kidney'"), ConfigError);
  CHECK_THROWS_WITH_AS(ev::read_classes(bad.string()), Contains("bad.json"), ConfigError);
  const auto twice = dir / "twice.json";
  std::ofstream(twice) << R"({"kidney": [2], "kidney": [3]})";
  CHECK_THROWS_WITH_AS(ev::read_classes(twice.string()), Contains("'kidney' is named twice"), ConfigError);
}

TEST_CASE("classes: targets are one-hot of the merged values; from_values drops the background") {
  const ev::ClassMap m({{"a", {3, 4}}, {"b", {7}}});
  torch::manual_seed(3);
  const auto labels = torch::randint(0, 9, {5, 4, 3}, torch::kInt16);
  const auto t = m.targets(labels);
  REQUIRE(t.sizes() == torch::IntArrayRef({2, 5, 4, 3}));
  CHECK((t.scalar_type() == torch::kFloat32));
  auto lab = labels.accessor<int16_t, 3>();
  auto tt = t.accessor<float, 4>();
  int64_t wrong = 0, ones = 0;
  for (int x = 0; x < 5; ++x)
    for (int y = 0; y < 4; ++y)
      for (int z = 0; z < 3; ++z) {
        const int v = lab[x][y][z];
        const float a = (v == 3 || v == 4) ? 1.0f : 0.0f, b = v == 7 ? 1.0f : 0.0f;
        wrong += (tt[0][x][y][z] != a) + (tt[1][x][y][z] != b);
        ones += static_cast<int64_t>(a + b);
      }
  CHECK(wrong == 0);
  CHECK(ones > 0);

  const auto fv = ev::ClassMap::from_values({9, 0, 5, 2});
  CHECK(fv.names() == std::vector<std::string>{"2", "5", "9"});
  CHECK(fv[2].values == std::vector<int64_t>{9});
  CHECK(ev::ClassMap::from_values({0}).empty());
}

TEST_CASE("classes: label_map takes the most probable class at >= 0.5, one_hot_prediction inverts it") {
  // Four voxels, K = 3 channels:
  //   voxel 0: (0.7, 0.2, 0.9) -> class 2 -> 3
  //   voxel 1: (0.4, 0.3, 0.1) -> max 0.4 < 0.5 -> 0
  //   voxel 2: (0.1, 0.5, 0.2) -> max exactly 0.5 -> class 1 -> 2
  //   voxel 3: (0.6, 0.1, 0.0) -> class 0 -> 1
  const auto p = torch::tensor({{0.7f, 0.4f, 0.1f, 0.6f}, {0.2f, 0.3f, 0.5f, 0.1f}, {0.9f, 0.1f, 0.2f, 0.0f}}).view({3, 4, 1, 1});
  const auto lm = ev::ClassMap::label_map(p);
  CHECK((lm.scalar_type() == torch::kUInt8));
  REQUIRE(lm.sizes() == torch::IntArrayRef({4, 1, 1}));
  CHECK(lm.flatten().to(torch::kLong).equal(torch::tensor({3, 0, 2, 1}, torch::kLong)));
  // A lower threshold lets voxel 1 through (class 0 -> 1).
  CHECK(ev::ClassMap::label_map(p, 0.35).flatten().to(torch::kLong).equal(torch::tensor({3, 1, 2, 1}, torch::kLong)));

  const ev::ClassMap m({{"a", {1}}, {"b", {2}}, {"c", {3}}});
  const auto oh = m.one_hot_prediction(lm);
  REQUIRE(oh.sizes() == torch::IntArrayRef({3, 4, 1, 1}));
  const auto expect = torch::tensor({{0.f, 0.f, 0.f, 1.f}, {0.f, 0.f, 1.f, 0.f}, {1.f, 0.f, 0.f, 0.f}}).view({3, 4, 1, 1});
  CHECK(oh.equal(expect));

  // 300 classes no longer fit uint8: the map is int16 and the winner of channel 299 reads 300.
  auto many = torch::zeros({300, 2, 1, 1});
  many[299][0] = 0.8f;
  many[10][1] = 0.6f;
  const auto big = ev::ClassMap::label_map(many);
  CHECK((big.scalar_type() == torch::kInt16));
  CHECK(big[0][0][0].item<int64_t>() == 300);
  CHECK(big[1][0][0].item<int64_t>() == 11);
}

// ---------------------------------------------------------------------------------------------------------
// Folds

TEST_CASE("kfold_indices: a seeded partition into near-equal sorted folds") {
  for (const auto& nk : std::vector<std::pair<size_t, size_t>>{{20, 3}, {5, 2}, {7, 7}, {11, 4}}) {
    const size_t n = nk.first, k = nk.second;
    CAPTURE(n);
    CAPTURE(k);
    const auto folds = ev::kfold_indices(n, k, 7);
    REQUIRE(folds.size() == k);
    std::vector<int> seen(n, 0);
    size_t smallest = n, largest = 0;
    for (const auto& f : folds) {
      CHECK(std::is_sorted(f.begin(), f.end()));
      smallest = std::min(smallest, f.size());
      largest = std::max(largest, f.size());
      for (size_t i : f) {
        REQUIRE(i < n);
        ++seen[i];
      }
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
    CHECK(largest - smallest <= 1);
    CHECK(largest == (n + k - 1) / k);
  }
  const auto a = ev::kfold_indices(20, 4, 7), b = ev::kfold_indices(20, 4, 7), c = ev::kfold_indices(20, 4, 8);
  CHECK(a == b);
  CHECK(a != c);
  // Dealt in a shuffled order, not round-robin over 0..n-1.
  std::vector<std::vector<size_t>> round_robin(4);
  for (size_t i = 0; i < 20; ++i) round_robin[i % 4].push_back(i);
  CHECK(a != round_robin);

  CHECK_THROWS_AS(ev::kfold_indices(10, 1, 0), ConfigError);
  CHECK_THROWS_AS(ev::kfold_indices(10, 0, 0), ConfigError);
  CHECK_THROWS_AS(ev::kfold_indices(3, 4, 0), ConfigError);
}

TEST_CASE("write_fold_datalists: every fold file reads back as that fold's test and training lists") {
  hdssl::test::TempDir dir;
  hdssl::data::Datalist list;
  list.source = dir / "dataset.json";
  for (int i = 0; i < 7; ++i)
    list.training.push_back({dir / ("imagesTr/case" + std::to_string(i) + ".nii.gz"),
                             dir / ("labelsTr/case" + std::to_string(i) + ".nii.gz")});
  list.validation.push_back({dir / "imagesVa/v0.nii.gz", dir / "labelsVa/v0.nii.gz"});
  list.validation.push_back({dir / "imagesVa/v1.nii.gz", std::nullopt});

  const size_t k = 3;
  const uint64_t seed = 42;
  const auto paths = ev::write_fold_datalists(list, k, seed, dir / "splits");
  const auto folds = ev::kfold_indices(7, k, seed);
  REQUIRE(paths.size() == k);
  std::set<fs::path> tested;
  for (size_t f = 0; f < k; ++f) {
    CAPTURE(f);
    CHECK(paths[f] == dir / "splits" / ("fold-" + std::to_string(f) + ".json"));
    const auto d = hdssl::data::read_datalist(paths[f]);
    // Test list: exactly the volumes of fold f, in index order.
    REQUIRE(d.test.size() == folds[f].size());
    for (size_t t = 0; t < folds[f].size(); ++t) {
      CHECK(d.test[t].image == list.training[folds[f][t]].image);
      CHECK(d.test[t].label == list.training[folds[f][t]].label);
      tested.insert(d.test[t].image);
    }
    // Training list: every other volume, folds in order.
    std::vector<fs::path> expect_train;
    for (size_t g = 0; g < k; ++g)
      if (g != f)
        for (size_t i : folds[g]) expect_train.push_back(list.training[i].image);
    REQUIRE(d.training.size() == expect_train.size());
    CHECK(d.training.size() + d.test.size() == 7);
    for (size_t t = 0; t < expect_train.size(); ++t) {
      CHECK(d.training[t].image == expect_train[t]);
      REQUIRE(d.training[t].label.has_value());
    }
    // Validation carried over unchanged.
    REQUIRE(d.validation.size() == 2);
    CHECK(d.validation[0].image == list.validation[0].image);
    CHECK(d.validation[0].label == list.validation[0].label);
    CHECK(d.validation[1].image == list.validation[1].image);
    CHECK_FALSE(d.validation[1].label.has_value());
    // The fold's identity is recorded in the file.
    nlohmann::json j;
    std::ifstream(paths[f]) >> j;
    CHECK(j.at("fold").get<size_t>() == f);
    CHECK(j.at("folds").get<size_t>() == k);
    CHECK(j.at("seed").get<uint64_t>() == seed);
  }
  CHECK(tested.size() == 7);  // every training volume is tested exactly once over the folds

  // fold_datalist itself, for fold 1.
  const auto d1 = ev::fold_datalist(list, folds, 1);
  CHECK(d1.test.size() == folds[1].size());
  CHECK(d1.training.size() == 7 - folds[1].size());
  CHECK(d1.validation.size() == 2);
  CHECK_THROWS_AS(ev::write_fold_datalists(list, 8, seed, dir / "too_many"), ConfigError);
}

// ---------------------------------------------------------------------------------------------------------
// Fine-tuning schedule

namespace {

void check_phase(const hdssl::train::BackbonePhase& p, bool trainable, bool bn, double backbone_lr, double head_lr) {
  CHECK(p.trainable == trainable);
  CHECK(p.batchnorm_train == bn);
  CHECK(p.backbone_lr == doctest::Approx(backbone_lr).epsilon(1e-12));
  CHECK(p.head_lr == doctest::Approx(head_lr).epsilon(1e-12));
}

}  // namespace

TEST_CASE("finetune schedule, intended: frozen for 15,000 steps, then 3e-5 doubling every 300 to 3e-4") {
  const hdssl::train::FinetuneSchedule s{"finetune", "intended", 45000, 3e-4};
  CHECK(s.frozen_steps() == 15000);
  CHECK(s.doubling_every() == 300);
  for (int64_t step : {0, 1, 7000, 14999}) {
    CAPTURE(step);
    check_phase(s.at(step), false, false, 0.0, 3e-4);
  }
  // 0.1 x 3e-4 = 3e-5 from step 15,000; doubled at 15,300, 15,600, 15,900; 4.8e-4 would pass 3e-4,
  // so from 16,200 on it is capped at 3e-4.
  const std::vector<std::pair<int64_t, double>> expect{{15000, 3e-5},   {15299, 3e-5},   {15300, 6e-5},
                                                       {15599, 6e-5},   {15600, 1.2e-4}, {15900, 2.4e-4},
                                                       {16199, 2.4e-4}, {16200, 3e-4},   {44999, 3e-4}};
  for (const auto& e : expect) {
    const int64_t step = e.first;
    CAPTURE(step);
    check_phase(s.at(step), true, true, e.second, 3e-4);
  }
}

TEST_CASE("finetune schedule: reference, probe, scratch, and scaling with the step count") {
  const hdssl::train::FinetuneSchedule ref{"finetune", "reference", 45000, 3e-4};
  check_phase(ref.at(0), false, true, 0.0, 3e-4);
  check_phase(ref.at(14999), false, true, 0.0, 3e-4);
  check_phase(ref.at(15000), true, true, 6e-5, 6e-5);
  check_phase(ref.at(40000), true, true, 6e-5, 6e-5);

  const hdssl::train::FinetuneSchedule probe{"probe", "intended", 45000, 3e-4};
  for (int64_t step : {0, 15000, 16200, 44999}) {
    CAPTURE(step);
    check_phase(probe.at(step), false, false, 0.0, 3e-4);
  }
  const hdssl::train::FinetuneSchedule scratch{"scratch", "intended", 45000, 3e-4};
  for (int64_t step : {0, 100, 15000, 44999}) {
    CAPTURE(step);
    check_phase(scratch.at(step), true, true, 3e-4, 3e-4);
  }

  // 4,500 steps: 1,500 frozen, doubling every 30: 3e-5 at 1500..1529, 6e-5 at 1530, 2.4e-4 at 1590..1619,
  // 3e-4 from 1620.
  const hdssl::train::FinetuneSchedule small{"finetune", "intended", 4500, 3e-4};
  CHECK(small.frozen_steps() == 1500);
  CHECK(small.doubling_every() == 30);
  check_phase(small.at(1499), false, false, 0.0, 3e-4);
  check_phase(small.at(1500), true, true, 3e-5, 3e-4);
  check_phase(small.at(1529), true, true, 3e-5, 3e-4);
  check_phase(small.at(1530), true, true, 6e-5, 3e-4);
  check_phase(small.at(1619), true, true, 2.4e-4, 3e-4);
  check_phase(small.at(1620), true, true, 3e-4, 3e-4);

  // A different head lr scales every backbone lr: 1e-3 -> 1e-4 at the unfreeze, 2e-4 after one doubling.
  const hdssl::train::FinetuneSchedule other_lr{"finetune", "intended", 45000, 1e-3};
  check_phase(other_lr.at(15000), true, true, 1e-4, 1e-3);
  check_phase(other_lr.at(15300), true, true, 2e-4, 1e-3);
  // Very short runs still double at least every step: 10 steps -> round(3.33) = 3 frozen.
  const hdssl::train::FinetuneSchedule tiny{"finetune", "intended", 10, 3e-4};
  CHECK(tiny.frozen_steps() == 3);
  CHECK(tiny.doubling_every() == 1);
  check_phase(tiny.at(2), false, false, 0.0, 3e-4);
  check_phase(tiny.at(4), true, true, 6e-5, 3e-4);
}

// ---------------------------------------------------------------------------------------------------------
// Segmentation patches

namespace {

constexpr float kVolumeTag = 100000.0f;  // image value offset per volume index

/// A labelled volume whose image value at (x, y, z) is tag * index + flat index, so a patch's first
/// voxel tells which volume and which start it was cut from.
hdssl::sampling::LabelledVolume coded_volume(int64_t index, std::array<int64_t, 3> size,
                                             const std::vector<std::pair<int, std::array<int64_t, 6>>>& boxes) {
  const int64_t n = size[0] * size[1] * size[2];
  auto image = (torch::arange(n, torch::kFloat32) + kVolumeTag * static_cast<float>(index)).view({size[0], size[1], size[2]});
  auto classes = torch::zeros({size[0], size[1], size[2]}, torch::kUInt8);
  for (const auto& [c, b] : boxes) classes.slice(0, b[0], b[1]).slice(1, b[2], b[3]).slice(2, b[4], b[5]).fill_(c);
  return hdssl::sampling::LabelledVolume::make(image, classes, 2, "vol" + std::to_string(index));
}

struct Decoded {
  int64_t volume;
  std::array<int64_t, 3> start;
};

Decoded decode(const torch::Tensor& patch_image, const std::vector<hdssl::sampling::LabelledVolume>& vols) {
  const auto first = static_cast<int64_t>(patch_image[0][0][0].item<float>());
  const int64_t v = first / static_cast<int64_t>(kVolumeTag);
  const int64_t flat = first - v * static_cast<int64_t>(kVolumeTag);
  const int64_t Y = vols.at(static_cast<size_t>(v)).image.size(1), Z = vols[static_cast<size_t>(v)].image.size(2);
  return {v, {{flat / (Y * Z), (flat / Z) % Y, flat % Z}}};
}

}  // namespace

TEST_CASE("segmentation patches: shapes, crops, one-hot targets, foreground centres, determinism") {
  using hdssl::sampling::SegmentationPatchOptions;
  using hdssl::sampling::SegmentationPatchSampler;
  // Foreground boxes lie well inside the range of centres that need no clamping:
  // patch (16, 12, 8) -> centre x in [8, size_x - 8], y in [6, size_y - 6], z in [4, size_z - 4].
  std::vector<hdssl::sampling::LabelledVolume> vols;
  vols.push_back(coded_volume(0, {{40, 36, 30}}, {{1, {{10, 16, 8, 13, 6, 11}}}, {2, {{20, 29, 20, 29, 15, 23}}}}));
  vols.push_back(coded_volume(1, {{44, 36, 30}}, {{2, {{12, 20, 10, 18, 8, 14}}}}));  // class 1 absent
  SegmentationPatchOptions o;
  o.patch = {{16, 12, 8}};
  o.batch = 5;  // floor(0.5 * 5) = 2 foreground-centred patches
  o.foreground_fraction = 0.5;
  const SegmentationPatchSampler sampler(o, 1234);

  std::set<int64_t> volumes_seen, centre_classes;
  for (uint64_t b = 0; b < 12; ++b) {
    CAPTURE(b);
    const auto batch = sampler.sample(vols, 2, b);
    REQUIRE(batch.images.sizes() == torch::IntArrayRef({5, 1, 16, 12, 8}));
    REQUIRE(batch.targets.sizes() == torch::IntArrayRef({5, 2, 16, 12, 8}));
    CHECK((batch.images.scalar_type() == torch::kFloat32));
    CHECK((batch.targets.scalar_type() == torch::kFloat32));
    volumes_seen.insert(batch.volume);
    for (int64_t p = 0; p < 5; ++p) {
      CAPTURE(p);
      const auto d = decode(batch.images[p][0], vols);
      CHECK(d.volume == batch.volume);
      const auto& v = vols[static_cast<size_t>(d.volume)];
      for (int a = 0; a < 3; ++a) {
        CHECK(d.start[a] >= 0);
        CHECK(d.start[a] + o.patch[a] <= v.image.size(a));
      }
      auto crop = [&](const torch::Tensor& t) {
        return t.slice(0, d.start[0], d.start[0] + 16).slice(1, d.start[1], d.start[1] + 12).slice(2, d.start[2], d.start[2] + 8);
      };
      CHECK(batch.images[p][0].equal(crop(v.image)));
      const auto cls = crop(v.classes).to(torch::kLong);
      for (int64_t k = 0; k < 2; ++k) CHECK(batch.targets[p][k].equal((cls == k + 1).to(torch::kFloat32)));
      if (p < 2) {
        const int64_t centre = cls[8][6][4].item<int64_t>();
        CHECK(centre > 0);
        centre_classes.insert(centre);
        if (d.volume == 1) CHECK(centre == 2);
      }
    }
    // Same (seed, b), fresh sampler: the identical batch.
    const auto again = SegmentationPatchSampler(o, 1234).sample(vols, 2, b);
    CHECK(again.volume == batch.volume);
    CHECK(again.images.equal(batch.images));
    CHECK(again.targets.equal(batch.targets));
  }
  CHECK(volumes_seen.size() == 2);
  CHECK(centre_classes == std::set<int64_t>{1, 2});
  CHECK_FALSE(sampler.sample(vols, 2, 0).images.equal(sampler.sample(vols, 2, 1).images));
  CHECK_FALSE(SegmentationPatchSampler(o, 99).sample(vols, 2, 0).images.equal(sampler.sample(vols, 2, 0).images));
}

TEST_CASE("segmentation patches: border clamping, no foreground, and errors") {
  using hdssl::sampling::SegmentationPatchOptions;
  using hdssl::sampling::SegmentationPatchSampler;
  SegmentationPatchOptions o;
  o.patch = {{16, 12, 8}};
  o.batch = 3;
  o.foreground_fraction = 1.0;
  // One foreground voxel at (1, 35, 0) of a (20, 36, 10) volume: the centred start (1-8, 35-6, 0-4) is
  // clamped to (0, 24, 0), so the voxel sits at (1, 11, 0) of every patch.
  {
    std::vector<hdssl::sampling::LabelledVolume> vols{coded_volume(0, {{20, 36, 10}}, {{1, {{1, 2, 35, 36, 0, 1}}}})};
    const auto batch = SegmentationPatchSampler(o, 5).sample(vols, 2, 3);
    for (int64_t p = 0; p < 3; ++p) {
      const auto d = decode(batch.images[p][0], vols);
      CHECK(d.start == std::array<int64_t, 3>{{0, 24, 0}});
      CHECK(batch.targets[p][0][1][11][0].item<float>() == 1.0f);
      CHECK(batch.targets[p][0].sum().item<float>() == 1.0f);
      CHECK(batch.targets[p][1].sum().item<float>() == 0.0f);
    }
  }
  // No foreground at all: every patch is a uniform start, targets empty.
  {
    std::vector<hdssl::sampling::LabelledVolume> vols{coded_volume(0, {{20, 20, 10}}, {})};
    const auto batch = SegmentationPatchSampler(o, 5).sample(vols, 2, 0);
    CHECK(batch.images.sizes() == torch::IntArrayRef({3, 1, 16, 12, 8}));
    CHECK(batch.targets.sum().item<float>() == 0.0f);
  }
  std::vector<hdssl::sampling::LabelledVolume> small{coded_volume(0, {{20, 11, 10}}, {{1, {{5, 6, 5, 6, 5, 6}}}})};
  CHECK_THROWS_WITH_AS(SegmentationPatchSampler(o, 5).sample(small, 2, 0), doctest::Contains("vol0"), DataError);
  CHECK_THROWS_AS(SegmentationPatchSampler(o, 5).sample({}, 2, 0), DataError);
  SegmentationPatchOptions bad = o;
  bad.batch = 0;
  CHECK_THROWS_AS(SegmentationPatchSampler(bad, 5), ConfigError);
  bad = o;
  bad.foreground_fraction = 1.5;
  CHECK_THROWS_AS(SegmentationPatchSampler(bad, 5), ConfigError);
}
