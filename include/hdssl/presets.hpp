#pragma once
// Model presets of the paper, each one line: use them as PretrainModel<presets::hdssl>.
// (Augmentation sets are chosen separately; the paper's Table 1 crosses them with these models.)
#include "hdssl/nn/policies.hpp"

namespace hdssl::presets {

using namespace hdssl::policy;

/// Baseline vox2vec: FPN 16 x 6 levels, raw concatenation (d = 1008), InfoNCE only.
using vox2vec = ModelPolicy<Pyramid<6, 16>, NoBalancing, InfoNCE>;
/// The paper: FPN 32 x 5 levels, every level balanced to 32 channels (d = 160), InfoNCE + 10 x MSE.
using hdssl = ModelPolicy<Pyramid<5, 32>, Balanced<32>, InfoNCEPlusReconstruction>;
/// The paper as published in code: the balancing projections stay random (never trained; kept as buffers in checkpoints).
using hdssl_reference = ModelPolicy<Pyramid<5, 32>, FrozenBalanced<32>, InfoNCEPlusReconstruction>;
/// Ablation "+ architecture": the balanced 32 x 5 model trained with InfoNCE only.
using ablation_architecture = ModelPolicy<Pyramid<5, 32>, Balanced<32>, InfoNCE>;
/// Ablation "+ loss": the vox2vec model trained with the hybrid loss.
using ablation_loss = ModelPolicy<Pyramid<6, 16>, NoBalancing, InfoNCEPlusReconstruction>;

}  // namespace hdssl::presets
