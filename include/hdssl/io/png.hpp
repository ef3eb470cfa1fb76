#pragma once
// Small RGB pictures for people (training curves, slices with contours), encoded by stb_image_write
// (Debian's libstb-dev) and written atomically. Drawing is the few primitives a plot needs: filled
// rectangles, lines, and text in stb_easy_font's built-in bitmap font.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/atomic_file.hpp"

// stb is single-file: its implementation is compiled here with internal linkage (STB_IMAGE_WRITE_STATIC),
// so every translation unit that includes hdssl gets its own private copy and nothing clashes at link time.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#ifndef STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define HDSSL_STB_IMAGE_WRITE_DEFINED
#endif
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#ifdef HDSSL_STB_IMAGE_WRITE_DEFINED
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#undef HDSSL_STB_IMAGE_WRITE_DEFINED
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace hdssl::io {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

/// An RGB image, row-major, origin top left.
class Image {
 public:
  Image(int width, int height, Rgb background = {255, 255, 255})
      : w_(width), h_(height), px_(static_cast<size_t>(width) * height * 3) {
    fill_rect(0, 0, width, height, background);
  }
  int width() const { return w_; }
  int height() const { return h_; }
  const uint8_t* data() const { return px_.data(); }

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  Rgb get(int x, int y) const {
    const uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    return {p[0], p[1], p[2]};
  }
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = std::max(0, y0); y < std::min(h_, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(w_, x1); ++x) set(x, y, c);
  }
  /// A line of the given thickness (Bresenham, squares of `thick` pixels along it).
  void line(double x0, double y0, double x1, double y1, Rgb c, int thick = 1) {
    const int steps = static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= steps; ++i) {
      const double t = static_cast<double>(i) / steps;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0))), y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      fill_rect(x - thick / 2, y - thick / 2, x - thick / 2 + thick, y - thick / 2 + thick, c);
    }
  }
  /// Text with its top-left corner at (x, y), `scale` pixels per font unit (the font is ~7 units tall).
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1) {
    std::vector<char> buf(s.begin(), s.end());
    buf.push_back('\0');
    std::vector<float> quads(buf.size() * 270);  // stb_easy_font: at most ~270 bytes per character
    const int n = stb_easy_font_print(0, 0, buf.data(), nullptr, quads.data(),
                                      static_cast<int>(quads.size() * sizeof(float)));
    // Each vertex is x, y, z (floats) and 4 colour bytes: 4 floats; 4 vertices per quad.
    for (int q = 0; q < n; ++q) {
      const float* v = &quads[static_cast<size_t>(q) * 16];
      fill_rect(x + static_cast<int>(v[0] * scale), y + static_cast<int>(v[1] * scale),
                x + static_cast<int>(v[8] * scale), y + static_cast<int>(v[9] * scale), c);
    }
  }
  /// Width in pixels of `s` drawn at `scale`.
  static int text_width(const std::string& s, int scale = 1) {
    std::vector<char> buf(s.begin(), s.end());
    buf.push_back('\0');
    return stb_easy_font_width(buf.data()) * scale;
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

/// Encodes `img` as PNG into `path` atomically; IoError naming the file on failure.
inline void write_png(const std::filesystem::path& path, const Image& img) {
  const std::string where = "picture '" + path.string() + "': ";
  write_atomically(
      path,
      [&](const std::filesystem::path& tmp) {
        std::ofstream f(tmp, std::ios::binary);
        if (!f) throw IoError(where + "cannot open a temporary file beside it");
        auto sink = [](void* ctx, void* data, int size) {
          static_cast<std::ofstream*>(ctx)->write(static_cast<const char*>(data), size);
        };
        if (!stbi_write_png_to_func(sink, &f, img.width(), img.height(), 3, img.data(), img.width() * 3))
          throw IoError(where + "PNG encoding failed");
        f.flush();
        if (!f) throw IoError(where + "write failed");
      },
      where);
}

}  // namespace hdssl::io
