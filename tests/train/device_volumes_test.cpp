// Cropping from volumes kept on the step's device (--crop-device cuda): the same views as the sampler's
// CPU crops, bit for bit, through uploads and least-recently-used evictions; misuse refused by name.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/sampling/pair_sampler.hpp"
#include "hdssl/train/device_volumes.hpp"
#include "hdssl/train/run_pretraining.hpp"
#include "train_test_support.hpp"

namespace {

using hdssl::sampling::PairBatch;
using hdssl::sampling::PairSampler;
using hdssl::sampling::SampleSource;
using Sources = std::vector<std::shared_ptr<const SampleSource>>;

Sources make_sources(const PairSampler& sampler) {
  torch::manual_seed(11);
  Sources s;
  const std::vector<std::vector<int64_t>> shapes = {{20, 17, 12}, {16, 16, 9}, {24, 12, 10}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto image = torch::rand(shapes[i]);
    const auto body = image > 0.2;
    s.push_back(std::make_shared<const SampleSource>(sampler.prepare(image, body, "v" + std::to_string(i))));
  }
  return s;
}

std::vector<torch::Tensor> images_of(const Sources& s) {
  std::vector<torch::Tensor> v;
  for (const auto& x : s) v.push_back(x ? x->image : torch::Tensor());
  return v;
}

std::vector<const SampleSource*> pointers(const Sources& s) {
  std::vector<const SampleSource*> p;
  for (const auto& x : s) p.push_back(x.get());
  return p;
}

double bytes_of(const SampleSource& s) { return static_cast<double>(s.image.numel() * s.image.element_size()); }

}  // namespace

TEST_CASE("device crops equal the sampler's CPU crops bit for bit, through uploads and evictions") {
  hdssl::sampling::PairSamplerOptions o;
  o.patch = {8, 6, 4};
  o.pairs = 6;
  o.max_positives = 16;
  o.volumes_per_batch = 2;
  const PairSampler sampler(o, 5);
  const Sources sources = make_sources(sampler);
  const auto ptrs = pointers(sources);
  const auto images = images_of(sources);

  SUBCASE("room for every volume: each uploaded once") {
    hdssl::train::DeviceVolumes volumes(torch::kCPU, 1e9);
    for (uint64_t b = 0; b < 12; ++b) {
      PairBatch cpu, dev;
      sampler.sample_into(cpu, ptrs, b);
      sampler.sample_into(dev, ptrs, b, /*crop=*/false);
      CHECK_FALSE(dev.view1.defined());
      REQUIRE(torch::equal(dev.starts1, cpu.starts1));
      REQUIRE(torch::equal(dev.positives2, cpu.positives2));
      const auto [v1, v2] = volumes.crop(dev, images, o.patch);
      CHECK(v1.sizes() == cpu.view1.sizes());
      CHECK(torch::equal(v1, cpu.view1));
      CHECK(torch::equal(v2, cpu.view2));
    }
    CHECK(volumes.uploads() == 3);
    CHECK(volumes.evictions() == 0);
  }

  SUBCASE("room for two volumes: the least recently used goes, what the batch needs stays") {
    const double budget = bytes_of(*sources[0]) + bytes_of(*sources[2]) + 1;  // the two largest
    hdssl::train::DeviceVolumes volumes(torch::kCPU, budget);
    for (uint64_t b = 0; b < 20; ++b) {
      PairBatch cpu, dev;
      sampler.sample_into(cpu, ptrs, b);
      sampler.sample_into(dev, ptrs, b, false);
      const auto [v1, v2] = volumes.crop(dev, images, o.patch);
      CHECK(torch::equal(v1, cpu.view1));
      CHECK(torch::equal(v2, cpu.view2));
      CHECK(volumes.resident_bytes() <= budget);
      CHECK(volumes.size() <= 2);
    }
    CHECK(volumes.evictions() > 0);  // two volumes per batch out of three: some batch needed a third
    CHECK(volumes.uploads() == 2 + volumes.evictions());
  }

  SUBCASE("a budget below one batch's volumes: they are kept for the batch anyway") {
    hdssl::train::DeviceVolumes volumes(torch::kCPU, 1);
    PairBatch cpu, dev;
    sampler.sample_into(cpu, ptrs, 0);
    sampler.sample_into(dev, ptrs, 0, false);
    const auto [v1, v2] = volumes.crop(dev, images, o.patch);
    CHECK(torch::equal(v1, cpu.view1));
    CHECK(volumes.size() == 2);
  }

  SUBCASE("a volume the batch needs but was not given is named") {
    hdssl::train::DeviceVolumes volumes(torch::kCPU, 1e9);
    PairBatch dev;
    sampler.sample_into(dev, ptrs, 0, false);
    Sources missing = sources;
    missing[static_cast<size_t>(dev.volume_index[0].item<int64_t>())].reset();
    CHECK_THROWS_WITH_AS(volumes.crop(dev, images_of(missing), o.patch), doctest::Contains("was not provided"),
                         hdssl::DataError);
  }
}

TEST_CASE("crop_device cuda needs the views augmented on the GPU: refused otherwise, naming the option") {
  hdssl::test::TempDir tmp;
  auto c = hdssl::test::tiny_config(tmp / "missing", tmp / "out", tmp / "cache");
  c.device = "cpu";
  c.crop_device = "cuda";
  std::ostringstream console;
  CHECK_THROWS_WITH_AS(hdssl::train::run_pretraining(c, console), doctest::Contains("option 'crop_device'"),
                       hdssl::ConfigError);
  c.augment_device = "cuda";  // and that one needs a CUDA run
  CHECK_THROWS_WITH_AS(hdssl::train::run_pretraining(c, console), doctest::Contains("option 'augment_device'"),
                       hdssl::ConfigError);
}
