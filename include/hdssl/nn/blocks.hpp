#pragma once
// Residual building blocks of the FPN backbone and of the non-linear head (method.md section 2).
//
// Sub-module names follow the reference state dict: a ResBlock holds `layers.{0..5}` (BN, ReLU, Conv,
// BN, ReLU, Conv) and a Stack holds `layers.{0,1}` (two ResBlocks), so that
// `left_blocks.0.layers.1.layers.3.running_var` names the same tensor in PyTorch and here.
#include <torch/torch.h>

#include <cstdint>

namespace hdssl::nn {

struct ResBlockOptions {
  explicit ResBlockOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// 3 in the backbone; 1 in the non-linear probing head (padding follows: k / 2).
  TORCH_ARG(int64_t, kernel_size) = 3;
};

/// Pre-activation residual block: x + Conv(ReLU(BN(Conv(ReLU(BN(x)))))). No activation after the sum.
class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(const ResBlockOptions& options_) : options(options_) { reset(); }

  void reset() {
    const int64_t c = options.channels(), k = options.kernel_size();
    auto conv = [&] { return torch::nn::Conv3d(torch::nn::Conv3dOptions(c, c, k).padding(k / 2).bias(true)); };
    // BN defaults (eps 1e-5, momentum 0.1) are the reference's. ReLU in place: BN's backward does not
    // need its output, so this saves one activation map per block.
    layers = register_module(
        "layers", torch::nn::Sequential(torch::nn::BatchNorm3d(c), torch::nn::ReLU(torch::nn::ReLUOptions(true)),
                                        conv(), torch::nn::BatchNorm3d(c),
                                        torch::nn::ReLU(torch::nn::ReLUOptions(true)), conv()));
  }

  torch::Tensor forward(const torch::Tensor& x) { return x + layers->forward(x); }

  ResBlockOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(ResBlock);

struct StackOptions {
  explicit StackOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(int64_t, depth) = 2;
};

/// `depth` ResBlocks in sequence (two everywhere in the method).
class StackImpl : public torch::nn::Module {
 public:
  explicit StackImpl(const StackOptions& options_) : options(options_) { reset(); }

  void reset() {
    layers = register_module("layers", torch::nn::Sequential());
    for (int64_t i = 0; i < options.depth(); ++i)
      layers->push_back(ResBlock(ResBlockOptions(options.channels()).kernel_size(options.kernel_size())));
  }

  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }

  StackOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(Stack);

/// Keeps the [0:X, 0:Y, 0:Z] corner of `x` so that its spatial size equals `like`'s. Upsampling a
/// ceil-mode-pooled level overshoots by one voxel on odd axes; the reference drops the far end.
inline torch::Tensor crop_to(const torch::Tensor& x, const torch::Tensor& like) {
  return x.slice(2, 0, like.size(2)).slice(3, 0, like.size(3)).slice(4, 0, like.size(4));
}

/// Nearest-neighbour x2 upsampling as a module, so it can sit at index 1 of the reference's
/// `up_blocks.{k}` Sequential (conv at index 0) and keep the key names.
inline torch::nn::Upsample nearest_x2() {
  return torch::nn::Upsample(
      torch::nn::UpsampleOptions().scale_factor(std::vector<double>{2.0, 2.0, 2.0}).mode(torch::kNearest));
}

}  // namespace hdssl::nn
