#pragma once
// A picture of one segmented volume: axial, coronal and sagittal slices through the centre of the
// ground-truth foreground (of the prediction when there is no ground truth), ground-truth contours on the
// left, predicted contours on the right, one colour per class, a legend below. Slices are drawn in the
// neurological convention: the patient's right on the picture's right, superior (axial: anterior) up.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hdssl/io/png.hpp"

namespace hdssl::eval {

namespace detail {

inline io::Rgb class_colour(int64_t k) {
  static const io::Rgb palette[] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},  {245, 130, 48},
                                    {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212},
                                    {0, 128, 128},  {220, 190, 255}};
  return palette[k % 12];
}

/// A 2-D slice (rows = picture y, cols = picture x) of a (X, Y, Z) tensor for view 0 axial, 1 coronal, 2 sagittal.
inline torch::Tensor slice_of(const torch::Tensor& v, int view, int64_t at) {
  // RAS voxel axes: x to the right, y anterior, z superior. Picture: up = superior (or anterior for axial).
  if (view == 0) return v.select(2, at).t().flip({0});  // (Y, X): anterior up, right to the right
  if (view == 1) return v.select(1, at).t().flip({0});  // (Z, X): superior up
  return v.select(0, at).t().flip({0});                 // (Z, Y): superior up, anterior right
}

}  // namespace detail

/// image, truth (may be undefined), prediction: (X, Y, Z) on one grid; truth/prediction hold class indices
/// (0 background, c + 1 class c). `names` names the classes for the legend.
inline void write_overlay_png(const std::filesystem::path& path, const torch::Tensor& image, const torch::Tensor& truth,
                              const torch::Tensor& prediction, const std::vector<std::string>& names,
                              const std::string& title) {
  const auto img = image.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto pred = prediction.to(torch::kCPU, torch::kLong).contiguous();
  const auto gt = truth.defined() ? truth.to(torch::kCPU, torch::kLong).contiguous() : torch::Tensor();
  // Display window: 1st..99th percentile of the image.
  const auto sorted = std::get<0>(img.flatten().sort());
  const int64_t n = sorted.numel();
  const float lo = sorted[n / 100].item<float>(), hi = std::max(sorted[(n * 99) / 100].item<float>(), lo + 1e-6f);
  // Slice positions: the centre of the foreground box.
  const auto& ref = gt.defined() && gt.gt(0).any().item<bool>() ? gt : pred;
  std::array<int64_t, 3> centre{{img.size(0) / 2, img.size(1) / 2, img.size(2) / 2}};
  if (ref.gt(0).any().item<bool>()) {
    const auto idx = torch::nonzero(ref.gt(0));
    for (int a = 0; a < 3; ++a)
      centre[a] = (idx.select(1, a).min().item<int64_t>() + idx.select(1, a).max().item<int64_t>()) / 2;
  }
  const int64_t longest = std::max({img.size(0), img.size(1), img.size(2)});
  const int scale = static_cast<int>(std::max<int64_t>(1, 256 / longest));
  const int cell = static_cast<int>(longest) * scale, pad = 8, header = 22;
  const int legend = 16 * static_cast<int>((names.size() + 3) / 4) + 8;
  io::Image pic(2 * cell + 3 * pad, header + 3 * (cell + pad) + legend, {0, 0, 0});
  pic.text(pad, 6, title, {255, 255, 255}, 1);
  const char* views[] = {"axial", "coronal", "sagittal"};
  for (int view = 0; view < 3; ++view) {
    const int64_t at = centre[view == 0 ? 2 : view == 1 ? 1 : 0];
    const auto s_img = detail::slice_of(img, view, at).contiguous();
    const int rows = static_cast<int>(s_img.size(0)), cols = static_cast<int>(s_img.size(1));
    const int y0 = header + view * (cell + pad);
    for (int panel = 0; panel < 2; ++panel) {
      const int x0 = pad + panel * (cell + pad);
      const auto a = s_img.accessor<float, 2>();
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          const auto g = static_cast<uint8_t>(std::clamp((a[r][c] - lo) / (hi - lo), 0.f, 1.f) * 255.f);
          pic.fill_rect(x0 + c * scale, y0 + r * scale, x0 + (c + 1) * scale, y0 + (r + 1) * scale, {g, g, g});
        }
      const torch::Tensor& lab = panel == 0 ? gt : pred;
      if (lab.defined()) {
        const auto s_lab = detail::slice_of(lab, view, at).contiguous();
        const auto l = s_lab.accessor<int64_t, 2>();
        for (int r = 0; r < rows; ++r)
          for (int c = 0; c < cols; ++c) {
            const int64_t k = l[r][c];
            if (k == 0) continue;
            const bool edge = r == 0 || c == 0 || r == rows - 1 || c == cols - 1 || l[r - 1][c] != k ||
                              l[r + 1][c] != k || l[r][c - 1] != k || l[r][c + 1] != k;
            if (edge)
              pic.fill_rect(x0 + c * scale, y0 + r * scale, x0 + (c + 1) * scale, y0 + (r + 1) * scale,
                            detail::class_colour(k - 1));
          }
      }
      pic.text(x0 + 2, y0 + 2, std::string(panel == 0 ? (gt.defined() ? "truth " : "no truth ") : "prediction ") + views[view],
               {255, 255, 0}, 1);
    }
  }
  const int ly = header + 3 * (cell + pad);
  for (size_t k = 0; k < names.size(); ++k) {
    const int x = pad + static_cast<int>(k % 4) * ((2 * cell + pad) / 4), y = ly + 16 * static_cast<int>(k / 4);
    pic.fill_rect(x, y + 2, x + 10, y + 12, detail::class_colour(static_cast<int64_t>(k)));
    pic.text(x + 14, y + 3, names[k], {255, 255, 255}, 1);
  }
  io::write_png(path, pic);
}

}  // namespace hdssl::eval
