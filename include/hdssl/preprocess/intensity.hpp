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
  // In place on the one float64 copy: each extra temporary of a 512^3 volume costs a gigabyte of page faults.
  auto xd = x.to(torch::kCPU).to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true);
  xd.clamp_(lo, hi).sub_(lo).div_(hi - lo);
  return xd.to(torch::kFloat32);
}

/// Percentiles (numpy 'linear' rule) of the values of a non-empty vector, which is reordered in place;
/// queries answered in ascending order so each selection only searches above the previous one. The caller
/// guarantees finite values and q in [0, 100] (percentiles() below checks both for tensors).
template <typename T>
std::vector<double> percentiles_in_place(std::vector<T>& values, const std::vector<double>& qs) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<size_t> order(qs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return qs[a] < qs[b]; });
  std::vector<double> out(qs.size());
  int64_t settled = 0;  // values[0, settled) hold the smallest `settled` order statistics, in order
  for (size_t i : order) {
    const double h = static_cast<double>(n - 1) * qs[i] / 100.0;
    const int64_t k = std::min(static_cast<int64_t>(std::floor(h)), n - 1);
    if (k >= settled) std::nth_element(values.begin() + settled, values.begin() + k, values.end());
    const double lo = static_cast<double>(values[k]);
    if (k + 1 >= n) {
      out[i] = lo;
      continue;
    }
    // After nth_element everything right of k is >= values[k]; their minimum is order statistic k + 1.
    auto next = std::min_element(values.begin() + k + 1, values.end());
    std::iter_swap(values.begin() + k + 1, next);
    settled = k + 2;
    out[i] = lo + (h - static_cast<double>(k)) * (static_cast<double>(values[k + 1]) - lo);
  }
  return out;
}

/// The q-th percentiles (q in [0, 100]) of every value of `x`, numpy 'linear' rule. `name` is used in
/// error messages. Throws DataError on an empty tensor or non-finite values. Values are selected in
/// their own precision (float32 stays float32: no rounding, half the memory), interpolated in double.
inline std::vector<double> percentiles(const torch::Tensor& x, const std::vector<double>& qs,
                                       const std::string& name = "tensor") {
  for (double q : qs)
    if (!std::isfinite(q) || q < 0.0 || q > 100.0)
      throw ConfigError("percentile " + std::to_string(q) + " of '" + name + "' must lie in [0, 100]");
  if (!x.defined() || x.numel() == 0) throw DataError("percentiles of '" + name + "': tensor is empty");
  if (!torch::isfinite(x).all().item<bool>())
    throw DataError("percentiles of '" + name + "': tensor holds non-finite values");
  // float32 holds every value of 8/16-bit integers and float16 exactly; wider types go through double.
  const auto t = x.scalar_type();
  const bool narrow = t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16 || t == torch::kUInt8 ||
                      t == torch::kInt8 || t == torch::kInt16 || t == torch::kBool;
  if (narrow) {
    const auto xf = x.to(torch::kCPU).to(torch::kFloat32).contiguous().view({-1});
    std::vector<float> v(xf.data_ptr<float>(), xf.data_ptr<float>() + xf.numel());
    return percentiles_in_place(v, qs);
  }
  const auto xd = x.to(torch::kCPU).to(torch::kFloat64).contiguous().view({-1});
  std::vector<double> v(xd.data_ptr<double>(), xd.data_ptr<double>() + xd.numel());
  return percentiles_in_place(v, qs);
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
