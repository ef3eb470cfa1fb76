#pragma once
// Sliding-window inference over a whole volume (method.md 8, MONAI's sliding_window_inference semantics).
//
// Windows: per axis, starts 0, stride, 2 stride, ... and a last window shifted to end exactly at the border
// (an axis no longer than the window has the single start 0; the volume is padded up to the window there
// and the padding cropped off again). Windows go through `predict` in batches of `batch`.
// Blending of overlapping windows:
//   gaussian  (default, as MONAI) each window's output weighted by a Gaussian importance map centred on the
//             window, sigma = sigma_scale * window per axis, normalised to a maximum of 1 and floored at
//             1e-3; outputs are the weighted mean;
//   constant  the plain mean of every window covering a voxel;
//   overwrite the reference's stitching: each voxel takes the output of the window whose centre is
//             nearest to it (per axis; ties to the later window), i.e. windows overwrite their centres.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::eval {

enum class Blend { gaussian, constant, overwrite };

inline constexpr std::array<std::pair<const char*, Blend>, 3> kBlendNames{
    {{"gaussian", Blend::gaussian}, {"constant", Blend::constant}, {"overwrite", Blend::overwrite}}};

struct SlidingWindowOptions {
  std::array<int64_t, 3> window{{128, 128, 32}};
  std::array<int64_t, 3> stride{{64, 64, 16}};
  Blend blend = Blend::gaussian;
  double sigma_scale = 0.125;  ///< MONAI's default
  int64_t batch = 4;           ///< windows per call of predict

  void validate() const {
    for (int a = 0; a < 3; ++a) {
      if (window[a] < 1) throw ConfigError("sliding window: every window size must be >= 1");
      if (stride[a] < 1 || stride[a] > window[a])
        throw ConfigError("sliding window: every stride must lie in [1, window] (a stride past the window leaves gaps)");
    }
    if (!(sigma_scale > 0)) throw ConfigError("sliding window: sigma_scale must be > 0");
    if (batch < 1) throw ConfigError("sliding window: batch must be >= 1");
  }
};

/// Window starts along one axis of `size` voxels (see the top of this file).
inline std::vector<int64_t> window_starts(int64_t size, int64_t window, int64_t stride) {
  std::vector<int64_t> s;
  if (size <= window) return {0};
  for (int64_t p = 0; p + window < size; p += stride) s.push_back(p);
  s.push_back(size - window);
  return s;
}

namespace detail {

/// Gaussian importance map (wx, wy, wz) as MONAI's compute_importance_map.
inline torch::Tensor gaussian_importance(const std::array<int64_t, 3>& w, double sigma_scale) {
  std::vector<torch::Tensor> axes;
  for (int a = 0; a < 3; ++a) {
    const double sigma = std::max(sigma_scale * static_cast<double>(w[a]), 1e-6);
    const auto x = torch::arange(w[a], torch::kFloat64) - (static_cast<double>(w[a]) - 1) / 2;
    axes.push_back(torch::exp(-(x * x) / (2 * sigma * sigma)));
  }
  auto m = axes[0].view({-1, 1, 1}) * axes[1].view({1, -1, 1}) * axes[2].view({1, 1, -1});
  m = m / m.max();
  return m.clamp_min(1e-3).to(torch::kFloat32);
}

/// For the overwrite rule: along one axis, which window (index into starts) owns each coordinate.
inline std::vector<int64_t> nearest_window_owner(int64_t size, int64_t window, const std::vector<int64_t>& starts) {
  std::vector<int64_t> owner(static_cast<size_t>(size), 0);
  for (int64_t x = 0; x < size; ++x) {
    double best = INFINITY;
    for (size_t w = 0; w < starts.size(); ++w) {
      if (x < starts[w] || x >= starts[w] + window) continue;
      const double d = std::abs(static_cast<double>(x) - (static_cast<double>(starts[w]) + (window - 1) / 2.0));
      if (d <= best) best = d, owner[static_cast<size_t>(x)] = static_cast<int64_t>(w);
    }
  }
  return owner;
}

}  // namespace detail

