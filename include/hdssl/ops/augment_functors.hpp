#pragma once
// The per-voxel work of the intensity and noise augmentations (Bezier curve, in-/out-painting, vox2vec's
// axial filter, Gaussian noise and window), written once for the CPU and the CUDA kernels
// (ops/cuda/augment.cuh). Plain C++ over raw pointers: no LibTorch, no allocation, no exceptions.
//
// The policies (augment/*.hpp) draw every random choice of a view on the host from the view's stream, as
// their one-view CPU path does; these functors then apply the drawn parameters to a whole batch, one
// voxel (or one noise pair) per call. Voxel noise is read from the same Philox streams the one-view path
// consumes sequentially, by position: draw o of stream (key, item) is word o % 4 of block o / 4.
//
// Equality with the one-view CPU path:
//  - Bezier, in-/out-painting, axial filter, window: bit for bit. Every float operation is one IEEE
//    operation in the one-view loop's order; on the device the *_rn intrinsics keep nvcc from fusing a
//    multiply and an add (the host build has no FMA contraction).
//  - Gaussian noise: the Box-Muller draw uses double log, sqrt, sin and cos, which CUDA computes within
//    1-2 ulp (double) of the host's libm; after the float conversion a voxel may differ by one float ulp.
#include "hdssl/config.hpp"
#include "hdssl/core/rng.hpp"

#include <cmath>
#include <cstdint>

namespace hdssl::ops {

// ------------------------------------------------------------------ exact float arithmetic
HDSSL_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
HDSSL_HOST_DEVICE inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
HDSSL_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

/// What the (ordinal + 1)-th call of Rng(key, item).uniform() returns, without the ordinal calls before it.
HDSSL_HOST_DEVICE inline float uniform_at(std::uint64_t key, std::uint64_t item, std::uint64_t ordinal) {
  Rng r(key, item, ordinal >> 2);
  std::uint32_t word = 0;
  for (std::uint64_t k = 0; k <= (ordinal & 3u); ++k) word = r.next_u32();
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);  // Rng::uniform's mapping
}

