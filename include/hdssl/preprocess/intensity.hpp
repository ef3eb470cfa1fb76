#pragma once
// Intensity normalisation: clip to [lo, hi] and scale linearly to [0, 1].
//
// CT uses a fixed window in HU (paper: [-1350, 1000]; the reference code's alternative: [-175, 250]).
// MRI uses the image's own percentiles (paper: 0.01 and 99.9; reference code: 1 and 99.99).
//
// Percentiles follow numpy's default `np.percentile(x, q)` (method 'linear', type 7 of Hyndman & Fan):
// sort the n values, h = (n - 1) * q / 100, k = floor(h), result = x[k] + (h - k) * (x[k+1] - x[k])
// (x[k] alone when k = n - 1). They are exact order statistics (std::nth_element on a copy), not
// histogram estimates, computed over every voxel of the tensor, in double precision.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::preprocess {

/// (x.clamp(lo, hi) - lo) / (hi - lo) as float32: lo maps to 0, hi to 1. Requires finite lo < hi.
inline torch::Tensor clip_and_scale(const torch::Tensor& x, double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi))
    throw ConfigError("intensity window [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      "]: bounds must be finite with lo < hi");
  // Computed in float64 then rounded once, so the [0, 1] end points are exact for inputs at the bounds.
  const auto xd = x.to(torch::kCPU).to(torch::kFloat64);
  return ((xd.clamp(lo, hi) - lo) / (hi - lo)).to(torch::kFloat32);
}

/// The q-th percentiles (q in [0, 100]) of every value of `x`, numpy 'linear' rule. `name` is used in
/// error messages. Throws DataError on an empty tensor or non-finite values.
inline std::vector<double> percentiles(const torch::Tensor& x, const std::vector<double>& qs,
                                       const std::string& name = "tensor") {
  for (double q : qs)
    if (!std::isfinite(q) || q < 0.0 || q > 100.0)
      throw ConfigError("percentile " + std::to_string(q) + " of '" + name + "' must lie in [0, 100]");
  if (!x.defined() || x.numel() == 0) throw DataError("percentiles of '" + name + "': tensor is empty");
  const auto xd = x.to(torch::kCPU).to(torch::kFloat64).contiguous().view({-1});
  const int64_t n = xd.numel();
  std::vector<double> values(xd.data_ptr<double>(), xd.data_ptr<double>() + n);
  for (double v : values)
    if (!std::isfinite(v)) throw DataError("percentiles of '" + name + "': tensor holds non-finite values");
  std::vector<double> out;
  out.reserve(qs.size());
  for (double q : qs) {
    const double h = static_cast<double>(n - 1) * q / 100.0;
    const int64_t k = std::min(static_cast<int64_t>(std::floor(h)), n - 1);
    std::nth_element(values.begin(), values.begin() + k, values.end());
    const double lo = values[k];
    if (k + 1 >= n) {
      out.push_back(lo);
      continue;
    }
    // After nth_element everything right of k is >= values[k]; their minimum is order statistic k + 1.
    const double hi = *std::min_element(values.begin() + k + 1, values.end());
    out.push_back(lo + (h - static_cast<double>(k)) * (hi - lo));
  }
  return out;
}

inline double percentile(const torch::Tensor& x, double q, const std::string& name = "tensor") {
  return percentiles(x, {q}, name)[0];
}

/// MRI normalisation: clip to the [q_lo, q_hi] percentiles of `x` and scale to [0, 1]. Returns the
/// scaled tensor and the two clip values. Throws DataError when they coincide (constant image).
inline std::pair<torch::Tensor, std::pair<double, double>> percentile_clip_and_scale(const torch::Tensor& x,
                                                                                     double q_lo, double q_hi,
                                                                                     const std::string& name) {
  if (!(q_lo < q_hi))
    throw ConfigError("percentiles [" + std::to_string(q_lo) + ", " + std::to_string(q_hi) + "] for '" + name +
                      "': the lower must be below the upper");
  const auto p = percentiles(x, {q_lo, q_hi}, name);
  if (!(p[0] < p[1]))
    throw DataError("intensity normalisation of '" + name + "': percentiles " + std::to_string(q_lo) + " and " +
                    std::to_string(q_hi) + " are both " + std::to_string(p[0]) + " (constant image?)");
  return {clip_and_scale(x, p[0], p[1]), {p[0], p[1]}};
}

}  // namespace hdssl::preprocess
