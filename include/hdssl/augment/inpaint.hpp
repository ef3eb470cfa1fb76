#pragma once
// Local in-painting and out-painting (method.md 6.3, Models Genesis).
//
// In-painting [ref: always applied]: boxes are added while fewer than max_boxes exist and a fresh
// U[0,1) < continue_p (so possibly none); box size per axis uniform in [dim/10, dim/5) (integer
// division: 12..24 in-plane and 3..5 slices for 128x128x32), start uniform in [3, dim - size - 3),
// filled with U[0,1) noise.
// Out-painting (Models Genesis, optional): the whole view becomes U[0,1) noise except a first box of
// size dim - U[3 dim/7, 4 dim/7) per axis and up to max_boxes more boxes (same continue rule), which
// keep the original voxels.
// Axes too small for these ranges (a range that would be empty) are clamped: size to [1, dim],
// start to [0, dim - size]. Documented in docs/augment.md.
#include "hdssl/augment/policy.hpp"
#include "hdssl/ops/augment_batch.hpp"
#include "hdssl/ops/augment_functors.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace hdssl::augment {

namespace detail {
/// Integer uniform in [lo, hi) with the clamping rule above (empty range -> lo clamped to [min, max]).
inline std::int64_t clamped_range(Rng& rng, std::int64_t lo, std::int64_t hi, std::int64_t min, std::int64_t max) {
  lo = std::max(lo, min);
  hi = std::min(hi, max + 1);
  if (hi <= lo) return std::min(std::max(lo, min), max);
  return rng.range(lo, hi);
}

struct Box {
  std::array<std::int64_t, 3> start{}, size{};
};

/// Box with size per axis in [size_lo(dim), size_hi(dim)) and start in [3, dim - size - 3).
template <typename SizeLo, typename SizeHi>
Box draw_box(const ViewRef& v, Rng& rng, SizeLo size_lo, SizeHi size_hi) {
  Box b;
  for (int a = 0; a < 3; ++a) {
    const std::int64_t d = v.dim(a);
    b.size[a] = clamped_range(rng, size_lo(d), size_hi(d), 1, d);
  }
  for (int a = 0; a < 3; ++a) {
    const std::int64_t d = v.dim(a);
    b.start[a] = clamped_range(rng, 3, d - b.size[a] - 3, 0, d - b.size[a]);
  }
  return b;
}

/// The boxes of every view of a batch as their policy P draws them, with each view's noise key, then
/// in-painted (inside) or out-painted on the views' device (ops::noise_boxes_batch_).
template <typename P>
void noise_boxes_batch(torch::Tensor views, const typename P::Options& o, std::uint64_t seed, std::uint64_t batch,
                       std::uint64_t view_offset, bool inside) {
  const std::size_t V = ops::batch_size(views);
  const ops::AugmentViews shape = ops::augment_views(views, V, P::name);
  const ViewRef dims{nullptr, shape.nx, shape.ny, shape.nz};
  std::vector<std::uint64_t> keys(V);
  std::vector<std::vector<ops::NoiseBox>> boxes(V);
  for (std::size_t v = 0; v < V; ++v) {
    Rng rng = view_stream<P>(seed, batch, view_offset + v);
    for (const Box& b : P::draw(dims, o, rng, keys[v])) {
      ops::NoiseBox n;
      for (int a = 0; a < 3; ++a) {
        n.start[a] = static_cast<std::int32_t>(b.start[a]);
        n.size[a] = static_cast<std::int32_t>(b.size[a]);
      }
      boxes[v].push_back(n);
    }
  }
  ops::noise_boxes_batch_(views, keys, boxes, inside);
}

/// Fills box b of v with U[0,1) noise from stream (key, item).
inline void fill_noise(const ViewRef& v, const Box& b, std::uint64_t key, std::uint64_t item) {
  Rng n(key, item);
  for (std::int64_t x = b.start[0]; x < b.start[0] + b.size[0]; ++x)
    for (std::int64_t y = b.start[1]; y < b.start[1] + b.size[1]; ++y) {
      float* row = &v.at(x, y, b.start[2]);
      for (std::int64_t z = 0; z < b.size[2]; ++z) row[z] = n.uniform();
    }
}
}  // namespace detail

