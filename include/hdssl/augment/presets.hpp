#pragma once
// Augmentation presets (method.md 6): the paper's local augmentations and the vox2vec baseline's set.
//
//   hdssl::augment::HdsslAugmentations set(hdssl::augment::hdssl_options(), seed);
//   auto views1 = set(batch.view1, step, 0);               // views 0..B-1
//   auto views2 = set(batch.view2, step, batch.view1.size(0));  // views B..2B-1
//
// Both are ordinary AugmentationSet types: their options come from JSON by policy name
// (HdsslAugmentations::from_json({{"bezier", {{"invert_p", 0.5}}}}, seed)) and a custom set is just
// another AugmentationSet<...> of any policies (docs/augment.md).
#include "hdssl/augment/augmentation_set.hpp"
#include "hdssl/augment/bezier.hpp"
#include "hdssl/augment/inpaint.hpp"
#include "hdssl/augment/local_shuffle.hpp"
#include "hdssl/augment/vox2vec.hpp"

namespace hdssl::augment {

/// The paper's local augmentations, in order: local pixel shuffle (p 0.8), Bezier intensity curve
/// (p 0.9), local in-painting (always); out-painting is present but off (p 0) so configs can enable it.
/// Views in [0, 1].
using HdsslAugmentations = AugmentationSet<LocalPixelShuffle, Bezier, Inpaint, Outpaint>;

/// vox2vec's set, on crops in HU: axial blur/sharpen (p 0.5), Gaussian noise (p 0.5), random window
/// (p 0.8) with scaling to [0, 1].
using Vox2vecAugmentations = AugmentationSet<AxialFilter, GaussianNoise, RandomWindow>;

/// The defaults of every policy are the presets' values; these spell them out for readers.
inline HdsslAugmentations::options_type hdssl_options() {
  LocalPixelShuffle::Options shuffle;
  shuffle.p = 0.8;
  shuffle.blocks = 5000;
  shuffle.divisor = 20;
  Bezier::Options bezier;
  bezier.p = 0.9;
  bezier.invert_p = 0.0;
  Inpaint::Options inpaint;
  inpaint.p = 1.0;
  inpaint.max_boxes = 30;
  inpaint.continue_p = 0.95;
  Outpaint::Options outpaint;
  outpaint.p = 0.0;
  return {shuffle, bezier, inpaint, outpaint};
}

inline Vox2vecAugmentations::options_type vox2vec_options() {
  AxialFilter::Options filter;
  filter.p = 0.5;
  GaussianNoise::Options noise;
  noise.p = 0.5;
  noise.sigma_lo = 0;
  noise.sigma_hi = 30;
  RandomWindow::Options window;
  window.p = 0.8;
  return {filter, noise, window};
}

}  // namespace hdssl::augment