/// scipy's "reflect" boundary for any offset: period 2n, mirrored halves (d c b a | a b c d | d c b a).
HDSSL_HOST_DEVICE inline std::int64_t reflect_index(std::int64_t i, std::int64_t n) {
  const std::int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

/// A batch of equally shaped contiguous (X, Y, Z) float views, z fastest, view after view.
struct AugmentViews {
  float* data = nullptr;
  std::int64_t views = 0, nx = 0, ny = 0, nz = 0;

  HDSSL_HOST_DEVICE std::int64_t per_view() const { return nx * ny * nz; }
  HDSSL_HOST_DEVICE std::int64_t numel() const { return views * per_view(); }
};

// ------------------------------------------------------------------ Bezier curve
/// The monotone piecewise-linear map of one Bezier curve as flat arrays (augment::BezierMap builds it):
/// `samples` sorted x (plus a +inf sentinel), their y and segment slopes, and `buckets + 1` bucket starts
/// over x in [0, 1]. A null `xf` means "leave the view as it is".
struct BezierTable {
  const float* xf = nullptr;
  const float* yf = nullptr;
  const float* slope = nullptr;
  const std::int32_t* bucket = nullptr;
  std::int32_t samples = 0, buckets = 0;
  float x_first = 0.0f, x_last = 1.0f, scale = 1.0f;
  bool single_step = false;  ///< every bucket holds at most one sample: one compare finds the segment

  /// np.interp semantics, clamped to the end values; NaN maps to the first y.
  HDSSL_HOST_DEVICE float operator()(float v) const { return single_step ? map<true>(v) : map<false>(v); }

  template <bool SingleStep>
  HDSSL_HOST_DEVICE float map(float v) const {
    float c = v > x_first ? v : x_first;  // also NaN -> x_0
    c = c < x_last ? c : x_last;
    // c * scale is exact (scale is a power of two), so the cast is floor.
    auto j = static_cast<std::int64_t>(bucket[static_cast<std::int64_t>(mul_rn(c, scale))]);
    if constexpr (SingleStep) {
      j += xf[j + 1] <= c ? 1 : 0;
    } else {
      while (xf[j + 1] <= c) ++j;
    }
    return add_rn(yf[j], mul_rn(sub_rn(c, xf[j]), slope[j]));
  }
};

/// Voxel i of the batch through its view's table.
struct BezierFunctor {
  AugmentViews v;
  const BezierTable* tables = nullptr;  ///< one per view

  HDSSL_HOST_DEVICE std::int64_t size() const { return v.numel(); }
  HDSSL_HOST_DEVICE void operator()(std::int64_t i) const {
    const BezierTable& t = tables[i / v.per_view()];
    if (t.xf != nullptr) v.data[i] = t(v.data[i]);
  }
};

// ------------------------------------------------------------------ in-painting and out-painting
/// An axis-aligned box of a view (start and size per axis).
struct NoiseBox {
  std::int32_t start[3] = {0, 0, 0}, size[3] = {0, 0, 0};

  HDSSL_HOST_DEVICE bool contains(std::int64_t x, std::int64_t y, std::int64_t z) const {
    return x >= start[0] && x < start[0] + size[0] && y >= start[1] && y < start[1] + size[1] && z >= start[2] &&
           z < start[2] + size[2];
  }
};

/// The boxes of one view: boxes[begin, end) of the batch's box array, and the key of its noise streams.
struct NoiseBoxRange {
  std::uint64_t key = 0;
  std::int32_t begin = 0, end = 0;
};

/// In-painting (inside = true): a voxel inside box k of its view (the last such box: later boxes overwrite
/// earlier ones) takes draw ((x - x0) * sy + (y - y0)) * sz + (z - z0) of stream (key, k), the box filled in
/// x, y, z order. Out-painting (inside = false): in a view with boxes, a voxel outside every box takes draw
/// y * nz + z of stream (key, x); voxels inside keep their value.
struct NoiseBoxFunctor {
  AugmentViews v;
  const NoiseBoxRange* ranges = nullptr;  ///< one per view
  const NoiseBox* boxes = nullptr;
  bool inside = true;

  HDSSL_HOST_DEVICE std::int64_t size() const { return v.numel(); }
  HDSSL_HOST_DEVICE void operator()(std::int64_t i) const {
    const std::int64_t n = v.per_view(), local = i % n;
    const NoiseBoxRange r = ranges[i / n];
    if (r.end <= r.begin) return;
    const std::int64_t x = local / (v.ny * v.nz), y = (local / v.nz) % v.ny, z = local % v.nz;
    if (inside) {
      for (std::int32_t k = r.end - 1; k >= r.begin; --k) {
        const NoiseBox& b = boxes[k];
        if (!b.contains(x, y, z)) continue;
        const std::int64_t ordinal = ((x - b.start[0]) * b.size[1] + (y - b.start[1])) * b.size[2] + (z - b.start[2]);
        v.data[i] = uniform_at(r.key, static_cast<std::uint64_t>(k - r.begin), static_cast<std::uint64_t>(ordinal));
        return;
      }
      return;
    }
    for (std::int32_t k = r.begin; k < r.end; ++k)
      if (boxes[k].contains(x, y, z)) return;
    v.data[i] = uniform_at(r.key, static_cast<std::uint64_t>(x), static_cast<std::uint64_t>(y * v.nz + z));
  }
};

// ------------------------------------------------------------------ vox2vec: Gaussian noise
/// What GaussianNoise drew for one view.
struct GaussianNoiseDraw {
  bool on = false;
  double sigma = 0;
  std::uint64_t key = 0;
};

/// Noise pair m of slab x: the one-view path reads slab x's stream (key, x) with Rng::normal(), whose
/// Box-Muller draw m consumes block m exactly (two doubles) and gives voxels 2m (cos) and 2m + 1 (sin).
struct GaussianNoiseFunctor {
  AugmentViews v;
  const GaussianNoiseDraw* draws = nullptr;  ///< one per view

  HDSSL_HOST_DEVICE std::int64_t pairs_per_slab() const { return (v.ny * v.nz + 1) / 2; }
  HDSSL_HOST_DEVICE std::int64_t size() const { return v.views * v.nx * pairs_per_slab(); }
  HDSSL_HOST_DEVICE void operator()(std::int64_t j) const {
    const std::int64_t pairs = pairs_per_slab(), per_view = v.nx * pairs;
    const GaussianNoiseDraw d = draws[j / per_view];
    if (!d.on) return;
    const std::int64_t x = (j % per_view) / pairs, m = j % pairs, plane = v.ny * v.nz;
    Rng n(d.key, static_cast<std::uint64_t>(x), static_cast<std::uint64_t>(m));
    const double u1 = 1.0 - n.uniform_double();  // as Rng::normal()
    const double u2 = n.uniform_double();
    const double r = ::sqrt(-2.0 * ::log(u1));
    const double t = 6.283185307179586476925 * u2;
    float* s = v.data + (j / per_view) * v.per_view() + x * plane;
    const std::int64_t i = 2 * m;
    s[i] = add_rn(s[i], static_cast<float>(d.sigma * (r * ::cos(t))));
    if (i + 1 < plane) s[i + 1] = add_rn(s[i + 1], static_cast<float>(d.sigma * (r * ::sin(t))));
  }
};

// ------------------------------------------------------------------ vox2vec: axial blur / sharpening
/// What AxialFilter drew for one view: mode 0 = untouched, 1 = blur, 2 = sharpen. Weights (2r + 1 floats,
/// augment::detail::gaussian_weights) live in the batch's weight array: `first` for the blur (or the
/// sharpening's first blur), `inner` for the sharpening's inner blur.
struct AxialFilterDraw {
  std::int32_t mode = 0;
  std::int32_t first_offset = 0, first_radius = 0;
  std::int32_t inner_offset = 0, inner_radius = 0;
  float alpha = 0.0f;
};

/// One pass of the separable axial filter, one output voxel per call, summing w_k * in[reflect(. + k)] from
/// k = -r up as the one-view loop does. Passes: 0 = first blur along x (views -> tmp), 1 = along y (tmp ->
/// views); 2 = inner blur along x (views -> tmp), 3 = along y fused with the sharpening
/// out = b + alpha (b - inner) (tmp, views -> views).
struct AxialFilterFunctor {
  AugmentViews v;
  float* tmp = nullptr;  ///< a second batch of the same shape
  const AxialFilterDraw* draws = nullptr;
  const float* weights = nullptr;
  std::int32_t pass = 0;

  HDSSL_HOST_DEVICE std::int64_t size() const { return v.numel(); }
  HDSSL_HOST_DEVICE void operator()(std::int64_t i) const {
    const std::int64_t n = v.per_view();
    const AxialFilterDraw d = draws[i / n];
    if (d.mode == 0 || (pass >= 2 && d.mode != 2)) return;
    const float* w = weights + (pass < 2 ? d.first_offset : d.inner_offset);
    const std::int64_t r = pass < 2 ? d.first_radius : d.inner_radius;
    const std::int64_t base = (i / n) * n, local = i - base, plane = v.ny * v.nz;
    const std::int64_t x = local / plane, y = (local / v.nz) % v.ny, z = local % v.nz;
    float acc = 0.0f;
    if (pass % 2 == 0) {  // along x: views -> tmp
      const float* in = v.data + base + y * v.nz + z;
      for (std::int64_t k = -r; k <= r; ++k) acc = add_rn(acc, mul_rn(w[k + r], in[reflect_index(x + k, v.nx) * plane]));
      tmp[i] = acc;
      return;
    }
    const float* in = tmp + base + x * plane + z;  // along y: tmp -> views
    for (std::int64_t k = -r; k <= r; ++k) acc = add_rn(acc, mul_rn(w[k + r], in[reflect_index(y + k, v.ny) * v.nz]));
    if (pass == 1) {
      v.data[i] = acc;
    } else {
      const float b = v.data[i];
      v.data[i] = add_rn(b, mul_rn(d.alpha, sub_rn(b, acc)));
    }
  }
};

// ------------------------------------------------------------------ vox2vec: window
/// (v - lo) * scale clipped to [0, 1], NaN to 0: std::min(1, std::max(0, .)) spelled out for the device.
HDSSL_HOST_DEVICE inline float window_value(float v, float lo, float scale) {
  const float s = mul_rn(sub_rn(v, lo), scale);
  const float m = 0.0f < s ? s : 0.0f;  // std::max(0.0f, s)
  return m < 1.0f ? m : 1.0f;           // std::min(1.0f, m)
}

/// What RandomWindow drew for one view.
struct WindowDraw {
  float lo = 0.0f, scale = 1.0f;
};

struct WindowFunctor {
  AugmentViews v;
  const WindowDraw* draws = nullptr;  ///< one per view

  HDSSL_HOST_DEVICE std::int64_t size() const { return v.numel(); }
  HDSSL_HOST_DEVICE void operator()(std::int64_t i) const {
    const WindowDraw d = draws[i / v.per_view()];
    v.data[i] = window_value(v.data[i], d.lo, d.scale);
  }
};

}  // namespace hdssl::ops
