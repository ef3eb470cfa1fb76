#pragma once
// The vox2vec augmentations (method.md 6, end), applied to crops in Hounsfield units:
//   AxialFilter:   with p 0.5 either an axial (x, y) Gaussian blur, sigma ~ U(0.25, 1.5), or an axial
//                  sharpening b = G_s1(x), s1 ~ U(0.5, 1); out = b + alpha (b - G_0.5(b)), alpha ~ U(10, 30)
//                  (blur or sharpen with equal chance by default: sharpen_p).
//   GaussianNoise: with p 0.5 add N(0, sigma^2), sigma ~ U(0, 30) HU.
//   RandomWindow:  with p 0.8 window [lo, hi], lo ~ U(-1350, -1000), hi ~ U(300, 1000), else
//                  [-1350, 1000]; then scale to [0, 1] and clip. Always the last step.
// Gaussian filters follow scipy.ndimage.gaussian_filter: kernel radius int(4 sigma + 0.5), weights
// normalised to sum 1, mirror ("reflect": d c b a | a b c d) boundaries.
#include "hdssl/augment/policy.hpp"
#include "hdssl/ops/augment_batch.hpp"
#include "hdssl/ops/augment_functors.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace hdssl::augment {

namespace detail {
using ops::reflect_index;  // scipy's "reflect" boundary, shared with the batched path

inline std::vector<float> gaussian_weights(double sigma) {
  const std::int64_t radius = static_cast<std::int64_t>(4.0 * sigma + 0.5);
  std::vector<double> w(static_cast<std::size_t>(2 * radius + 1));
  double sum = 0;
  for (std::int64_t k = -radius; k <= radius; ++k) {
    w[static_cast<std::size_t>(k + radius)] = std::exp(-0.5 * static_cast<double>(k * k) / (sigma * sigma));
    sum += w[static_cast<std::size_t>(k + radius)];
  }
  std::vector<float> out(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) out[i] = static_cast<float>(w[i] / sum);
  return out;
}

/// In-place axial Gaussian filter (along x, then along y; z untouched) of a contiguous (X, Y, Z) view.
inline void gaussian_axial(ViewRef v, double sigma) {
  if (!(sigma > 0)) return;
  const auto w = gaussian_weights(sigma);
  const std::int64_t r = (static_cast<std::int64_t>(w.size()) - 1) / 2;
  const std::int64_t X = v.nx, Y = v.ny, Z = v.nz, plane = Y * Z;
  std::vector<float> tmp(static_cast<std::size_t>(v.numel()));
  // Along x: output slab x = sum_k w_k * input slab reflect(x + k); rows of Y*Z are contiguous.
  at::parallel_for(0, X, 1, [&](std::int64_t x0, std::int64_t x1) {
    for (std::int64_t x = x0; x < x1; ++x) {
      float* out = tmp.data() + x * plane;
      std::fill(out, out + plane, 0.0f);
      for (std::int64_t k = -r; k <= r; ++k) {
        const float wk = w[static_cast<std::size_t>(k + r)];
        const float* in = v.data + reflect_index(x + k, X) * plane;
        for (std::int64_t i = 0; i < plane; ++i) out[i] += wk * in[i];
      }
    }
  });
  // Along y, per x slab: output row y = sum_k w_k * row reflect(y + k).
  at::parallel_for(0, X, 1, [&](std::int64_t x0, std::int64_t x1) {
    for (std::int64_t x = x0; x < x1; ++x) {
      const float* in = tmp.data() + x * plane;
      float* out = v.data + x * plane;
      for (std::int64_t y = 0; y < Y; ++y) {
        float* o = out + y * Z;
        std::fill(o, o + Z, 0.0f);
        for (std::int64_t k = -r; k <= r; ++k) {
          const float wk = w[static_cast<std::size_t>(k + r)];
          const float* row = in + reflect_index(y + k, Y) * Z;
          for (std::int64_t z = 0; z < Z; ++z) o[z] += wk * row[z];
        }
      }
    }
  });
}
}  // namespace detail