/// Policy: local in-painting with noise boxes.
struct Inpaint {
  struct Options {
    double p = 1.0;                ///< probability of in-painting a view ([ref] 1)
    std::int64_t max_boxes = 30;   ///< [ref] 30 (Models Genesis 5)
    double continue_p = 0.95;      ///< another box is added while U[0,1) < continue_p

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.inpaint");
      r.probability("p", o.p).read<std::int64_t>("max_boxes", o.max_boxes, 0, 100000).probability("continue_p", o.continue_p);
      r.finish();
      return o;
    }
    nlohmann::json to_json() const { return {{"p", p}, {"max_boxes", max_boxes}, {"continue_p", continue_p}}; }
  };
  using options_type = Options;
  static constexpr const char* name = "inpaint";
  static constexpr Purpose purpose = Purpose::inpaint;

  /// The boxes this stream gives (no voxel touched): for tests and for documentation of the rule.
  static std::vector<detail::Box> draw(const ViewRef& v, const Options& o, Rng& rng, std::uint64_t& noise_key) {
    std::vector<detail::Box> boxes;
    noise_key = rng.next_u64();
    if (!rng.bernoulli(o.p)) return boxes;
    while (static_cast<std::int64_t>(boxes.size()) < o.max_boxes && rng.uniform_double() < o.continue_p)
      boxes.push_back(detail::draw_box(v, rng, [](std::int64_t d) { return d / 10; },
                                       [](std::int64_t d) { return d / 5; }));
    return boxes;
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    std::uint64_t key = 0;
    const auto boxes = draw(v, o, rng, key);
    for (std::size_t i = 0; i < boxes.size(); ++i) detail::fill_noise(v, boxes[i], key, i);
  }

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    detail::noise_boxes_batch<Inpaint>(views, o, seed, batch, view_offset, /*inside=*/true);
  }
};

/// Policy: out-painting (noise everywhere except kept boxes of the original).
struct Outpaint {
  struct Options {
    double p = 0.0;               ///< probability of out-painting a view (off in both presets)
    std::int64_t max_boxes = 4;   ///< extra kept boxes after the first (Models Genesis 4)
    double continue_p = 0.95;

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader r(j, "augment.outpaint");
      r.probability("p", o.p).read<std::int64_t>("max_boxes", o.max_boxes, 0, 100000).probability("continue_p", o.continue_p);
      r.finish();
      return o;
    }
    nlohmann::json to_json() const { return {{"p", p}, {"max_boxes", max_boxes}, {"continue_p", continue_p}}; }
  };
  using options_type = Options;
  static constexpr const char* name = "outpaint";
  static constexpr Purpose purpose = Purpose::outpaint;

  static std::vector<detail::Box> draw(const ViewRef& v, const Options& o, Rng& rng, std::uint64_t& noise_key) {
    std::vector<detail::Box> boxes;
    noise_key = rng.next_u64();
    if (!rng.bernoulli(o.p)) return boxes;
    auto lo = [](std::int64_t d) { return d - (4 * d / 7) + 1; };  // d - U[3d/7, 4d/7) = U(d - 4d/7, d - 3d/7]
    auto hi = [](std::int64_t d) { return d - (3 * d / 7) + 1; };
    boxes.push_back(detail::draw_box(v, rng, lo, hi));
    while (static_cast<std::int64_t>(boxes.size()) < o.max_boxes + 1 && rng.uniform_double() < o.continue_p)
      boxes.push_back(detail::draw_box(v, rng, lo, hi));
    return boxes;
  }

  static void apply(ViewRef v, const Options& o, Rng& rng) {
    std::uint64_t key = 0;
    const auto boxes = draw(v, o, rng, key);
    if (boxes.empty()) return;
    // Keep a copy of the kept boxes, fill everything with noise, then put the boxes back.
    std::vector<float> original(v.data, v.data + v.numel());
    at::parallel_for(0, v.nx, 1, [&](std::int64_t x0, std::int64_t x1) {
      for (std::int64_t x = x0; x < x1; ++x) {
        Rng n(key, static_cast<std::uint64_t>(x));  // one stream per x-slab: same noise for any thread count
        float* slab = v.data + x * v.ny * v.nz;
        for (std::int64_t i = 0; i < v.ny * v.nz; ++i) slab[i] = n.uniform();
      }
    });
    for (const auto& b : boxes)
      for (std::int64_t x = b.start[0]; x < b.start[0] + b.size[0]; ++x)
        for (std::int64_t y = b.start[1]; y < b.start[1] + b.size[1]; ++y) {
          const std::int64_t i = v.index(x, y, b.start[2]);
          std::copy(original.begin() + i, original.begin() + i + b.size[2], v.data + i);
        }
  }

  /// A batch of views (CPU or CUDA) with view v drawing from stream view_offset + v (ops/augment_batch.hpp).
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    detail::noise_boxes_batch<Outpaint>(views, o, seed, batch, view_offset, /*inside=*/false);
  }
};

}  // namespace hdssl::augment
