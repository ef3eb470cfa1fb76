#pragma once
// The pre-training model: backbone + (balancing) + projection head + (reconstruction head), composed
// from a ModelPolicy (see presets.hpp), and the runtime options that go with it.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/loss/infonce.hpp"
#include "hdssl/loss/reconstruction.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/heads.hpp"
#include "hdssl/nn/policies.hpp"
#include "hdssl/nn/projection.hpp"
#include "hdssl/ops/gather_pyramid.hpp"

namespace hdssl::nn {

/// Runtime knobs of pre-training (JSON keys are the field names).
///
/// The preset (a compile-time ModelPolicy) fixes the *kind* of network: balanced or not, which loss terms
/// and heads exist. Its pyramid numbers are defaults: base_channels and levels override them at run time
/// (a model small enough for a laptop, or a deeper one, without a new preset). 0 keeps the preset's.
struct PretrainOptions {
  int64_t in_channels = 1;
  /// c_0 of the backbone (level i has c_0 * 2^i channels); 0 = the preset's (32 hdssl, 16 vox2vec).
  int64_t base_channels = 0;
  /// Pyramid levels, 2..8; 0 = the preset's (5 hdssl, 6 vox2vec).
  int64_t levels = 0;
  /// InfoNCE temperature tau.
  double temperature = 0.1;
  /// lambda of L = L_nce + lambda * L_mse; unset = the loss policy's default (10 for the paper). Stays
  /// unset for presets without a reconstruction term, where setting it is a ConfigError.
  std::optional<double> reconstruction_weight;
  /// Output size of the projection head.
  int64_t projection_dim = 128;
};

inline void to_json(nlohmann::json& j, const PretrainOptions& o) {
  j = nlohmann::json{{"in_channels", o.in_channels},
                     {"base_channels", o.base_channels},
                     {"levels", o.levels},
                     {"temperature", o.temperature},
                     {"reconstruction_weight", o.reconstruction_weight ? nlohmann::json(*o.reconstruction_weight) : nlohmann::json()},
                     {"projection_dim", o.projection_dim}};
}

/// Strict: an unknown key, a value of the wrong type or out of range is a ConfigError naming the key.
inline void from_json(const nlohmann::json& j, PretrainOptions& o) {
  constexpr auto big = std::numeric_limits<int64_t>::max();
  constexpr double any = std::numeric_limits<double>::max();
  OptionReader r(j, "PretrainOptions");
  r.read<int64_t>("in_channels", o.in_channels, 1, big)
      .read<int64_t>("base_channels", o.base_channels, 0, 1 << 16)
      .read<int64_t>("levels", o.levels, 0, ops::kMaxGatherLevels)
      .read<double>("temperature", o.temperature, 0.0, any)
      .read<double>("reconstruction_weight", o.reconstruction_weight, 0.0, any)
      .read<int64_t>("projection_dim", o.projection_dim, 1, big);
  if (!(o.temperature > 0)) r.fail("temperature", "must be > 0");
  if (o.levels == 1) r.fail("levels", "a pyramid needs at least 2 levels (0 = the preset's)");
  r.finish();
}

/// One pre-training batch: B pairs of patches and the positive voxels of each pair in both views.
struct PretrainBatch {
  torch::Tensor view1, view2;      ///< (B, C, X, Y, Z) augmented crops
  torch::Tensor voxels1, voxels2;  ///< int64 [N, 4] (patch, x, y, z): row r of both = the same voxel
  torch::Tensor target1, target2;  ///< (B, C, X, Y, Z) un-augmented crops; only for a reconstruction term
  /// IndexCheck::shapes when the voxel rows are known to be in range (the trainer checks the sampler's on
  /// the host before upload): the gather then needs no device-to-host read.
  IndexCheck index_check = IndexCheck::range;
};

/// The loss terms of one step; `reconstruction` is undefined when the preset has no such term.
struct PretrainLosses {
  torch::Tensor total, info_nce, reconstruction;
};

template <class Preset>
class PretrainModelImpl : public torch::nn::Module {
  static_assert(policy::is_model_policy_v<Preset>,
                "PretrainModel<Preset>: Preset must be a policy::ModelPolicy<...>, e.g. hdssl::presets::hdssl");

 public:
  using preset = Preset;