/// image: (C, X, Y, Z). predict: (B, C, wx, wy, wz) -> (B, K, wx, wy, wz) (any device; the result is
/// accumulated on image's device in float32). Returns (K, X, Y, Z).
inline torch::Tensor sliding_window_inference(const torch::Tensor& image,
                                              const std::function<torch::Tensor(const torch::Tensor&)>& predict,
                                              const SlidingWindowOptions& opt) {
  opt.validate();
  if (!image.defined() || image.dim() != 4 || image.numel() == 0)
    throw DataError("sliding window: the image must be a non-empty (C, X, Y, Z) tensor");
  const std::array<int64_t, 3> size{{image.size(1), image.size(2), image.size(3)}};
  std::array<int64_t, 3> win{}, padded{};
  torch::Tensor x = image;
  std::vector<int64_t> pad;  // F.pad order: last axis first
  for (int a = 2; a >= 0; --a) {
    padded[a] = std::max(size[a], opt.window[a]);
    win[a] = opt.window[a];
    pad.push_back(0);
    pad.push_back(padded[a] - size[a]);
  }
  if (padded != size) x = torch::constant_pad_nd(image, pad, 0);

  std::array<std::vector<int64_t>, 3> starts;
  for (int a = 0; a < 3; ++a) starts[a] = window_starts(padded[a], win[a], opt.stride[a]);
  struct Window {
    int64_t x, y, z;
    std::array<size_t, 3> index;
  };
  std::vector<Window> windows;
  for (size_t i = 0; i < starts[0].size(); ++i)
    for (size_t j = 0; j < starts[1].size(); ++j)
      for (size_t k = 0; k < starts[2].size(); ++k) windows.push_back({starts[0][i], starts[1][j], starts[2][k], {{i, j, k}}});

  const auto fopt = x.options().dtype(torch::kFloat32);
  torch::Tensor importance = opt.blend == Blend::gaussian ? detail::gaussian_importance(win, opt.sigma_scale).to(x.device())
                                                         : torch::ones({win[0], win[1], win[2]}, fopt);
  std::array<torch::Tensor, 3> owner_masks_per_axis;  // overwrite: (n_windows_a, window_a) bool per axis
  if (opt.blend == Blend::overwrite)
    for (int a = 0; a < 3; ++a) {
      const auto owner = detail::nearest_window_owner(padded[a], win[a], starts[a]);
      auto m = torch::zeros({static_cast<int64_t>(starts[a].size()), win[a]}, torch::kBool);
      auto acc = m.accessor<bool, 2>();
      for (size_t w = 0; w < starts[a].size(); ++w)
        for (int64_t t = 0; t < win[a]; ++t) acc[w][t] = owner[static_cast<size_t>(starts[a][w] + t)] == static_cast<int64_t>(w);
      owner_masks_per_axis[a] = m.to(x.device());
    }

  torch::Tensor sum, weight;
  for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(opt.batch)) {
    const size_t last = std::min(windows.size(), first + static_cast<size_t>(opt.batch));
    std::vector<torch::Tensor> crops;
    for (size_t w = first; w < last; ++w)
      crops.push_back(x.slice(1, windows[w].x, windows[w].x + win[0])
                          .slice(2, windows[w].y, windows[w].y + win[1])
                          .slice(3, windows[w].z, windows[w].z + win[2]));
    torch::Tensor out = predict(torch::stack(crops));
    if (out.dim() != 5 || out.size(0) != static_cast<int64_t>(crops.size()) || out.size(2) != win[0] ||
        out.size(3) != win[1] || out.size(4) != win[2])
      throw DataError("sliding window: the predictor must return (B, K, " + std::to_string(win[0]) + ", " +
                      std::to_string(win[1]) + ", " + std::to_string(win[2]) + ") for B windows");
    out = out.to(x.device(), torch::kFloat32);
    if (!sum.defined()) {
      sum = torch::zeros({out.size(1), padded[0], padded[1], padded[2]}, fopt);
      weight = torch::zeros({padded[0], padded[1], padded[2]}, fopt);
    }
    for (size_t w = first; w < last; ++w) {
      const auto& wd = windows[w];
      torch::Tensor wmap = importance;
      if (opt.blend == Blend::overwrite)
        wmap = (owner_masks_per_axis[0][static_cast<int64_t>(wd.index[0])].view({-1, 1, 1}) &
                owner_masks_per_axis[1][static_cast<int64_t>(wd.index[1])].view({1, -1, 1}) &
                owner_masks_per_axis[2][static_cast<int64_t>(wd.index[2])].view({1, 1, -1}))
                   .to(torch::kFloat32);
      auto s = sum.slice(1, wd.x, wd.x + win[0]).slice(2, wd.y, wd.y + win[1]).slice(3, wd.z, wd.z + win[2]);
      auto wt = weight.slice(0, wd.x, wd.x + win[0]).slice(1, wd.y, wd.y + win[1]).slice(2, wd.z, wd.z + win[2]);
      s.add_(out[static_cast<int64_t>(w - first)] * wmap);
      wt.add_(wmap);
    }
  }
  auto result = sum / weight.clamp_min(1e-12);
  return result.slice(1, 0, size[0]).slice(2, 0, size[1]).slice(3, 0, size[2]).contiguous();
}

}  // namespace hdssl::eval
