#pragma once
// What the backbone does at each downstream step (method.md 7), every step count scaled with `steps`
// (the paper's numbers are for 45,000):
//   probe      frozen throughout: eval mode (BatchNorm statistics fixed), no gradients;
//   scratch    trained from step 0 at the head's lr;
//   finetune, intended (default): frozen, conv and BN, for the first third (15,000 of 45,000), then
//              trained with its own lr from 0.1x the head's, doubling every 300 steps (scaled) up to 1x;
//   finetune, reference: the published code's accident: during the first third the backbone's BatchNorm
//              layers run in train mode (their running statistics drift) though nothing is optimised, then
//              backbone and head both train at 0.2x the lr (6e-5 for 3e-4).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace hdssl::train {

struct BackbonePhase {
  bool trainable = false;  ///< the backbone's parameters are optimised (gradients flow into it)
  bool batchnorm_train = false;  ///< the backbone runs in train mode (batch statistics, running stats updated)
  double backbone_lr = 0;
  double head_lr = 0;
};

struct FinetuneSchedule {
  std::string setup = "probe";       ///< probe | finetune | scratch
  std::string schedule = "intended"; ///< intended | reference
  int64_t steps = 45000;
  double lr = 3e-4;

  int64_t frozen_steps() const { return setup == "finetune" ? static_cast<int64_t>(std::llround(steps * (15000.0 / 45000.0))) : 0; }
  int64_t doubling_every() const { return std::max<int64_t>(1, static_cast<int64_t>(std::llround(steps * (300.0 / 45000.0)))); }

  /// The phase of 0-based step `step`.
  BackbonePhase at(int64_t step) const {
    BackbonePhase p;
    p.head_lr = lr;
    if (setup == "probe") return p;
    if (setup == "scratch") return {true, true, lr, lr};
    const bool reference = schedule == "reference";
    if (step < frozen_steps()) {
      p.batchnorm_train = reference;
      return p;
    }
    p.trainable = p.batchnorm_train = true;
    if (reference) {
      p.backbone_lr = p.head_lr = 0.2 * lr;
      return p;
    }
    const int64_t doublings = (step - frozen_steps()) / doubling_every();
    p.backbone_lr = std::min(lr, 0.1 * lr * std::pow(2.0, static_cast<double>(std::min<int64_t>(doublings, 64))));
    return p;
  }
};

}  // namespace hdssl::train
