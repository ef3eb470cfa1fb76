#pragma once
// Dice per class and volume (method.md 8):  (2 sum(p g) + eps) / (sum p^2 + sum g^2 + eps), eps = 1e-5,
// p hard (thresholded at 0.5) for test, soft for validation. A class absent from both prediction and
// ground truth scores 1 (the eps terms), one absent from only one of them scores ~0. Sums in double, so
// large volumes lose nothing to float accumulation.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::eval {

inline constexpr double kDiceEps = 1e-5;

/// prediction, truth: (K, ...) of the same sizes, values in [0, 1]. Returns K Dice values.
inline std::vector<double> dice_per_class(const torch::Tensor& prediction, const torch::Tensor& truth,
                                          double eps = kDiceEps) {
  if (!prediction.defined() || !truth.defined() || prediction.sizes() != truth.sizes() || prediction.dim() < 2)
    throw DataError("dice: prediction and ground truth must be (K, ...) tensors of the same sizes");
  const auto p = prediction.to(torch::kCPU, torch::kFloat64).flatten(1);
  const auto g = truth.to(torch::kCPU, torch::kFloat64).flatten(1);
  const auto num = 2 * (p * g).sum(1) + eps;
  const auto den = (p * p).sum(1) + (g * g).sum(1) + eps;
  const auto d = (num / den).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

/// Mean of the values (NaN for none).
inline double mean(const std::vector<double>& v) {
  if (v.empty()) return std::nan("");
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

/// Sample standard deviation (n - 1), 0 for fewer than two values.
inline double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace hdssl::eval
