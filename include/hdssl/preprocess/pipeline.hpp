#pragma once
// The preprocessing pipeline of method.md section 9, with every number an option.
//
// Input: a Volume already in RAS orientation (the NIfTI reader reorients), optionally its label map on
// the same grid. Steps, in order:
//   0. non-finite voxels: refused (DataError naming the source and the count) unless
//      replace_non_finite is set; they are then replaced by non_finite_value, or, when that is null,
//      by the smallest finite voxel value of the image (the background, so nothing bright appears).
//   1. resample to `spacing` (trilinear image, nearest labels; null = keep the grid).
//   then, by `threshold_space`:
//   "input"  (CT):  2. crop to the box of voxels > crop_threshold (HU)   3. body mask, air < body_threshold (HU)
//                   4. window clip to [window_lo, window_hi] and scale to [0, 1]
//   "scaled" (MRI): 2. percentile clip to [percentile_lo, percentile_hi] percentiles of the resampled
//                      image (every voxel) and scale to [0, 1]   3. crop to voxels > crop_threshold
//                   4. body mask, air < body_threshold (both thresholds on the [0, 1] scale)
//   An empty body mask is a DataError (nothing to sample anchors from).
//   5. pad every axis below patch_size up to it, centred: image with 0 (its minimum after scaling),
//      mask with false, labels with 0.
// For CT the body mask is taken before windowing so its threshold is in HU like the crop's; since the
// window is a monotone map that leaves values inside it ordered, the mask is the same as thresholding the
// windowed image at the window-mapped value. crop_threshold = null skips the crop.
//
// Presets (method.md section 9): ct = 1 x 1 x 2 mm, crop > -500 HU, window [-1350, 1000] HU (the
// reference code's soft-tissue alternative is [-175, 250]), body air < -500 HU. mri = 1.5 mm isotropic,
// percentiles 0.01 / 99.9 (reference code: 1 / 99.99), crop > 0.3, body air < 0.03 (the reference code's
// MRI body threshold). Both: full 3-D connectivity, patch 128 x 128 x 32.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <Eigen/Dense>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/core/volume.hpp"
#include "hdssl/preprocess/body_mask.hpp"
#include "hdssl/preprocess/crop_pad.hpp"
#include "hdssl/preprocess/intensity.hpp"
#include "hdssl/preprocess/resample.hpp"

namespace hdssl::preprocess {

enum class IntensityMode { window, percentile };
enum class ThresholdSpace { input, scaled };

struct PreprocessOptions {
  std::optional<std::array<double, 3>> spacing = std::array<double, 3>{{1.0, 1.0, 2.0}};  ///< mm; null = keep
  IntensityMode intensity = IntensityMode::window;
  std::array<double, 2> window{{-1350.0, 1000.0}};        ///< clip bounds (input units) for `window`
  std::array<double, 2> percentiles{{0.01, 99.9}};        ///< clip percentiles for `percentile`
  ThresholdSpace threshold_space = ThresholdSpace::input; ///< units of crop_threshold and body_threshold
  std::optional<double> crop_threshold = -500.0;          ///< crop to voxels > this; null = no crop
  double body_threshold = -500.0;                         ///< air = voxels < this
  Connectivity body_connectivity = Connectivity::full;
  bool body_per_slice = false;
  std::array<int64_t, 3> patch_size{{128, 128, 32}};      ///< pad up to this
  bool replace_non_finite = false;
  std::optional<double> non_finite_value;                 ///< null = smallest finite voxel value

  /// CT preset of the paper.
  static PreprocessOptions ct() { return PreprocessOptions{}; }
  /// MRI preset of the paper.
  static PreprocessOptions mri() {
    PreprocessOptions o;
    o.spacing = std::array<double, 3>{{1.5, 1.5, 1.5}};
    o.intensity = IntensityMode::percentile;
    o.threshold_space = ThresholdSpace::scaled;
    o.crop_threshold = 0.3;
    o.body_threshold = 0.03;
    return o;
  }
  /// "ct" or "mri"; anything else is a ConfigError.
  static PreprocessOptions preset(const std::string& name) {
    if (name == "ct") return ct();
    if (name == "mri") return mri();
    throw option_error("preprocess", "preset", "unknown preset '" + name + "' (known: ct, mri)");
  }

