#pragma once
// Per-channel standardisation of a frozen backbone's pyramid, in front of a probe's head:
// p_i -> (p_i - shift_i) * scale_i, with shift and scale the channel means and 1 / standard deviations
// measured on training patches before the head trains (identity until then, and for every setup that
// trains the backbone).
//
// Why: a linear head on standardised features is the same family of functions as one on raw features
// (the affine map folds into its weights and its bias), so the probe measures the same thing; but Adam
// has to move weights by 1 / std of each channel, and the channels of an untrained backbone are 20-50x
// smaller than a pre-trained one's (eval-mode BatchNorm with default statistics). Without it, a probe of
// a random-initialised backbone is an optimisation failure within any CPU-sized step budget (it never
// leaves the all-background solution), not a measurement of its features.
// Buffers `shift_<i>` / `scale_<i>` (shape (1, c_i, 1, 1, 1)) travel with the model file.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::nn {

class FeatureStandardisationImpl : public torch::nn::Module {
 public:
  explicit FeatureStandardisationImpl(const std::vector<int64_t>& channels) {
    for (size_t i = 0; i < channels.size(); ++i) {
      shift.push_back(register_buffer("shift_" + std::to_string(i), torch::zeros({1, channels[i], 1, 1, 1})));
      scale.push_back(register_buffer("scale_" + std::to_string(i), torch::ones({1, channels[i], 1, 1, 1})));
    }
  }

  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& pyramid) const {
    if (pyramid.size() != shift.size())
      throw DataError("FeatureStandardisation: expected " + std::to_string(shift.size()) + " pyramid levels, got " +
                      std::to_string(pyramid.size()));
    std::vector<torch::Tensor> out;
    out.reserve(pyramid.size());
    for (size_t i = 0; i < pyramid.size(); ++i)
      out.push_back((pyramid[i] - shift[i].to(pyramid[i].scalar_type())) * scale[i].to(pyramid[i].scalar_type()));
    return out;
  }

  /// Sets shift / scale from per-level channel means and standard deviations; a channel that does not vary
  /// (std below `min_std`) keeps scale 1, so a constant channel is centred, never blown up.
  void set(const std::vector<torch::Tensor>& means, const std::vector<torch::Tensor>& stds, double min_std = 1e-6) {
    if (means.size() != shift.size() || stds.size() != shift.size())
      throw ConfigError("FeatureStandardisation::set: one mean and one std per pyramid level");
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < shift.size(); ++i) {
      const auto m = means[i].to(torch::kFloat32).reshape(shift[i].sizes());
      const auto s = stds[i].to(torch::kFloat32).reshape(scale[i].sizes());
      shift[i].copy_(m);
      scale[i].copy_(torch::where(s >= min_std, 1.0 / s.clamp_min(min_std), torch::ones_like(s)));
    }
  }

  bool is_identity() const {
    for (size_t i = 0; i < shift.size(); ++i)
      if (shift[i].ne(0).any().item<bool>() || scale[i].ne(1).any().item<bool>()) return false;
    return true;
  }

  std::vector<torch::Tensor> shift, scale;
};
TORCH_MODULE(FeatureStandardisation);

/// Channel means and standard deviations of pyramids seen one batch at a time (double sums, so many
/// patches of many voxels lose nothing to float rounding).
class PyramidMoments {
 public:
  void add(const std::vector<torch::Tensor>& pyramid) {
    if (sum_.empty()) {
      for (const auto& p : pyramid) {
        sum_.push_back(torch::zeros({p.size(1)}, torch::kFloat64));
        sq_.push_back(torch::zeros({p.size(1)}, torch::kFloat64));
        count_.push_back(0);
      }
    }
    for (size_t i = 0; i < pyramid.size(); ++i) {
      const auto x = pyramid[i].detach().to(torch::kCPU, torch::kFloat64).transpose(0, 1).reshape({pyramid[i].size(1), -1});
      sum_[i] += x.sum(1);
      sq_[i] += x.square().sum(1);
      count_[i] += x.size(1);
    }
  }
  std::vector<torch::Tensor> means() const {
    std::vector<torch::Tensor> m;
    for (size_t i = 0; i < sum_.size(); ++i) m.push_back(sum_[i] / static_cast<double>(count_[i]));
    return m;
  }
  std::vector<torch::Tensor> stds() const {
    std::vector<torch::Tensor> s;
    for (size_t i = 0; i < sum_.size(); ++i) {
      const auto mean = sum_[i] / static_cast<double>(count_[i]);
      s.push_back((sq_[i] / static_cast<double>(count_[i]) - mean.square()).clamp_min(0).sqrt());
    }
    return s;
  }
  bool empty() const { return sum_.empty(); }

 private:
  std::vector<torch::Tensor> sum_, sq_;
  std::vector<int64_t> count_;
};

}  // namespace hdssl::nn