/// Policy: axial Gaussian blur or sharpening.
struct AxialFilter {
  struct Options {
    double p = 0.5;          ///< probability of filtering a view
    double sharpen_p = 0.5;  ///< given filtering, probability of sharpening instead of blurring
    double blur_sigma_lo = 0.25, blur_sigma_hi = 1.5;
    double sharpen_sigma_lo = 0.5, sharpen_sigma_hi = 1.0;
    double sharpen_inner_sigma = 0.5;
    double alpha_lo = 10.0, alpha_hi = 30.0;

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.axial_filter");
      r.probability("p", o.p).probability("sharpen_p", o.sharpen_p)
          .read<double>("blur_sigma_lo", o.blur_sigma_lo, 1e-6, 100).read<double>("blur_sigma_hi", o.blur_sigma_hi, 1e-6, 100)
          .read<double>("sharpen_sigma_lo", o.sharpen_sigma_lo, 1e-6, 100)
          .read<double>("sharpen_sigma_hi", o.sharpen_sigma_hi, 1e-6, 100)
          .read<double>("sharpen_inner_sigma", o.sharpen_inner_sigma, 1e-6, 100)
          .read<double>("alpha_lo", o.alpha_lo, 0, 1e6).read<double>("alpha_hi", o.alpha_hi, 0, 1e6);
      r.finish();
      if (o.blur_sigma_hi < o.blur_sigma_lo || o.sharpen_sigma_hi < o.sharpen_sigma_lo || o.alpha_hi < o.alpha_lo)
        throw ConfigError("augment.axial_filter: every *_hi must be >= its *_lo");
      return o;
    }
    nlohmann::json to_json() const {
      return {{"p", p}, {"sharpen_p", sharpen_p}, {"blur_sigma_lo", blur_sigma_lo}, {"blur_sigma_hi", blur_sigma_hi},
              {"sharpen_sigma_lo", sharpen_sigma_lo}, {"sharpen_sigma_hi", sharpen_sigma_hi},
              {"sharpen_inner_sigma", sharpen_inner_sigma}, {"alpha_lo", alpha_lo}, {"alpha_hi", alpha_hi}};
    }
  };
  using options_type = Options;
  static constexpr const char* name = "axial_filter";
  static constexpr Purpose purpose = Purpose::blur;

  /// What one view's stream decides: filter or not, blur or sharpen, the (first) blur's sigma, alpha.
  struct Draw {
    bool on = false, sharpen = false;
    double sigma = 0;
    float alpha = 0;
  };
  static Draw draw(const Options& o, Rng& rng) {
    Draw d;
    d.on = rng.bernoulli(o.p);
    d.sharpen = rng.bernoulli(o.sharpen_p);
    const double u1 = rng.uniform_double(), u2 = rng.uniform_double();
    d.sigma = d.sharpen ? o.sharpen_sigma_lo + (o.sharpen_sigma_hi - o.sharpen_sigma_lo) * u1
                        : o.blur_sigma_lo + (o.blur_sigma_hi - o.blur_sigma_lo) * u1;
    d.alpha = static_cast<float>(o.alpha_lo + (o.alpha_hi - o.alpha_lo) * u2);
    return d;
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    const Draw d = draw(o, rng);
    if (!d.on) return;
    detail::gaussian_axial(v, d.sigma);  // v = b
    if (!d.sharpen) return;
    std::vector<float> inner(v.data, v.data + v.numel());
    detail::gaussian_axial(ViewRef{inner.data(), v.nx, v.ny, v.nz}, o.sharpen_inner_sigma);
    float* data = v.data;
    const float alpha = d.alpha;
    at::parallel_for(0, v.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) data[i] = data[i] + alpha * (data[i] - inner[static_cast<std::size_t>(i)]);
    });
  }

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    const std::vector<Draw> drawn = draw_views<AxialFilter>(o, ops::batch_size(views), seed, batch, view_offset);
    std::vector<ops::AxialFilterDraw> draws(drawn.size());
    std::vector<float> weights;
    const auto add_kernel = [&](double sigma, std::int32_t& offset, std::int32_t& radius) {
      const std::vector<float> w = detail::gaussian_weights(sigma);
      offset = static_cast<std::int32_t>(weights.size());
      radius = static_cast<std::int32_t>((w.size() - 1) / 2);
      weights.insert(weights.end(), w.begin(), w.end());
    };
    // The inner blur of the sharpening has one sigma for every view: one kernel, shared.
    std::int32_t inner_offset = -1, inner_radius = 0;
    for (std::size_t v = 0; v < drawn.size(); ++v) {
      const Draw& d = drawn[v];
      if (!d.on) continue;
      ops::AxialFilterDraw& f = draws[v];
      f.mode = d.sharpen ? 2 : 1;
      f.alpha = d.alpha;
      add_kernel(d.sigma, f.first_offset, f.first_radius);
      if (!d.sharpen) continue;
      if (inner_offset < 0) add_kernel(o.sharpen_inner_sigma, inner_offset, inner_radius);
      f.inner_offset = inner_offset;
      f.inner_radius = inner_radius;
    }
    ops::axial_filter_batch_(views, draws, weights);
  }
};

