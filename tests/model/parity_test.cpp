// Parity with the published PyTorch implementation: every *.safetensors fixture (shipped folder and the
// folders in HDSSL_PARITY_FIXTURES) holds reference weights, an input and the reference's outputs.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/heads.hpp"
#include "../test_support.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> safetensors_in(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

int64_t metadata_int(const hdssl::io::SafeTensors& st, const std::string& key) {
  auto it = st.metadata.find(key);
  REQUIRE_MESSAGE(it != st.metadata.end(), "fixture metadata lacks '" << key << "'");
  return std::stoll(it->second);
}

bool has_prefix(const hdssl::io::SafeTensors& st, const std::string& prefix) {
  return std::any_of(st.tensors.begin(), st.tensors.end(),
                     [&](const auto& kv) { return kv.first.compare(0, prefix.size(), prefix) == 0; });
}

struct Comparison {
  double worst = 0;
  std::string worst_key;
  int checked = 0;
  std::vector<std::string> failures;

  // max |ours - expected| relative to max |expected| (the README's measure).
  void check(const std::string& key, const torch::Tensor& ours, const torch::Tensor& expected, double tol) {
    ++checked;
    if (ours.sizes() != expected.sizes()) {
      failures.push_back(key + ": shape differs");
      return;
    }
    const double scale = std::max(expected.abs().max().item<double>(), 1e-30);
    const double rel = (ours.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs().max().item<double>() / scale;
    if (!(rel <= tol)) failures.push_back(key + ": relative error " + std::to_string(rel));
    if (rel > worst || worst_key.empty()) worst = rel, worst_key = key;
  }
};

Comparison check_fixture(const fs::path& file, torch::Device device) {
  auto st = hdssl::io::read_safetensors(file);
  for (auto& kv : st.tensors) kv.second = kv.second.to(device);
  const int64_t base = metadata_int(st, "base_channels");
  const int64_t levels = metadata_int(st, "num_scales");
  const torch::Tensor input = st.at("input");
  REQUIRE(input.dim() == 5);
  if (st.metadata.count("input_shape")) {
    std::ostringstream shape;
    shape << input.size(2) << "x" << input.size(3) << "x" << input.size(4);
    CHECK_MESSAGE(st.metadata.at("input_shape") == shape.str(), file << ": input_shape metadata vs input tensor");
  }
  auto make_backbone = [&] {
    hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(input.size(1), base, levels));
    fpn->to(device);
    hdssl::io::load_state(*fpn, st.tensors, "backbone.", /*strict=*/true, file.string());
    return fpn;
  };
  Comparison cmp;
  torch::NoGradGuard no_grad;

  auto backbone = make_backbone();
  backbone->eval();
  const auto pyramid = backbone->forward(input);
  for (int64_t i = 0; i < levels; ++i) {
    const std::string key = "expected.eval.pyramid." + std::to_string(i);
    if (st.contains(key)) cmp.check(key, pyramid[i], st.at(key), 1e-4);
  }
  if (st.contains("expected.eval.linear_logits")) {
    REQUIRE(has_prefix(st, "linear_head."));
    hdssl::nn::LinearHead head(hdssl::nn::HeadOptions(base, levels, metadata_int(st, "num_classes")));
    head->to(device);
    hdssl::io::load_state(*head, st.tensors, "linear_head.", true, file.string());
    head->eval();
    cmp.check("expected.eval.linear_logits", head->forward(pyramid), st.at("expected.eval.linear_logits"), 1e-4);
  }
  if (st.contains("expected.eval.nonlinear_logits")) {
    REQUIRE(has_prefix(st, "nonlinear_head."));
    hdssl::nn::NonLinearHead head(hdssl::nn::HeadOptions(base, levels, metadata_int(st, "num_classes")));
    head->to(device);
    hdssl::io::load_state(*head, st.tensors, "nonlinear_head.", true, file.string());
    head->eval();
    cmp.check("expected.eval.nonlinear_logits", head->forward(pyramid), st.at("expected.eval.nonlinear_logits"), 1e-4);
  }
  if (st.contains("expected.eval.gathered")) {
    const auto xyz = st.at("voxel_indices");
    REQUIRE(xyz.dim() == 2);
    REQUIRE(xyz.size(1) == 3);
    // The fixture's coordinates are for its single patch: prepend patch 0.
    const auto index = torch::cat({torch::zeros({xyz.size(0), 1}, xyz.options().dtype(torch::kInt64)), xyz.to(torch::kInt64)}, 1);
    cmp.check("expected.eval.gathered", hdssl::nn::gather_pyramid(pyramid, index), st.at("expected.eval.gathered"), 1e-4);
  }
  if (st.contains("expected.train.pyramid.0")) {
    REQUIRE(st.contains("train_input_scales"));
    const auto scales = st.at("train_input_scales").to(torch::kFloat64);
    std::vector<torch::Tensor> batch;
    for (int64_t s = 0; s < scales.size(0); ++s) batch.push_back(input * scales[s].item<double>());
    auto fresh = make_backbone();
    fresh->train();
    const auto train_pyramid = fresh->forward(torch::cat(batch, 0));
    for (int64_t i = 0; i < levels; ++i) {
      const std::string key = "expected.train.pyramid." + std::to_string(i);
      if (st.contains(key)) cmp.check(key, train_pyramid[i], st.at(key), 1e-3);
    }
  }
  return cmp;
}

}  // namespace

TEST_CASE("model parity with the reference implementation on every fixture") {
  std::vector<fs::path> files = safetensors_in(hdssl::test::fixtures_dir());
  CHECK_MESSAGE(!files.empty(), "no fixture in " << hdssl::test::fixtures_dir());
  if (const char* extra = std::getenv("HDSSL_PARITY_FIXTURES")) {
    std::stringstream folders(extra);
    std::string folder;
    while (std::getline(folders, folder, ':')) {
      if (folder.empty()) continue;
      const auto found = safetensors_in(folder);
      CHECK_MESSAGE(!found.empty(), "HDSSL_PARITY_FIXTURES folder '" << folder << "' holds no *.safetensors fixture");
      files.insert(files.end(), found.begin(), found.end());
    }
  }
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) {
    // The README's tolerances are for float32 arithmetic: keep cuDNN from using TF32 (10-bit mantissa).
    at::globalContext().setAllowTF32CuDNN(false);
    devices.push_back(torch::kCUDA);
  }
  for (const auto& device : devices)
    for (const auto& file : files) {
      CAPTURE(file);
      Comparison cmp;
      try {
        cmp = check_fixture(file, device);
      } catch (const std::exception& e) {
        FAIL_CHECK(file << ": " << e.what());
        continue;
      }
      std::cout << "parity " << file.filename().string() << (device.is_cuda() ? " (cuda)" : "") << ": " << cmp.checked
                << " outputs, worst relative error " << cmp.worst << " (" << cmp.worst_key << ")"
                << (cmp.failures.empty() ? "" : "  FAILED") << std::endl;
      CHECK_MESSAGE(cmp.checked > 0, file << " holds no expected.* output");
      for (const auto& f : cmp.failures) FAIL_CHECK(file.filename().string() << ": " << f);
    }
}
