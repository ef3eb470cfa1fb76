#pragma once
// The voxel representation of a pre-trained backbone over whole volumes (what hdssl-embed writes):
//   balanced      each chosen level through its balancing projection (c_i -> W, the pre-training's), at the
//                 voxel's floor(v / 2^i) position, concatenated finest first: the representation the
//                 InfoNCE loss saw (levels x W channels; 160 for the hdssl preset);
//   concatenated  the raw levels at floor(v / 2^i), concatenated (sum of c_i channels; 1008 for vox2vec).
// The 1x1x1 projection commutes with the nearest upsampling, so each level is projected at its own
// resolution and then upsampled: the cost is that of the coarse maps, not of the full-resolution stack.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/projection.hpp"
#include "hdssl/nn/segmentation_model.hpp"

namespace hdssl::eval {

class Embedder {
 public:
  /// `weights`: as nn::read_backbone_weights. Balanced needs the balancing projections: they are read from
  /// the file itself when it holds `balancing.*` (pretrain.safetensors) or from pretrain.safetensors beside
  /// it / inside the folder. `levels`: the levels to keep (empty = all).
  Embedder(const std::filesystem::path& weights, bool balanced, std::vector<int64_t> levels)
      : balanced_(balanced), levels_(std::move(levels)) {
    const auto w = nn::read_backbone_weights(weights);
    backbone_ = nn::FPN3d(nn::FPN3dOptions(w.in_channels, w.base_channels, w.levels));
    io::load_state(*backbone_, w.tensors, "", true, "weights '" + w.file.string() + "'");
    backbone_->eval();
    if (levels_.empty())
      for (int64_t i = 0; i < w.levels; ++i) levels_.push_back(i);
    for (int64_t l : levels_)
      if (l < 0 || l >= w.levels)
        throw ConfigError("embedding levels: level " + std::to_string(l) + " does not exist (the backbone has " +
                          std::to_string(w.levels) + " levels, 0 = finest)");
    if (balanced_) load_balancing(w.file, weights);
  }

  int64_t channels() const {
    int64_t n = 0;
    const auto c = backbone_->channels();
    for (int64_t l : levels_) n += balanced_ ? width_ : c[static_cast<size_t>(l)];
    return n;
  }
  int64_t in_channels() const { return backbone_->options.in_channels(); }

  void to(const torch::Device& d) {
    backbone_->to(d);
    if (balancing_) balancing_->to(d);
  }

  /// (B, C, X, Y, Z) -> (B, channels(), X, Y, Z).
  torch::Tensor forward(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    const auto pyramid = backbone_->forward(x);
    std::vector<torch::Tensor> parts;
    for (int64_t l : levels_) {
      torch::Tensor f = pyramid[static_cast<size_t>(l)];
      if (balanced_) {
        // (B, c, x, y, z) -> (B x y z, c) -> projected -> back to (B, W, x, y, z)
        const auto moved = f.permute({0, 2, 3, 4, 1});
        const auto shape = moved.sizes().vec();
        auto p = balancing_->project_level(static_cast<size_t>(l), moved.reshape({-1, shape[4]}));
        f = p.reshape({shape[0], shape[1], shape[2], shape[3], width_}).permute({0, 4, 1, 2, 3});
      }
      if (l > 0) {
        const double s = static_cast<double>(int64_t{1} << l);
        f = torch::nn::functional::interpolate(
            f, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{s, s, s}).mode(torch::kNearest));
        f = f.slice(2, 0, x.size(2)).slice(3, 0, x.size(3)).slice(4, 0, x.size(4));
      }
      parts.push_back(f);
    }
    return torch::cat(parts, 1);
  }

 private:
  void load_balancing(const std::filesystem::path& backbone_file, const std::filesystem::path& given) {
    std::vector<std::filesystem::path> candidates = {backbone_file, backbone_file.parent_path() / "pretrain.safetensors"};
    std::error_code ec;
    if (std::filesystem::is_directory(given, ec)) candidates.push_back(given / "pretrain.safetensors");
    for (const auto& f : candidates) {
      if (!std::filesystem::exists(f, ec)) continue;
      const auto st = io::read_safetensors(f);
      bool frozen = false, any = false;
      for (const auto& kv : st.tensors) {
        if (kv.first.rfind("balancing.", 0) != 0) continue;
        any = true;
        if (kv.first.rfind("balancing.frozen.", 0) == 0) frozen = true;
        if (kv.first == "balancing.layers.0.weight" || kv.first == "balancing.frozen.0.weight") width_ = kv.second.size(0);
      }
      if (!any) continue;
      balancing_ = nn::BalancedProjection(nn::BalancedProjectionOptions(backbone_->channels(), width_).frozen(frozen));
      io::load_state(*balancing_, st.tensors, "balancing.", true, "balancing projections in '" + f.string() + "'");
      return;
    }
    throw IoError("weights '" + backbone_file.string() + "': the balanced representation needs the balancing projections "
                  "(pretrain.safetensors of the run, beside backbone.safetensors); use --representation concatenated "
                  "for the raw levels, or a balanced preset's pretrain.safetensors");
  }

  nn::FPN3d backbone_{nullptr};
  nn::BalancedProjection balancing_{nullptr};
  bool balanced_;
  std::vector<int64_t> levels_;
  int64_t width_ = 0;
};

}  // namespace hdssl::eval
