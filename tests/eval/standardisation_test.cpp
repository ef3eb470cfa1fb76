// The probes' feature standardisation: moments against hand-computed values, standardised features with
// zero mean and unit variance, a linear head on standardised features equal to a linear head with the
// affine map folded into its weights by hand (the same function family), and the buffers surviving the
// model file.
#include <doctest/doctest.h>

#include <hdssl/eval/segmenter.hpp>
#include <hdssl/nn/feature_standardisation.hpp>
#include <hdssl/nn/segmentation_model.hpp>

#include <filesystem>
#include <vector>

namespace nn = hdssl::nn;

TEST_CASE("PyramidMoments: channel mean and population std over every batch, by hand") {
  // Level 0, 2 channels: batch 1 holds channel 0 = 1 and channel 1 = 5 (8 voxels each), batch 2 holds
  // channel 0 = 3 (8 voxels) and channel 1 = 5: mean 2 / 5, std 1 / 0. Level 1 (1 channel, 1 voxel per
  // batch): values 0 and 4, mean 2, std 2.
  nn::PyramidMoments m;
  auto a0 = torch::empty({1, 2, 2, 2, 2});
  a0.select(1, 0).fill_(1);
  a0.select(1, 1).fill_(5);
  auto b0 = a0.clone();
  b0.select(1, 0).fill_(3);
  m.add({a0, torch::zeros({1, 1, 1, 1, 1})});
  m.add({b0, torch::full({1, 1, 1, 1, 1}, 4.0)});
  const auto mean = m.means(), sd = m.stds();
  REQUIRE(mean.size() == 2);
  CHECK(mean[0][0].item<double>() == doctest::Approx(2));
  CHECK(mean[0][1].item<double>() == doctest::Approx(5));
  CHECK(sd[0][0].item<double>() == doctest::Approx(1));
  CHECK(sd[0][1].item<double>() == doctest::Approx(0).epsilon(1e-12));
  CHECK(mean[1][0].item<double>() == doctest::Approx(2));
  CHECK(sd[1][0].item<double>() == doctest::Approx(2));

  // The constant channel is centred, not divided by ~0.
  nn::FeatureStandardisation s(std::vector<int64_t>{2, 1});
  CHECK(s->is_identity());
  s->set(mean, sd);
  CHECK_FALSE(s->is_identity());
  const auto out = s->forward({b0, torch::full({1, 1, 1, 1, 1}, 4.0)});
  CHECK(out[0].select(1, 0).eq(1).all().item<bool>());  // (3 - 2) / 1
  CHECK(out[0].select(1, 1).eq(0).all().item<bool>());  // (5 - 5) * 1
  CHECK(out[1].item<double>() == doctest::Approx(1));   // (4 - 2) / 2
  CHECK_THROWS_AS(s->forward({b0}), hdssl::DataError);
}

TEST_CASE("a random backbone's pyramid comes out of the standardisation with zero mean and unit variance") {
  torch::manual_seed(3);
  nn::SegmentationModel model(nn::SegmentationModelOptions{1, 4, 3, 2, nn::HeadKind::linear});
  model->eval();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> inputs{torch::rand({2, 1, 16, 16, 8}), torch::rand({2, 1, 16, 16, 8})};
  nn::PyramidMoments m;
  for (const auto& x : inputs) m.add(model->backbone->forward(x));
  model->standardise->set(m.means(), m.stds());
  const auto a = model->standardise->forward(model->backbone->forward(inputs[0]));
  const auto b = model->standardise->forward(model->backbone->forward(inputs[1]));
  for (size_t i = 0; i < a.size(); ++i) {
    const auto all = torch::cat({a[i], b[i]}, 0).transpose(0, 1).reshape({a[i].size(1), -1}).to(torch::kFloat64);
    CHECK(all.mean(1).abs().max().item<double>() < 1e-5);
    CHECK((all.std(1, /*unbiased=*/false) - 1).abs().max().item<double>() < 1e-4);
  }
}

TEST_CASE("a linear head on standardised features equals one with the affine map folded into its weights") {
  torch::manual_seed(5);
  const int64_t K = 3;
  nn::SegmentationModel model(nn::SegmentationModelOptions{1, 4, 3, K, nn::HeadKind::linear});
  model->eval();
  torch::NoGradGuard ng;
  const auto x = torch::rand({1, 1, 16, 16, 8});
  const auto channels = nn::pyramid_channels(4, 3);
  std::vector<torch::Tensor> shift, sd;
  for (const auto c : channels) {
    shift.push_back(torch::randn({c}));
    sd.push_back(torch::rand({c}) + 0.5);
  }
  model->standardise->set(shift, sd);
  const auto with = model->forward(x);

  // Folded by hand into a second, unstandardised model: W'_i = W_i / sd_i; every level's offset
  // -sum_c W'_i[k, c] shift_i[c] is a constant per class and goes into the level-0 bias.
  nn::SegmentationModel folded(nn::SegmentationModelOptions{1, 4, 3, K, nn::HeadKind::linear});
  folded->eval();
  for (const auto& p : model->backbone->named_parameters()) folded->backbone->named_parameters()[p.key()].copy_(p.value());
  for (const auto& b : model->backbone->named_buffers()) folded->backbone->named_buffers()[b.key()].copy_(b.value());
  auto src = model->linear->named_parameters(), dst = folded->linear->named_parameters();
  torch::Tensor offset = torch::zeros({K});
  for (size_t i = 0; i < channels.size(); ++i) {
    const auto key = "layers." + std::to_string(i) + ".weight";
    const auto w = src[key].reshape({K, channels[i]}) / sd[i].reshape({1, -1});
    dst[key].copy_(w.reshape(src[key].sizes()));
    offset -= (w * shift[i].reshape({1, -1})).sum(1);
  }
  dst["layers.0.bias"].copy_(src["layers.0.bias"] + offset);
  CHECK(folded->standardise->is_identity());
  const auto without = folded->forward(x);
  CHECK((with - without).abs().max().item<double>() < 1e-4 * std::max(1.0, with.abs().max().item<double>()));
}

TEST_CASE("the standardisation travels with the model file") {
  torch::manual_seed(7);
  nn::SegmentationModel model(nn::SegmentationModelOptions{1, 4, 2, 2, nn::HeadKind::nonlinear});
  std::vector<torch::Tensor> shift{torch::randn({4}), torch::randn({8})}, sd{torch::rand({4}) + 0.5, torch::rand({8}) + 0.5};
  model->standardise->set(shift, sd);
  hdssl::eval::ModelRecord record;
  record.model = model->options;
  record.classes = hdssl::eval::ClassMap::from_values({1, 2});
  const auto file = std::filesystem::temp_directory_path() / "hdssl_standardisation_model.safetensors";
  hdssl::eval::save_segmentation_model(file, model, record);
  auto loaded = hdssl::eval::load_segmentation_model(file, torch::kCPU).first;
  std::filesystem::remove(file);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(torch::equal(loaded->standardise->shift[i], model->standardise->shift[i]));
    CHECK(torch::equal(loaded->standardise->scale[i], model->standardise->scale[i]));
  }
  model->eval();
  loaded->eval();
  torch::NoGradGuard ng;
  const auto x = torch::rand({1, 1, 8, 8, 8});
  CHECK(torch::allclose(model->forward(x), loaded->forward(x)));
}
