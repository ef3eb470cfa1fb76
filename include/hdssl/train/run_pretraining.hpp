#pragma once
// The paper's presets and augmentation sets by name, for drivers that choose them at run time: one
// Pretrainer instantiation per (preset, augmentation set) pair. A program that knows its preset at compile
// time uses Pretrainer<Preset, Augmentations> directly and compiles only that one.
#include <iostream>
#include <string>

#include "hdssl/augment/presets.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/presets.hpp"
#include "hdssl/train/pretrain_config.hpp"
#include "hdssl/train/pretrainer.hpp"

namespace hdssl::train {

namespace detail {
template <class Preset>
PretrainResult run_with_augmentations(const PretrainConfig& c, std::ostream& console) {
  if (c.augment == "hdssl") return Pretrainer<Preset, augment::HdsslAugmentations>(c, c.preset, console).run();
  if (c.augment == "vox2vec") return Pretrainer<Preset, augment::Vox2vecAugmentations>(c, c.preset, console).run();
  throw ConfigError("pretraining option 'augment': unknown value '" + c.augment + "' (known: hdssl, vox2vec)");
}
}  // namespace detail

/// Runs pre-training for c.preset / c.augment (see PretrainConfig for the names). A template only so that
/// a translation unit that includes this header without calling it (e.g. through hdssl.hpp) does not
/// compile all ten trainers.
template <class Console = std::ostream>
PretrainResult run_pretraining(const PretrainConfig& c, Console& console = std::cout) {
  if (c.preset == "hdssl") return detail::run_with_augmentations<presets::hdssl>(c, console);
  if (c.preset == "hdssl_reference") return detail::run_with_augmentations<presets::hdssl_reference>(c, console);
  if (c.preset == "vox2vec") return detail::run_with_augmentations<presets::vox2vec>(c, console);
  if (c.preset == "ablation_architecture") return detail::run_with_augmentations<presets::ablation_architecture>(c, console);
  if (c.preset == "ablation_loss") return detail::run_with_augmentations<presets::ablation_loss>(c, console);
  throw ConfigError("pretraining option 'preset': unknown value '" + c.preset +
                    "' (known: vox2vec, hdssl, hdssl_reference, ablation_architecture, ablation_loss)");
}

}  // namespace hdssl::train