/// Policy: additive Gaussian noise.
struct GaussianNoise {
  struct Options {
    double p = 0.5;
    double sigma_lo = 0.0, sigma_hi = 30.0;  ///< HU

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.gaussian_noise");
      r.probability("p", o.p).read<double>("sigma_lo", o.sigma_lo, 0, 1e6).read<double>("sigma_hi", o.sigma_hi, 0, 1e6);
      r.finish();
      if (o.sigma_hi < o.sigma_lo) throw ConfigError("augment.gaussian_noise: sigma_hi must be >= sigma_lo");
      return o;
    }
    nlohmann::json to_json() const { return {{"p", p}, {"sigma_lo", sigma_lo}, {"sigma_hi", sigma_hi}}; }
  };
  using options_type = Options;
  static constexpr const char* name = "gaussian_noise";
  static constexpr Purpose purpose = Purpose::noise;

  /// Apply or not, sigma, and the key of the view's noise streams (one per x slab).
  static ops::GaussianNoiseDraw draw(const Options& o, Rng& rng) {
    ops::GaussianNoiseDraw d;
    d.on = rng.bernoulli(o.p);
    d.sigma = o.sigma_lo + (o.sigma_hi - o.sigma_lo) * rng.uniform_double();
    d.key = rng.next_u64();
    return d;
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    const ops::GaussianNoiseDraw d = draw(o, rng);
    if (!d.on) return;
    const std::int64_t plane = v.ny * v.nz;
    at::parallel_for(0, v.nx, 1, [&](std::int64_t x0, std::int64_t x1) {
      for (std::int64_t x = x0; x < x1; ++x) {
        Rng n(d.key, static_cast<std::uint64_t>(x));  // per-slab stream: independent of thread count
        float* s = v.data + x * plane;
        for (std::int64_t i = 0; i < plane; ++i) s[i] += static_cast<float>(d.sigma * n.normal());
      }
    });
  }

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    ops::gaussian_noise_batch_(views, draw_views<GaussianNoise>(o, ops::batch_size(views), seed, batch, view_offset));
  }
};

/// Policy: random intensity window, then scaling to [0, 1] with clipping.
struct RandomWindow {
  struct Options {
    double p = 0.8;
    double lo_min = -1350, lo_max = -1000;  ///< random lower bound range (HU)
    double hi_min = 300, hi_max = 1000;     ///< random upper bound range (HU)
    double lo_default = -1350, hi_default = 1000;  ///< window when not randomised

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.random_window");
      r.probability("p", o.p)
          .read<double>("lo_min", o.lo_min, -1e9, 1e9).read<double>("lo_max", o.lo_max, -1e9, 1e9)
          .read<double>("hi_min", o.hi_min, -1e9, 1e9).read<double>("hi_max", o.hi_max, -1e9, 1e9)
          .read<double>("lo_default", o.lo_default, -1e9, 1e9).read<double>("hi_default", o.hi_default, -1e9, 1e9);
      r.finish();
      if (o.lo_max < o.lo_min || o.hi_max < o.hi_min || !(o.lo_max < o.hi_min) || !(o.lo_default < o.hi_default))
        throw ConfigError("augment.random_window: need lo_min <= lo_max < hi_min <= hi_max and lo_default < hi_default");
      return o;
    }
    nlohmann::json to_json() const {
      return {{"p", p}, {"lo_min", lo_min}, {"lo_max", lo_max}, {"hi_min", hi_min}, {"hi_max", hi_max},
              {"lo_default", lo_default}, {"hi_default", hi_default}};
    }
  };
  using options_type = Options;
  static constexpr const char* name = "random_window";
  static constexpr Purpose purpose = Purpose::window;

  /// The window of one view: random with probability p, else the default; as float lo and 1 / (hi - lo).
  static ops::WindowDraw draw(const Options& o, Rng& rng) {
    const bool on = rng.bernoulli(o.p);
    const double u1 = rng.uniform_double(), u2 = rng.uniform_double();
    const double lo = on ? o.lo_min + (o.lo_max - o.lo_min) * u1 : o.lo_default;
    const double hi = on ? o.hi_min + (o.hi_max - o.hi_min) * u2 : o.hi_default;
    return ops::WindowDraw{static_cast<float>(lo), static_cast<float>(1.0 / (hi - lo))};
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    const ops::WindowDraw w = draw(o, rng);
    float* d = v.data;
    at::parallel_for(0, v.numel(), 1 << 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) d[i] = ops::window_value(d[i], w.lo, w.scale);
    });
  }

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    ops::window_batch_(views, draw_views<RandomWindow>(o, ops::batch_size(views), seed, batch, view_offset));
  }
};

}  // namespace hdssl::augment