  /// Throws ConfigError naming the first option whose value is out of range.
  void validate() const {
    auto fail = [](const std::string& key, const std::string& why) { throw option_error("preprocess", key, why); };
    if (spacing)
      for (double s : *spacing)
        if (!std::isfinite(s) || s <= 0) fail("spacing", "every entry must be a finite positive number of mm");
    if (!std::isfinite(window[0]) || !std::isfinite(window[1]) || !(window[0] < window[1]))
      fail("window", "needs finite [lo, hi] with lo < hi");
    if (!(percentiles[0] >= 0 && percentiles[1] <= 100 && percentiles[0] < percentiles[1]))
      fail("percentiles", "needs [lo, hi] with 0 <= lo < hi <= 100");
    if (crop_threshold && !std::isfinite(*crop_threshold)) fail("crop_threshold", "must be finite or null");
    if (!std::isfinite(body_threshold)) fail("body_threshold", "must be finite");
    for (int64_t p : patch_size)
      if (p < 1 || p > 4096) fail("patch_size", "every entry must lie in [1, 4096]");
    if (non_finite_value && !std::isfinite(*non_finite_value)) fail("non_finite_value", "must be finite or null");
  }
};

namespace detail {

// The JSON names of the enum options, for writing and reading them.
inline constexpr std::array<std::pair<const char*, IntensityMode>, 2> kIntensityNames{
    {{"window", IntensityMode::window}, {"percentile", IntensityMode::percentile}}};
inline constexpr std::array<std::pair<const char*, ThresholdSpace>, 2> kThresholdSpaceNames{
    {{"input", ThresholdSpace::input}, {"scaled", ThresholdSpace::scaled}}};
inline constexpr std::array<std::pair<const char*, Connectivity>, 2> kConnectivityNames{
    {{"full", Connectivity::full}, {"face", Connectivity::face}}};

}  // namespace detail

inline void to_json(nlohmann::json& j, const PreprocessOptions& o) {
  j = nlohmann::json::object();
  j["spacing"] = o.spacing ? nlohmann::json(*o.spacing) : nlohmann::json(nullptr);
  j["intensity"] = option_name(detail::kIntensityNames, o.intensity);
  j["window"] = o.window;
  j["percentiles"] = o.percentiles;
  j["threshold_space"] = option_name(detail::kThresholdSpaceNames, o.threshold_space);
  j["crop_threshold"] = o.crop_threshold ? nlohmann::json(*o.crop_threshold) : nlohmann::json(nullptr);
  j["body_threshold"] = o.body_threshold;
  j["body_connectivity"] = option_name(detail::kConnectivityNames, o.body_connectivity);
  j["body_per_slice"] = o.body_per_slice;
  j["patch_size"] = o.patch_size;
  j["replace_non_finite"] = o.replace_non_finite;
  j["non_finite_value"] = o.non_finite_value ? nlohmann::json(*o.non_finite_value) : nlohmann::json(nullptr);
}

/// Reads options: the optional key "preset" ("ct" / "mri", default "ct") gives the starting values and
/// every other key overrides one of them. Unknown keys and wrong types are ConfigErrors naming the key.
inline PreprocessOptions options_from_json(const nlohmann::json& j) {
  OptionReader r(j, "preprocess");
  std::string preset = "ct";
  r.read("preset", preset);
  PreprocessOptions o = PreprocessOptions::preset(preset);
  // Ranges here are types and sanity bounds; validate() checks the rest (finite, ordered, positive).
  constexpr double any = std::numeric_limits<double>::max();
  r.read<double, 3>("spacing", o.spacing, -any, any)
      .choice("intensity", o.intensity, detail::kIntensityNames)
      .read<double, 2>("window", o.window, -any, any)
      .read<double, 2>("percentiles", o.percentiles, -any, any)
      .choice("threshold_space", o.threshold_space, detail::kThresholdSpaceNames)
      .read<double>("crop_threshold", o.crop_threshold, -any, any)
      .read<double>("body_threshold", o.body_threshold, -any, any)
      .choice("body_connectivity", o.body_connectivity, detail::kConnectivityNames)
      .read("body_per_slice", o.body_per_slice)
      .read<int64_t, 3>("patch_size", o.patch_size, std::numeric_limits<int64_t>::min(),
                        std::numeric_limits<int64_t>::max())
      .read("replace_non_finite", o.replace_non_finite)
      .read<double>("non_finite_value", o.non_finite_value, -any, any);
  r.finish();
  o.validate();
  return o;
}

inline void from_json(const nlohmann::json& j, PreprocessOptions& o) { o = options_from_json(j); }

/// What the pipeline did, kept with the result (and in the cache) so a prediction can be mapped back.
struct PreprocessInfo {
  std::array<int64_t, 3> input_shape{{0, 0, 0}};
  std::array<int64_t, 3> resampled_shape{{0, 0, 0}};
  Box crop;                                  ///< in the resampled grid (whole grid when not cropped)
  Padding padding;
  std::array<double, 2> intensity_range{{0, 0}};  ///< input values mapped to 0 and 1
  int64_t non_finite_replaced = 0;
};

inline void to_json(nlohmann::json& j, const PreprocessInfo& i) {
  j = {{"input_shape", i.input_shape},       {"resampled_shape", i.resampled_shape},
       {"crop_begin", i.crop.begin},         {"crop_end", i.crop.end},
       {"pad_before", i.padding.before},     {"pad_after", i.padding.after},
       {"intensity_range", i.intensity_range}, {"non_finite_replaced", i.non_finite_replaced}};
}

inline void from_json(const nlohmann::json& j, PreprocessInfo& i) {
  j.at("input_shape").get_to(i.input_shape);
  j.at("resampled_shape").get_to(i.resampled_shape);
  j.at("crop_begin").get_to(i.crop.begin);
  j.at("crop_end").get_to(i.crop.end);
  j.at("pad_before").get_to(i.padding.before);
  j.at("pad_after").get_to(i.padding.after);
  j.at("intensity_range").get_to(i.intensity_range);
  j.at("non_finite_replaced").get_to(i.non_finite_replaced);
}

struct Preprocessed {
  Volume image;                  ///< float32 in [0, 1], (X, Y, Z)
  torch::Tensor body_mask;       ///< bool (X, Y, Z)
  std::optional<Volume> labels;  ///< same grid as image
  PreprocessInfo info;
};

/// Runs the pipeline described at the top of this file. `labels`, when given, must share the image grid.
inline Preprocessed preprocess(const Volume& image, const PreprocessOptions& opt,
                               const std::optional<Volume>& labels = std::nullopt) {
  opt.validate();
  const std::string name = image.source.empty() ? std::string("image") : image.source;
  if (!image.data.defined() || image.data.dim() != 3 || image.data.numel() == 0)
    throw DataError("preprocess of '" + name + "': image must be a non-empty 3-D (X, Y, Z) tensor");
  if (labels) {
    if (!labels->data.defined() || labels->data.sizes() != image.data.sizes())
      throw DataError("preprocess of '" + name + "': label map '" + labels->source + "' has shape " +
                      (labels->data.defined() ? c10::str(labels->data.sizes()) : std::string("(none)")) +
                      ", image has " + c10::str(image.data.sizes()));
    if ((labels->affine - image.affine).cwiseAbs().maxCoeff() > 1e-4)
      throw DataError("preprocess of '" + name + "': label map '" + labels->source +
                      "' has a different affine (not on the image grid)");
  }
  Preprocessed out;
  out.info.input_shape = image.shape();

  // 0. non-finite voxels
  Volume img = image;
  torch::Tensor data = image.data.to(torch::kCPU);
  if (!data.is_floating_point()) data = data.to(torch::kFloat32);
  if (!torch::isfinite(data).all().item<bool>()) {
    const torch::Tensor bad = ~torch::isfinite(data);
    const int64_t n_bad = bad.sum().item<int64_t>();
    if (!opt.replace_non_finite)
      throw DataError("preprocess of '" + name + "': " + std::to_string(n_bad) +
                      " non-finite (NaN/Inf) voxels; set replace_non_finite to replace them");
    double fill;
    if (opt.non_finite_value) {
      fill = *opt.non_finite_value;
    } else {
      if (n_bad == data.numel()) throw DataError("preprocess of '" + name + "': every voxel is non-finite");
      fill = data.masked_select(~bad).min().item<double>();
    }
    data = data.masked_fill(bad, fill);
    out.info.non_finite_replaced = n_bad;
  }
  img.data = data;

  // 1. resample
  std::optional<Volume> lab = labels;
  if (opt.spacing) {
    const Eigen::Vector3d sp((*opt.spacing)[0], (*opt.spacing)[1], (*opt.spacing)[2]);
    img = resample(img, sp, Interpolation::linear);
    if (lab) lab = resample(*lab, sp, Interpolation::nearest);
  }
  out.info.resampled_shape = img.shape();
  out.info.crop.end = img.shape();

  auto do_crop = [&] {
    if (!opt.crop_threshold) return;
    const auto box = bounding_box(img.data, *opt.crop_threshold);
    if (!box)
      throw DataError("preprocess of '" + name + "': no voxel above the crop threshold " +
                      std::to_string(*opt.crop_threshold));
    img = crop(img, *box);
    if (lab) lab = crop(*lab, *box);
    out.info.crop = *box;
  };
  auto do_scale = [&] {
    if (opt.intensity == IntensityMode::window) {
      img.data = clip_and_scale(img.data, opt.window[0], opt.window[1]);
      out.info.intensity_range = opt.window;
    } else {
      auto [scaled, range] = percentile_clip_and_scale(img.data, opt.percentiles[0], opt.percentiles[1], name);
      img.data = scaled;
      out.info.intensity_range = {{range.first, range.second}};
    }
    img.meta.datatype = 16;  // float32
    img.meta.scl_slope = 1.0;
    img.meta.scl_inter = 0.0;
  };
  torch::Tensor mask;
  auto do_mask = [&] {
    mask = body_mask(img.data, opt.body_threshold, opt.body_connectivity, opt.body_per_slice, name);
    // Training anchors are drawn from the body: a volume without one is unusable, better said now.
    if (!mask.any().item<bool>())
      throw DataError("preprocess of '" + name + "': the body mask is empty (every voxel is air below " +
                      std::to_string(opt.body_threshold) + " connected to the in-plane border)");
  };

  if (opt.threshold_space == ThresholdSpace::input) {
    do_crop();
    do_mask();
    do_scale();
  } else {
    do_scale();
    do_crop();
    do_mask();
  }

  // 5. pad
  const Padding p = padding_to(img.shape(), opt.patch_size);
  out.info.padding = p;
  out.image = pad(img, p, 0.0);
  out.body_mask = pad(mask, p, 0.0);
  if (lab) out.labels = pad(*lab, p, 0.0);
  return out;
}

}  // namespace hdssl::preprocess
