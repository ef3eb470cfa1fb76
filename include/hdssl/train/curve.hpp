#pragma once
// The training curve as a PNG: every loss term of metrics.jsonl against the step, one panel per term
// (their scales differ by orders of magnitude), a light line for the logged values and a dark one for a
// running mean over about a twentieth of the run, so the trend is visible through the noise.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "hdssl/io/png.hpp"

namespace hdssl::train {

struct CurveSeries {
  std::string key;    ///< the metrics field, e.g. "loss_nce"
  std::string title;  ///< e.g. "InfoNCE"
};

namespace detail {
inline std::string short_number(double v) {
  char buf[32];
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) std::snprintf(buf, sizeof buf, "%.2e", v);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}
}  // namespace detail

/// Draws `series` of `records` (metrics.jsonl objects with a "step") into `path`. Series absent from every
/// record are left out; with nothing to draw the picture says so.
inline void write_curve_png(const std::filesystem::path& path, const std::vector<nlohmann::json>& records,
                            const std::vector<CurveSeries>& series, const std::string& title) {
  struct Panel {
    const CurveSeries* s;
    std::vector<double> x, y;
  };
  std::vector<Panel> panels;
  for (const auto& s : series) {
    Panel p{&s, {}, {}};
    for (const auto& r : records)
      if (r.contains(s.key) && r.at(s.key).is_number() && r.contains("step") && std::isfinite(r.at(s.key).get<double>())) {
        p.x.push_back(r.at("step").get<double>());
        p.y.push_back(r.at(s.key).get<double>());
      }
    if (!p.x.empty()) panels.push_back(std::move(p));
  }
  const int W = 900, panel_h = 260, top = 34;
  const int H = top + std::max<int>(1, static_cast<int>(panels.size())) * panel_h;
  io::Image img(W, H);
  const io::Rgb ink{30, 30, 30}, grid{225, 225, 225}, raw{150, 180, 230}, mean{20, 70, 170};
  img.text(12, 10, title, ink, 2);
  if (panels.empty()) img.text(12, top + 20, "no logged steps yet", ink, 2);
  for (size_t k = 0; k < panels.size(); ++k) {
    const Panel& p = panels[k];
    const int x0 = 80, x1 = W - 20, y0 = top + static_cast<int>(k) * panel_h + 24, y1 = y0 + panel_h - 60;
    double xmin = p.x.front(), xmax = p.x.back();
    if (xmax <= xmin) xmax = xmin + 1;
    auto [ylo_it, yhi_it] = std::minmax_element(p.y.begin(), p.y.end());
    double ylo = *ylo_it, yhi = *yhi_it;
    if (yhi <= ylo) yhi = ylo + (ylo == 0 ? 1 : std::abs(ylo) * 0.1), ylo -= (yhi - ylo) * 0.1;
    const double pad = (yhi - ylo) * 0.05;
    ylo -= pad, yhi += pad;
    auto px = [&](double x) { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); };
    auto py = [&](double y) { return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0); };
    for (int g = 0; g <= 4; ++g) {
      const double yv = ylo + (yhi - ylo) * g / 4.0;
      img.line(x0, py(yv), x1, py(yv), grid);
      img.text(4, static_cast<int>(py(yv)) - 4, detail::short_number(yv), ink);
      const double xv = xmin + (xmax - xmin) * g / 4.0;
      img.text(static_cast<int>(px(xv)) - 12, y1 + 6, detail::short_number(std::round(xv)), ink);
    }
    img.line(x0, y0, x0, y1, ink);
    img.line(x0, y1, x1, y1, ink);
    img.text(x0 + 4, y0 - 16, p.s->title + " (last " + detail::short_number(p.y.back()) + ")", ink, 2);
    img.text(x1 - 30, y1 + 18, "step", ink);
    for (size_t i = 1; i < p.x.size(); ++i) img.line(px(p.x[i - 1]), py(p.y[i - 1]), px(p.x[i]), py(p.y[i]), raw);
    const size_t win = std::max<size_t>(1, p.x.size() / 20);
    double acc = 0, prev_x = 0, prev_y = 0;
    for (size_t i = 0; i < p.x.size(); ++i) {
      acc += p.y[i];
      if (i >= win) acc -= p.y[i - win];
      const double m = acc / static_cast<double>(std::min(i + 1, win));
      if (i > 0) img.line(px(prev_x), py(prev_y), px(p.x[i]), py(m), mean, 2);
      prev_x = p.x[i], prev_y = m;
    }
  }
  io::write_png(path, img);
}

}  // namespace hdssl::train
