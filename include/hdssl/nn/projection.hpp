#pragma once
// Balanced voxel representation and the contrastive projection MLP (method.md sections 3 and 4).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::nn {

struct BalancedProjectionOptions {
  BalancedProjectionOptions(std::vector<int64_t> level_channels, int64_t width)
      : level_channels_(std::move(level_channels)), width_(width) {}
  /// c_i of every level, finest first.
  TORCH_ARG(std::vector<int64_t>, level_channels);
  /// W: channels every level contributes after projection (32 in the paper).
  TORCH_ARG(int64_t, width);
  /// true reproduces the reference: the projections stay at their random initialisation and are never
  /// trained (the reference keeps them in a plain Python list). Here they are float32 buffers
  /// (`frozen.{i}.weight`, `frozen.0.bias`), so checkpoints, Module::to() and rank-0 broadcasts carry them
  /// and a resumed run projects through exactly the same random matrices.
  TORCH_ARG(bool, frozen) = false;
};

/// Per level a linear map c_i -> W (bias on level 0 only), applied to gathered [N, c_i] vectors; the
/// outputs are concatenated finest first into [N, levels * W]. Equal to a 1x1x1 conv on each whole map
/// followed by the gather (a 1x1x1 conv commutes with gathering), at a tiny fraction of the cost.
class BalancedProjectionImpl : public torch::nn::Module {
 public:
  explicit BalancedProjectionImpl(const BalancedProjectionOptions& options_) : options(options_) {
    if (options.width() < 1) throw ConfigError("BalancedProjection: width must be >= 1");
    if (options.level_channels().empty()) throw ConfigError("BalancedProjection: level_channels is empty");
    layers = register_module("layers", torch::nn::ModuleList());
    if (options.frozen()) frozen = register_module("frozen", torch::nn::ModuleList());
    const auto& c = options.level_channels();
    for (size_t i = 0; i < c.size(); ++i) {
      // Linear's default init is the same as a 1x1x1 Conv3d's (Kaiming-uniform a = sqrt(5) on fan_in c_i).
      torch::nn::Linear lin(torch::nn::LinearOptions(c[i], options.width()).bias(i == 0));
      if (options.frozen()) {
        // A bare Module per level holds its buffers, under names apart from the learnable `layers`.
        auto holder = std::make_shared<torch::nn::Module>();
        holder->register_buffer("weight", lin->weight.detach().clone());
        if (i == 0) holder->register_buffer("bias", lin->bias.detach().clone());
        frozen->push_back(holder);
      } else {
        linears.push_back(lin);
        layers->push_back(lin);
      }
    }
  }

  int64_t output_channels() const {
    return options.width() * static_cast<int64_t>(options.level_channels().size());
  }

  /// gathered[i]: [N, c_i]. Returns [N, levels * W].
  torch::Tensor forward(const std::vector<torch::Tensor>& gathered) {
    const auto& c = options.level_channels();
    if (gathered.size() != c.size())
      throw DataError("BalancedProjection: expected " + std::to_string(c.size()) + " levels, got " +
                      std::to_string(gathered.size()));
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < c.size(); ++i) {
      if (gathered[i].dim() != 2 || gathered[i].size(1) != c[i])
        throw DataError("BalancedProjection: level " + std::to_string(i) + " must be [N, " + std::to_string(c[i]) + "]");
      out.push_back(project_level(i, gathered[i]));
    }
    return torch::cat(out, 1);
  }

  /// Level i alone: [N, c_i] -> [N, W] (for whole maps viewed as [voxels, c_i], e.g. embeddings).
  torch::Tensor project_level(size_t i, const torch::Tensor& x) {
    if (options.frozen()) {
      // The buffers stay float32 (Module::to() moves them with the model); a bf16 input is projected
      // through a rounded temporary copy, never by rounding the stored matrices.
      const auto buffers = frozen->ptr(i)->named_buffers(/*recurse=*/false);
      const auto* b = buffers.find("bias");
      const auto cast = [&](const torch::Tensor& t) { return t.to(x.scalar_type()); };
      return torch::nn::functional::linear(x, cast(buffers["weight"]), b ? cast(*b) : torch::Tensor());
    }
    return linears.at(i)->forward(x);
  }

  BalancedProjectionOptions options;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::ModuleList frozen{nullptr};  ///< frozen only: one buffer holder per level

 private:
  std::vector<torch::nn::Linear> linears;
};
TORCH_MODULE(BalancedProjection);

struct ProjectionHeadOptions {
  ProjectionHeadOptions(int64_t in_features, int64_t out_features = 128)
      : in_features_(in_features), out_features_(out_features) {}
  /// d: the voxel embedding size (160 for hdssl, 1008 for vox2vec).
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features) = 128;
};

/// Linear(d,d) -> BN1d -> ReLU -> Linear(d,d) -> BN1d -> ReLU -> Linear(d,out), rows L2-normalised
/// (eps 1e-12). Registered as `layers.{0..6}`.
class ProjectionHeadImpl : public torch::nn::Module {
 public:
  explicit ProjectionHeadImpl(const ProjectionHeadOptions& options_) : options(options_) {
    using namespace torch::nn;
    const int64_t d = options.in_features();
    if (d < 1 || options.out_features() < 1)
      throw ConfigError("ProjectionHead: in_features and out_features must be >= 1");
    layers = register_module("layers", Sequential(Linear(d, d), BatchNorm1d(d), ReLU(ReLUOptions(true)),
                                                  Linear(d, d), BatchNorm1d(d), ReLU(ReLUOptions(true)),
                                                  Linear(d, options.out_features())));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    if (x.dim() != 2 || x.size(1) != options.in_features())
      throw DataError("ProjectionHead: input must be [N, " + std::to_string(options.in_features()) + "]");
    return torch::nn::functional::normalize(
        layers->forward(x), torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
  }

  ProjectionHeadOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(ProjectionHead);

}  // namespace hdssl::nn
