#pragma once
// Heads on top of the FPN pyramid: reconstruction (pre-training, method.md section 4) and the
// downstream segmentation heads (section 8). Sub-module names follow the reference state dicts
// (`layers.{i}` for the linear head; bottom_block / up_blocks.{k}.0 / skip_blocks.{k} / right_blocks.{k}
// / final_block for the non-linear head).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/nn/blocks.hpp"
#include "hdssl/nn/fpn.hpp"

namespace hdssl::nn {

namespace detail {
inline void check_pyramid(const std::vector<torch::Tensor>& pyramid, const std::vector<int64_t>& channels,
                          const char* who) {
  if (pyramid.size() != channels.size())
    throw DataError(std::string(who) + ": expected a pyramid of " + std::to_string(channels.size()) +
                    " levels, got " + std::to_string(pyramid.size()));
  for (size_t i = 0; i < pyramid.size(); ++i)
    if (pyramid[i].dim() != 5 || pyramid[i].size(1) != channels[i])
      throw DataError(std::string(who) + ": pyramid level " + std::to_string(i) + " must be (N, " +
                      std::to_string(channels[i]) + ", X, Y, Z)");
}
}  // namespace detail

struct HeadOptions {
  HeadOptions(int64_t base_channels, int64_t num_levels, int64_t num_classes)
      : base_channels_(base_channels), num_levels_(num_levels), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, base_channels);
  TORCH_ARG(int64_t, num_levels);
  /// K foreground classes (no background channel: per-class sigmoid).
  TORCH_ARG(int64_t, num_classes);
};

/// Linear probe: per level a 1x1x1 conv c_i -> K (bias on level 0 only: one bias suffices for a sum),
/// coarse-to-fine nearest x2 upsampling, crop to the finer level, sum.
class LinearHeadImpl : public torch::nn::Module {
 public:
  explicit LinearHeadImpl(const HeadOptions& options_) : options(options_) {
    if (options.num_classes() < 1) throw ConfigError("LinearHead: num_classes must be >= 1");
    layers = register_module("layers", torch::nn::ModuleList());
    const auto c = pyramid_channels(options.base_channels(), options.num_levels());
    for (size_t i = 0; i < c.size(); ++i) {
      convs.push_back(torch::nn::Conv3d(torch::nn::Conv3dOptions(c[i], options.num_classes(), 1).bias(i == 0)));
      layers->push_back(convs.back());
    }
  }

  torch::Tensor forward(const std::vector<torch::Tensor>& pyramid) {
    detail::check_pyramid(pyramid, pyramid_channels(options.base_channels(), options.num_levels()), "LinearHead");
    const int64_t S = options.num_levels();
    torch::Tensor x = convs[S - 1]->forward(pyramid[S - 1]);
    for (int64_t i = S - 2; i >= 0; --i)
      x = crop_to(upsample_nearest_x2(x), pyramid[i]) + convs[i]->forward(pyramid[i]);
    return x;
  }

  static torch::Tensor upsample_nearest_x2(const torch::Tensor& x) {
    return torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0, 2.0}).mode(
               torch::kNearest));
  }

  HeadOptions options;
  torch::nn::ModuleList layers{nullptr};

 private:
  std::vector<torch::nn::Conv3d> convs;
};
TORCH_MODULE(LinearHead);

/// Non-linear probe: an FPN-shaped decoder with 1x1x1 kernels (ResBlock(k=1) on the coarsest level,
/// then per finer level 1x1 up conv, nearest x2, crop, + 1x1 skip conv of p_i, ResBlock(k=1)), and a
/// final 1x1x1 conv c_0 -> K.
class NonLinearHeadImpl : public torch::nn::Module {
 public:
  explicit NonLinearHeadImpl(const HeadOptions& options_) : options(options_) {
    using namespace torch::nn;
    if (options.num_classes() < 1) throw ConfigError("NonLinearHead: num_classes must be >= 1");
    const auto c = pyramid_channels(options.base_channels(), options.num_levels());
    const int64_t S = options.num_levels();
    bottom_block = register_module("bottom_block", ResBlock(ResBlockOptions(c[S - 1]).kernel_size(1)));
    up_blocks = register_module("up_blocks", ModuleList());
    skip_blocks = register_module("skip_blocks", ModuleList());
    right_blocks = register_module("right_blocks", ModuleList());
    for (int64_t i = S - 2; i >= 0; --i) {
      up.push_back(Sequential(Conv3d(Conv3dOptions(c[i + 1], c[i], 1)), nearest_x2()));
      up_blocks->push_back(up.back());
      skip.push_back(Conv3d(Conv3dOptions(c[i], c[i], 1)));
      skip_blocks->push_back(skip.back());
      right.push_back(ResBlock(ResBlockOptions(c[i]).kernel_size(1)));
      right_blocks->push_back(right.back());
    }
    final_block = register_module("final_block", Conv3d(Conv3dOptions(c[0], options.num_classes(), 1)));
  }

  torch::Tensor forward(const std::vector<torch::Tensor>& pyramid) {
    detail::check_pyramid(pyramid, pyramid_channels(options.base_channels(), options.num_levels()),
                          "NonLinearHead");
    const int64_t S = options.num_levels();
    torch::Tensor x = bottom_block->forward(pyramid[S - 1]);
    for (int64_t k = 0; k + 1 < S; ++k) {
      const int64_t i = S - 2 - k;
      x = right[k]->forward(crop_to(up[k]->forward(x), pyramid[i]) + skip[k]->forward(pyramid[i]));
    }
    return final_block->forward(x);
  }

  HeadOptions options;
  ResBlock bottom_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr}, skip_blocks{nullptr}, right_blocks{nullptr};
  torch::nn::Conv3d final_block{nullptr};

 private:
  std::vector<torch::nn::Sequential> up;
  std::vector<torch::nn::Conv3d> skip;
  std::vector<ResBlock> right;
};
TORCH_MODULE(NonLinearHead);

/// Pre-training reconstruction head: one 1x1x1 conv c_0 -> 1 (with bias) on the finest level p_0,
/// before any balancing; trained with MSE against the un-augmented crop.
class ReconstructionHeadImpl : public torch::nn::Module {
 public:
  explicit ReconstructionHeadImpl(int64_t base_channels, int64_t out_channels = 1) {
    conv = register_module("conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(base_channels, out_channels, 1)));
  }
  torch::Tensor forward(const torch::Tensor& p0) {
    if (p0.dim() != 5 || p0.size(1) != conv->options.in_channels())
      throw DataError("ReconstructionHead: p_0 must be (N, " + std::to_string(conv->options.in_channels()) +
                      ", X, Y, Z)");
    return conv->forward(p0);
  }
  torch::nn::Conv3d conv{nullptr};
};
TORCH_MODULE(ReconstructionHead);

}  // namespace hdssl::nn
