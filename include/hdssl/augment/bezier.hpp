#pragma once
// Non-linear intensity transform by a random cubic Bezier curve (method.md 6.2, Models Genesis).
//
// Control points (0,0), (r1,r2), (r3,r4), (1,1) with r ~ U[0,1). The curve is sampled at `samples`
// evenly spaced t; x and y samples are sorted independently (so the map is monotone even when the
// curve folds back), and each voxel is mapped by piecewise-linear interpolation x -> y, clamped to
// the end values outside [x_0, x_last] (numpy's np.interp). Inverted (y sorted descending) with
// probability invert_p: [ref] never, Models Genesis 0.5.
//
// Speed: the reference interpolates a 100,000-sample curve with a binary search per voxel. Here a
// bucket table (32 entries per sample, over x in [0, 1]) finds each voxel's segment in a few
// steps (usually none); the result is the same piecewise-linear map. `samples` defaults to 1024: the
// map then differs from the reference's 100,000-sample map by at most ~4e-5 (measured by the tests
// over random curves); 100000 reproduces the reference.
#include "hdssl/augment/policy.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace hdssl::augment {

/// The monotone piecewise-linear map built from one Bezier curve.
class BezierMap {
 public:
  /// Samples the curve with control points (0,0), (r1,r2), (r3,r4), (1,1) at n >= 2 points.
  BezierMap(double r1, double r2, double r3, double r4, std::int64_t n, bool invert) {
    if (n < 2) throw ConfigError("augment.bezier.samples: need at least 2 curve samples, got " + std::to_string(n));
    xs_.resize(static_cast<std::size_t>(n));
    ys_.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      const double t = static_cast<double>(i) / static_cast<double>(n - 1);
      const double u = 1.0 - t;
      const double b1 = 3 * u * u * t, b2 = 3 * u * t * t, b3 = t * t * t;
      xs_[i] = b1 * r1 + b2 * r3 + b3;
      ys_[i] = b1 * r2 + b2 * r4 + b3;
    }
    std::sort(xs_.begin(), xs_.end());
    if (invert)
      std::sort(ys_.begin(), ys_.end(), std::greater<double>());
    else
      std::sort(ys_.begin(), ys_.end());
    xf_.assign(xs_.begin(), xs_.end());
    yf_.assign(ys_.begin(), ys_.end());
    slope_.resize(xs_.size());
    for (std::size_t j = 0; j + 1 < xs_.size(); ++j) {
      const double dx = xs_[j + 1] - xs_[j];
      slope_[j] = dx > 0 ? static_cast<float>((ys_[j + 1] - ys_[j]) / dx) : 0.0f;
    }
    slope_.back() = 0.0f;
    // bucket_[k] = last sample j with x_j <= k / buckets: a starting point for the segment search.
    // 32 buckets per sample (at most 65536, 256 KiB) make the forward search step in only a few
    // percent of the voxels, so its branch is almost always predicted: one bucket per sample
    // measured ~5x slower per voxel, eight ~1.3x slower.
    buckets_ = std::min<std::int64_t>(std::max<std::int64_t>(32 * n, 1024), 1 << 16);
    bucket_.resize(static_cast<std::size_t>(buckets_ + 1));
    std::size_t j = 0;
    for (std::int64_t k = 0; k <= buckets_; ++k) {
      const double edge = static_cast<double>(k) / static_cast<double>(buckets_);
      while (j + 1 < xs_.size() && xs_[j + 1] <= edge) ++j;
      bucket_[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(j);
    }
  }

  /// The map at v (float path used on voxels).
  float operator()(float v) const {
    const std::size_t last = xf_.size() - 1;
    if (!(v > xf_[0])) return yf_[0];
    if (v >= xf_[last]) return yf_[last];
    std::int64_t k = static_cast<std::int64_t>(v * static_cast<float>(buckets_));
    k = std::min<std::int64_t>(std::max<std::int64_t>(k, 0), buckets_);
    std::size_t j = static_cast<std::size_t>(bucket_[static_cast<std::size_t>(k)]);
    while (j > 0 && xf_[j] > v) --j;             // float rounding of v * buckets
    while (j + 1 < last && xf_[j + 1] <= v) ++j;  // usually zero or one step
    return yf_[j] + (v - xf_[j]) * slope_[j];
  }

  const std::vector<double>& xs() const { return xs_; }  ///< sorted x samples
  const std::vector<double>& ys() const { return ys_; }  ///< y samples (sorted; descending if inverted)

 private:
  std::vector<double> xs_, ys_;
  std::vector<float> xf_, yf_, slope_;
  std::vector<std::int32_t> bucket_;
  std::int64_t buckets_ = 0;
};

/// Policy: Bezier intensity curve.
struct Bezier {
  struct Options {
    double p = 0.9;              ///< probability of applying the curve to a view
    double invert_p = 0.0;       ///< probability of the inverted curve ([ref] 0, Models Genesis 0.5)
    std::int64_t samples = 1024; ///< curve samples ([ref] 100000)

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.bezier");
      r.probability("p", o.p).probability("invert_p", o.invert_p).read<std::int64_t>("samples", o.samples, 2, 10000000);
      r.finish();
      return o;
    }
    nlohmann::json to_json() const { return {{"p", p}, {"invert_p", invert_p}, {"samples", samples}}; }
  };
  using options_type = Options;
  static constexpr const char* name = "bezier";
  static constexpr Purpose purpose = Purpose::bezier;

  /// Draws (apply?, r1..r4, invert?) from rng; returns the map or nothing.
  static bool draw(const Options& o, Rng& rng, double r[4], bool& invert) {
    const bool on = rng.bernoulli(o.p);
    for (int i = 0; i < 4; ++i) r[i] = rng.uniform_double();
    invert = rng.bernoulli(o.invert_p);
    return on;
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    double r[4];
    bool invert = false;
    if (!draw(o, rng, r, invert)) return;
    const BezierMap map(r[0], r[1], r[2], r[3], o.samples, invert);
    map_voxels(v, map);
  }

  /// Maps every voxel of v (parallel when called outside a parallel region).
  static void map_voxels(ViewRef v, const BezierMap& map) {
    float* d = v.data;
    at::parallel_for(0, v.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) d[i] = map(d[i]);
    });
  }
};

}  // namespace hdssl::augment