  /// `options_.base_channels` / `levels` of 0 are replaced by the preset's, so `options` always holds the
  /// numbers the model was built with.
  explicit PretrainModelImpl(const PretrainOptions& options_ = {}) : options(options_) {
    if constexpr (Preset::loss::reconstruction) {
      if (!options.reconstruction_weight) options.reconstruction_weight = Preset::loss::default_reconstruction_weight;
    } else if (options.reconstruction_weight) {
      throw ConfigError("PretrainModel: reconstruction_weight = " + std::to_string(*options.reconstruction_weight) +
                        " was given, but this preset has no reconstruction term (leave it unset)");
    }
    if (options.base_channels == 0) options.base_channels = Preset::base_channels;
    if (options.levels == 0) options.levels = Preset::levels;
    if (options.levels < 2 || options.levels > ops::kMaxGatherLevels)
      throw ConfigError("PretrainModel: levels must be in [2, " + std::to_string(ops::kMaxGatherLevels) + "], got " +
                        std::to_string(options.levels));
    backbone = register_module("backbone",
                               FPN3d(FPN3dOptions(options.in_channels, options.base_channels, options.levels)));
    if constexpr (Preset::balanced) {
      balancing = register_module(
          "balancing", BalancedProjection(BalancedProjectionOptions(backbone->channels(), Preset::balancing::width)
                                              .frozen(Preset::frozen_balancing)));
    }
    proj_head =
        register_module("proj_head", ProjectionHead(ProjectionHeadOptions(embedding_dim(), options.projection_dim)));
    if constexpr (Preset::heads::reconstruction) {
      recon_head = register_module("recon_head", ReconstructionHead(options.base_channels, options.in_channels));
    }
  }

  /// d: size of the voxel embedding fed to the projection head (levels x W balanced, sum of c_i raw).
  int64_t embedding_dim() const {
    if constexpr (Preset::balanced) return options.levels * Preset::balancing::width;
    return options.base_channels * ((int64_t{1} << options.levels) - 1);
  }

  /// Voxel embeddings [N, d] (balanced or raw concatenation) of the voxels of one view's pyramid.
  /// All levels are gathered by the fused op (one pass forward, one backward, instead of one indexing op
  /// per level); the balancing reads each level's columns of that [N, sum c_i] tensor as a view.
  /// The pyramid must be float32 or bf16 (float64 on the CPU), else a hdssl::DataError.
  torch::Tensor embed(const std::vector<torch::Tensor>& pyramid, const torch::Tensor& voxels,
                      IndexCheck check = IndexCheck::range) {
    torch::Tensor gathered = ops::gather_pyramid(pyramid, voxels, check);
    if constexpr (Preset::balanced) {
      return balancing->forward(gathered.split_with_sizes(balancing->options.level_channels(), 1));
    } else {
      return gathered;
    }
  }

  /// Both views through the backbone as separate batches (BN statistics per view), positives gathered,
  /// projected, and the loss terms of the preset.
  PretrainLosses forward(const PretrainBatch& batch) {
    if (!batch.view1.defined() || !batch.view2.defined() || !batch.voxels1.defined() || !batch.voxels2.defined())
      throw DataError("PretrainModel: view1, view2, voxels1 and voxels2 are all required");
    if (batch.voxels1.sizes() != batch.voxels2.sizes())
      throw DataError("PretrainModel: voxels1 and voxels2 must list the same number of positive pairs");
    PretrainLosses out;
    const auto pyramid1 = backbone->forward(batch.view1);
    const auto pyramid2 = backbone->forward(batch.view2);
    const auto z1 = proj_head->forward(embed(pyramid1, batch.voxels1, batch.index_check));
    const auto z2 = proj_head->forward(embed(pyramid2, batch.voxels2, batch.index_check));
    out.info_nce = loss::info_nce(z1, z2, options.temperature);
    out.total = out.info_nce;
    if constexpr (Preset::reconstruction) {
      if (!batch.target1.defined() || !batch.target2.defined())
        throw DataError("PretrainModel: this preset has a reconstruction term; target1 and target2 (the "
                        "un-augmented crops) are required");
      out.reconstruction = loss::reconstruction_mse(recon_head->forward(pyramid1[0]), batch.target1,
                                                    recon_head->forward(pyramid2[0]), batch.target2);
      out.total = out.info_nce + *options.reconstruction_weight * out.reconstruction;
    }
    return out;
  }

  PretrainOptions options;
  FPN3d backbone{nullptr};
  BalancedProjection balancing{nullptr};
  ProjectionHead proj_head{nullptr};
  ReconstructionHead recon_head{nullptr};
};

/// Module holder (what TORCH_MODULE generates, written out because the Impl is a template).
template <class Preset>
class PretrainModel : public torch::nn::ModuleHolder<PretrainModelImpl<Preset>> {
 public:
  using torch::nn::ModuleHolder<PretrainModelImpl<Preset>>::ModuleHolder;
  using Impl = PretrainModelImpl<Preset>;
};

}  // namespace hdssl::nn
