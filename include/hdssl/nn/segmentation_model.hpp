#pragma once
// A backbone and a segmentation head (method.md 8): the model every downstream setup trains and
// hdssl-predict runs. State-dict keys: `backbone.*` (the reference FPN's names), `standardise.*` (the
// probes' per-channel feature standardisation, feature_standardisation.hpp; identity otherwise) and `head.*`.
//
// Backbone weights come from the files hdssl-pretrain writes (backbone.safetensors: FPN keys;
// pretrain.safetensors: `backbone.`-prefixed keys), from a pre-training output folder (its
// backbone.safetensors), or from converted published weights; the FPN's width and depth are read from
// the tensors themselves, so any of them loads without being told its size.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/feature_standardisation.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/heads.hpp"

namespace hdssl::nn {

enum class HeadKind { linear, nonlinear };

inline constexpr std::array<std::pair<const char*, HeadKind>, 2> kHeadNames{
    {{"linear", HeadKind::linear}, {"nonlinear", HeadKind::nonlinear}}};

struct SegmentationModelOptions {
  int64_t in_channels = 1;
  int64_t base_channels = 32;
  int64_t levels = 5;
  int64_t classes = 1;
  HeadKind head = HeadKind::linear;
};

class SegmentationModelImpl : public torch::nn::Module {
 public:
  explicit SegmentationModelImpl(const SegmentationModelOptions& o) : options(o) {
    backbone = register_module("backbone", FPN3d(FPN3dOptions(o.in_channels, o.base_channels, o.levels)));
    standardise = register_module("standardise", FeatureStandardisation(pyramid_channels(o.base_channels, o.levels)));
    const HeadOptions ho(o.base_channels, o.levels, o.classes);
    if (o.head == HeadKind::linear)
      linear = register_module("head", LinearHead(ho));
    else
      nonlinear = register_module("head", NonLinearHead(ho));
  }

  /// Logits (N, K, X, Y, Z). With `frozen_backbone` the backbone runs without autograd (its features are
  /// constants for the head: no backbone backward) in whatever train/eval mode it was left in.
  torch::Tensor forward(const torch::Tensor& x, bool frozen_backbone = false) {
    std::vector<torch::Tensor> pyramid;
    if (frozen_backbone) {
      torch::NoGradGuard no_grad;
      pyramid = backbone->forward(x);
    } else {
      pyramid = backbone->forward(x);
    }
    return head_forward(pyramid);
  }

  torch::Tensor head_forward(const std::vector<torch::Tensor>& pyramid) {
    const auto p = standardise->forward(pyramid);
    return linear ? linear->forward(p) : nonlinear->forward(p);
  }

  std::vector<torch::Tensor> head_parameters() const {
    return linear ? linear->parameters() : nonlinear->parameters();
  }
  torch::nn::Module& head() { return linear ? static_cast<torch::nn::Module&>(*linear) : *nonlinear; }

  SegmentationModelOptions options;
  FPN3d backbone{nullptr};
  FeatureStandardisation standardise{nullptr};
  LinearHead linear{nullptr};
  NonLinearHead nonlinear{nullptr};
};
TORCH_MODULE(SegmentationModel);

/// Backbone weights as found in a file, with the FPN's size read from the tensors.
struct BackboneWeights {
  io::NamedTensors tensors;  ///< FPN keys without prefix
  int64_t in_channels = 0, base_channels = 0, levels = 0;
  std::filesystem::path file;
};

/// Reads backbone weights from a safetensors file or a pre-training output folder (see the top of this file).
inline BackboneWeights read_backbone_weights(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "backbone.safetensors";
  const auto st = io::read_safetensors(file);
  BackboneWeights w;
  w.file = file;
  // Plain FPN keys, or one prefix in front of them (pretrain.safetensors, a segmentation model file).
  std::string prefix;
  for (const auto& kv : st.tensors) {
    const auto pos = kv.first.find("first_conv.weight");
    if (pos != std::string::npos && pos + 17 == kv.first.size()) {
      prefix = kv.first.substr(0, pos);
      break;
    }
  }
  int64_t max_left = -1;
  const std::regex left("left_blocks\\.([0-9]+)\\..*");
  for (const auto& kv : st.tensors) {
    if (kv.first.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string key = kv.first.substr(prefix.size());
    if (prefix.empty() && key.find('.') != std::string::npos) {
      const std::string top = key.substr(0, key.find('.'));
      static const std::set<std::string> fpn = {"first_conv", "left_blocks", "down_blocks", "bottom_block",
                                                "up_blocks", "skip_blocks", "right_blocks"};
      if (!fpn.count(top)) continue;  // another module of the same file
    }
    std::smatch m;
    if (std::regex_match(key, m, left)) max_left = std::max<int64_t>(max_left, std::stoll(m[1]));
    if (key == "first_conv.weight") {
      if (kv.second.dim() != 5)
        throw IoError("weights '" + file.string() + "': first_conv.weight is not a 3-D convolution kernel");
      w.base_channels = kv.second.size(0);
      w.in_channels = kv.second.size(1);
    }
    w.tensors.emplace_back(key, kv.second);
  }
  if (w.base_channels == 0 || max_left < 0)
    throw IoError("weights '" + file.string() + "': no FPN backbone in it (no first_conv.weight / left_blocks.* keys)");
  w.levels = max_left + 2;
  return w;
}

}  // namespace hdssl::nn
