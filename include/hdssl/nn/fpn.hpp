#pragma once
// FPN3d: the 3-D U-Net backbone that returns every decoder level, finest first (method.md section 2).
//
// Sub-modules are registered under the reference's state-dict names (first_conv, left_blocks.{i},
// down_blocks.{i}.1, bottom_block, up_blocks.{k}.0, skip_blocks.{k}, right_blocks.{k}; k = 0 is the
// deepest decoder step), so PyTorch weights load by name and exported weights load into PyTorch.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/nn/blocks.hpp"

namespace hdssl::nn {

struct FPN3dOptions {
  FPN3dOptions() = default;
  FPN3dOptions(int64_t in_channels, int64_t base_channels, int64_t num_levels)
      : in_channels_(in_channels), base_channels_(base_channels), num_levels_(num_levels) {}
  TORCH_ARG(int64_t, in_channels) = 1;
  /// c_0; level i has base_channels * 2^i channels.
  TORCH_ARG(int64_t, base_channels) = 16;
  /// S, the number of pyramid levels (the reference's num_scales).
  TORCH_ARG(int64_t, num_levels) = 6;
};

/// Channels of every level, finest first: base * 2^i for i < levels.
inline std::vector<int64_t> pyramid_channels(int64_t base_channels, int64_t num_levels) {
  std::vector<int64_t> c;
  for (int64_t i = 0; i < num_levels; ++i) c.push_back(base_channels << i);
  return c;
}

class FPN3dImpl : public torch::nn::Module {
 public:
  explicit FPN3dImpl(const FPN3dOptions& options_ = {}) : options(options_) { reset(); }

  void reset() {
    using namespace torch::nn;
    const int64_t S = options.num_levels();
    if (options.in_channels() < 1 || options.base_channels() < 1 || S < 2 || S > 12)
      throw ConfigError("FPN3d: needs in_channels >= 1, base_channels >= 1 and 2 <= num_levels <= 12 (got " +
                        std::to_string(options.in_channels()) + ", " + std::to_string(options.base_channels()) +
                        ", " + std::to_string(S) + ")");
    const auto c = channels();
    left.clear(), right.clear(), down.clear(), up.clear(), skip.clear();
    first_conv = register_module("first_conv", Conv3d(Conv3dOptions(options.in_channels(), c[0], 3).padding(1)));
    left_blocks = register_module("left_blocks", ModuleList());
    down_blocks = register_module("down_blocks", ModuleList());
    for (int64_t i = 0; i + 1 < S; ++i) {
      left.push_back(Stack(StackOptions(c[i])));
      left_blocks->push_back(left.back());
      // Pool first, then widen: the 1x1 conv runs on 8x fewer voxels (index 1 as in the reference).
      down.push_back(Sequential(MaxPool3d(MaxPool3dOptions(2).stride(2).ceil_mode(true)),
                                Conv3d(Conv3dOptions(c[i], c[i + 1], 1))));
      down_blocks->push_back(down.back());
    }
    bottom_block = register_module("bottom_block", Stack(StackOptions(c[S - 1])));
    up_blocks = register_module("up_blocks", ModuleList());
    skip_blocks = register_module("skip_blocks", ModuleList());
    right_blocks = register_module("right_blocks", ModuleList());
    for (int64_t i = S - 2; i >= 0; --i) {  // k = S - 2 - i: deepest decoder step first
      up.push_back(Sequential(Conv3d(Conv3dOptions(c[i + 1], c[i], 1)), nearest_x2()));
      up_blocks->push_back(up.back());
      skip.push_back(Conv3d(Conv3dOptions(c[i], c[i], 1)));
      skip_blocks->push_back(skip.back());
      right.push_back(Stack(StackOptions(c[i])));
      right_blocks->push_back(right.back());
    }
  }

  std::vector<int64_t> channels() const { return pyramid_channels(options.base_channels(), options.num_levels()); }

  /// x: (N, in_channels, X, Y, Z), any sizes >= 1. Returns [p_0, ..., p_{S-1}], p_i of size ceil(X / 2^i)...
  std::vector<torch::Tensor> forward(const torch::Tensor& input) {
    if (input.dim() != 5 || input.size(1) != options.in_channels())
      throw DataError("FPN3d: input must be (N, " + std::to_string(options.in_channels()) +
                      ", X, Y, Z), got sizes " + sizes_string(input));
    const int64_t S = options.num_levels();
    std::vector<torch::Tensor> skips;
    torch::Tensor x = first_conv->forward(input);
    for (int64_t i = 0; i + 1 < S; ++i) {
      skips.push_back(left[i]->forward(x));
      x = down[i]->forward(skips.back());
    }
    std::vector<torch::Tensor> pyramid(S);
    pyramid[S - 1] = bottom_block->forward(x);
    for (int64_t k = 0; k + 1 < S; ++k) {
      const int64_t i = S - 2 - k;
      torch::Tensor u = crop_to(up[k]->forward(pyramid[i + 1]), skips[i]);
      pyramid[i] = right[k]->forward(u + skip[k]->forward(skips[i]));
    }
    return pyramid;
  }

  FPN3dOptions options;
  torch::nn::Conv3d first_conv{nullptr};
  torch::nn::ModuleList left_blocks{nullptr}, down_blocks{nullptr}, up_blocks{nullptr}, skip_blocks{nullptr},
      right_blocks{nullptr};
  Stack bottom_block{nullptr};

 private:
  static std::string sizes_string(const torch::Tensor& t) {
    std::string s = "(";
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
    return s + ")";
  }
  // Typed handles to the modules registered in the ModuleLists above (same objects).
  std::vector<Stack> left, right;
  std::vector<torch::nn::Sequential> down, up;
  std::vector<torch::nn::Conv3d> skip;
};
TORCH_MODULE(FPN3d);

}  // namespace hdssl::nn
