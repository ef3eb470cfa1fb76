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
#include "hdssl/ops/augment_batch.hpp"
#include "hdssl/ops/augment_functors.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
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
    // Float copies for the voxel loop, with a +inf sentinel after the last x so the segment search
    // never needs a bounds test.
    const std::size_t count = xs_.size();
    xf_.assign(xs_.begin(), xs_.end());
    xf_.push_back(std::numeric_limits<float>::infinity());
    yf_.assign(ys_.begin(), ys_.end());
    slope_.assign(count, 0.0f);  // slope_[last] = 0: x_last maps to y_last exactly
    for (std::size_t j = 0; j + 1 < count; ++j) {
      const double dx = xs_[j + 1] - xs_[j];
      slope_[j] = dx > 0 ? static_cast<float>((ys_[j + 1] - ys_[j]) / dx) : 0.0f;
    }
    // bucket_[k] = the segment (last j with x_j <= c) of c = k / buckets, the smallest value whose
    // bucket is k: buckets is a power of two, so c * buckets is exact in float and int(c * buckets)
    // is exactly floor. A voxel's segment is then bucket_[k] plus the samples inside its bucket.
    // 32 buckets per sample (at most 65536, 256 KiB) leave at most one sample inside every bucket
    // for ordinary curves; that is checked here and the voxel loop is then branch-free (one bucket
    // per sample with a search loop measured ~5x slower per voxel).
    buckets_ = 1024;
    while (buckets_ < 32 * n && buckets_ < (1 << 16)) buckets_ *= 2;
    const float inv = 1.0f / static_cast<float>(buckets_);
    scale_ = static_cast<float>(buckets_);
    x_first_ = xf_[0];
    x_last_ = xf_[count - 1];
    bucket_.resize(static_cast<std::size_t>(buckets_ + 1));
    single_step_ = true;
    std::size_t j = 0;
    for (std::int64_t k = 0; k <= buckets_; ++k) {
      const float edge = static_cast<float>(k) * inv;
      while (xf_[j + 1] <= edge) ++j;  // sentinel stops it
      bucket_[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(j);
      const float next = static_cast<float>(k + 1) * inv;  // bucket k holds c in [edge, next)
      std::size_t inside = 0;
      while (xf_[j + 1 + inside] < next) ++inside;
      single_step_ = single_step_ && inside <= 1;
    }
  }

  /// The map at v (float path used on voxels): np.interp semantics, NaN maps to the first y.
  float operator()(float v) const { return table()(v); }

  /// Maps n values in place, choosing the search once for the whole range.
  void map_range(float* d, std::int64_t n) const {
    const ops::BezierTable t = table();
    if (t.single_step)
      for (std::int64_t i = 0; i < n; ++i) d[i] = t.map<true>(d[i]);
    else
      for (std::int64_t i = 0; i < n; ++i) d[i] = t.map<false>(d[i]);
  }

  /// The map as flat arrays for the voxel loops of both devices (ops/augment_functors.hpp); it points into
  /// this object and is valid while the object lives unchanged.
  ops::BezierTable table() const {
    ops::BezierTable t;
    t.xf = xf_.data();
    t.yf = yf_.data();
    t.slope = slope_.data();
    t.bucket = bucket_.data();
    t.samples = static_cast<std::int32_t>(yf_.size());
    t.buckets = static_cast<std::int32_t>(buckets_);
    t.x_first = x_first_;
    t.x_last = x_last_;
    t.scale = scale_;
    t.single_step = single_step_;
    return t;
  }

  /// True when every bucket needs at most one step (the branch-free path); for tests.
  bool single_step() const { return single_step_; }

  const std::vector<double>& xs() const { return xs_; }  ///< sorted x samples
  const std::vector<double>& ys() const { return ys_; }  ///< y samples (sorted; descending if inverted)

 private:
  std::vector<double> xs_, ys_;
  std::vector<float> xf_, yf_, slope_;
  std::vector<std::int32_t> bucket_;
  std::int64_t buckets_ = 0;
  bool single_step_ = false;
  float x_first_ = 0.0f, x_last_ = 1.0f, scale_ = 1.0f;
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

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    const std::size_t V = ops::batch_size(views);
    std::vector<std::optional<BezierMap>> maps(V);  // the tables point into these
    std::vector<ops::BezierTable> tables(V);
    for (std::size_t v = 0; v < V; ++v) {
      Rng rng = view_stream<Bezier>(seed, batch, view_offset + v);
      double r[4];
      bool invert = false;
      if (!draw(o, rng, r, invert)) continue;
      maps[v].emplace(r[0], r[1], r[2], r[3], o.samples, invert);
      tables[v] = maps[v]->table();
    }
    ops::bezier_batch_(views, tables);
  }

  /// Maps every voxel of v (parallel when called outside a parallel region).
  static void map_voxels(ViewRef v, const BezierMap& map) {
    float* d = v.data;
    at::parallel_for(0, v.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      map.map_range(d + b, e - b);
    });
  }
};

}  // namespace hdssl::augment
