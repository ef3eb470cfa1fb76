#pragma once
// The intensity and noise augmentations on a whole batch of views, CPU or CUDA: tensor checks, the drawn
// per-view parameters packed into one buffer (one host-to-device copy per op), then the functors of
// augment_functors.hpp run over every voxel by a parallel CPU loop or by the CUDA kernels.
// The random draws are the policies' (augment/*.hpp, apply_batch): these functions only apply them.
#include "hdssl/core/error.hpp"
#include "hdssl/core/tensor_text.hpp"
#include "hdssl/ops/augment_functors.hpp"
#include "hdssl/ops/torch_compat.hpp"

#if HDSSL_WITH_CUDA
#include "hdssl/ops/cuda/launch.hpp"
#endif

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace hdssl::ops {

namespace detail {

/// The per-view parameters of one op as one byte buffer: filled on the host, then placed where the
/// voxels are (the host buffer itself for CPU views, one device copy for CUDA views).
class ParamPack {
 public:
  /// Appends n values (16-byte aligned); returns their byte offset.
  template <typename T>
  std::size_t put(const T* values, std::size_t n) {
    const std::size_t offset = reserve<T>(n);
    if (n > 0) std::memcpy(bytes_.data() + offset, values, n * sizeof(T));
    return offset;
  }
  template <typename T>
  std::size_t put(const std::vector<T>& values) {
    return put(values.data(), values.size());
  }
  /// Room for n values, zeroed; returns their byte offset.
  template <typename T>
  std::size_t reserve(std::size_t n) {
    const std::size_t offset = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(offset + n * sizeof(T), 0);
    return offset;
  }
  template <typename T>
  T* host(std::size_t offset) {
    return reinterpret_cast<T*>(bytes_.data() + offset);
  }

  /// Fixes where the pack lives for views on `device` (call once every value is in: the size is final);
  /// device() then gives the address of a value there.
  void place(const at::Device& device) {
    if (device.is_cpu()) {
      base_ = bytes_.data();
      return;
    }
    device_copy_ = at::empty({static_cast<std::int64_t>(bytes_.size())}, at::TensorOptions().dtype(at::kByte).device(device));
    base_ = static_cast<unsigned char*>(device_copy_.data_ptr());
  }
  template <typename T>
  const T* device(std::size_t offset) const {
    return reinterpret_cast<const T*>(base_ + offset);
  }
  /// Copies the host bytes into the device copy, ordered on the current stream (from pinned memory, so
  /// the host does not wait); nothing to do for CPU views.
  void upload() {
    if (!device_copy_.defined() || bytes_.empty()) return;
    at::Tensor pinned = at::empty({static_cast<std::int64_t>(bytes_.size())}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    std::memcpy(pinned.data_ptr(), bytes_.data(), bytes_.size());
    device_copy_.copy_(pinned, /*non_blocking=*/true);
  }

 private:
  std::vector<unsigned char> bytes_;
  at::Tensor device_copy_;
  unsigned char* base_ = nullptr;
};

/// Runs f(i) for i in [0, f.size()): a parallel loop for CPU views, the functor's CUDA kernel for CUDA views.
template <typename F>
void for_each_index(const at::Tensor& views, const F& f, const char* what) {
  const std::int64_t n = f.size();
  if (n <= 0) return;
  if (views.is_cuda()) {
#if HDSSL_WITH_CUDA
    const c10::cuda::CUDAGuard guard(views.device());
    HDSSL_CUDA_LAUNCH_CHECK(cuda::augment_raw(f, compat::current_stream(views.device())));
    return;
#else
    throw DataError(std::string(what) + ": views are on " + views.device().str() +
                    " but hdssl was built without CUDA support (HDSSL_WITH_CUDA=0)");
#endif
  }
  at::parallel_for(0, n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) f(i);
  });
}

/// Packs `draws` (one per view), places them where the views are and runs f with f.*field pointing at them.
template <typename F, typename D>
void run_with_draws(const at::Tensor& views, F f, const D* F::*field, const std::vector<D>& draws, const char* what) {
  ParamPack pack;
  const std::size_t offset = pack.put(draws);
  pack.place(views.device());
  pack.upload();
  f.*field = pack.device<D>(offset);
  for_each_index(views, f, what);
}

}  // namespace detail

/// The number of views of a batch (0 for an undefined or 0-d tensor, which augment_views then refuses).
inline std::size_t batch_size(const at::Tensor& views) {
  return static_cast<std::size_t>(views.defined() && views.dim() > 0 ? views.size(0) : 0);
}

/// The batch as AugmentViews: `views` must be a contiguous float32 [V, X, Y, Z] or [V, 1, X, Y, Z] tensor on the
/// CPU or a CUDA device, and `per_view` (the number of drawn parameter sets) must be V; DataError otherwise.
inline AugmentViews augment_views(at::Tensor& views, std::size_t per_view, const char* what) {
  const std::string where = std::string(what) + ": ";
  if (!views.defined()) throw DataError(where + "views is an undefined tensor");
  if (!(views.dim() == 4 || (views.dim() == 5 && views.size(1) == 1)))
    throw DataError(where + "views must be [V, X, Y, Z] or [V, 1, X, Y, Z], got " + shape_string(views));
  if (views.scalar_type() != at::kFloat) throw DataError(where + "views must be float32");
  if (!views.is_contiguous()) throw DataError(where + "views must be contiguous");
  if (!(views.device().is_cpu() || views.is_cuda()))
    throw DataError(where + "views are on an unsupported device " + views.device().str());
  if (static_cast<std::int64_t>(per_view) != views.size(0))
    throw DataError(where + std::to_string(per_view) + " parameter sets for " + std::to_string(views.size(0)) + " views");
  const int a = views.dim() - 3;
  AugmentViews v;
  v.data = views.data_ptr<float>();
  v.views = views.size(0);
  v.nx = views.size(a);
  v.ny = views.size(a + 1);
  v.nz = views.size(a + 2);
  return v;
}

/// Each view through its Bezier map (tables hold host pointers; a null xf leaves the view as it is).
inline void bezier_batch_(at::Tensor& views, const std::vector<BezierTable>& tables) {
  BezierFunctor f;
  f.v = augment_views(views, tables.size(), "bezier");
  detail::ParamPack pack;
  struct Offsets {
    std::size_t xf = 0, yf = 0, slope = 0, bucket = 0;
  };
  std::vector<Offsets> offsets(tables.size());
  for (std::size_t v = 0; v < tables.size(); ++v) {
    const BezierTable& t = tables[v];
    if (t.xf == nullptr) continue;
    offsets[v].xf = pack.put(t.xf, static_cast<std::size_t>(t.samples) + 1);  // with the +inf sentinel
    offsets[v].yf = pack.put(t.yf, static_cast<std::size_t>(t.samples));
    offsets[v].slope = pack.put(t.slope, static_cast<std::size_t>(t.samples));
    offsets[v].bucket = pack.put(t.bucket, static_cast<std::size_t>(t.buckets) + 1);
  }
  const std::size_t table_offset = pack.reserve<BezierTable>(tables.size());
  pack.place(views.device());
  BezierTable* placed = pack.host<BezierTable>(table_offset);
  for (std::size_t v = 0; v < tables.size(); ++v) {
    placed[v] = tables[v];
    if (tables[v].xf == nullptr) continue;
    placed[v].xf = pack.device<float>(offsets[v].xf);
    placed[v].yf = pack.device<float>(offsets[v].yf);
    placed[v].slope = pack.device<float>(offsets[v].slope);
    placed[v].bucket = pack.device<std::int32_t>(offsets[v].bucket);
  }
  pack.upload();
  f.tables = pack.device<BezierTable>(table_offset);
  detail::for_each_index(views, f, "bezier");
}

/// In-painting (inside = true) or out-painting (inside = false) of each view with its boxes and noise key
/// (see NoiseBoxFunctor); a view without boxes is left as it is.
inline void noise_boxes_batch_(at::Tensor& views, const std::vector<std::uint64_t>& keys,
                               const std::vector<std::vector<NoiseBox>>& boxes, bool inside) {
  const char* what = inside ? "inpaint" : "outpaint";
  NoiseBoxFunctor f;
  f.v = augment_views(views, boxes.size(), what);
  f.inside = inside;
  if (keys.size() != boxes.size())
    throw DataError(std::string(what) + ": " + std::to_string(keys.size()) + " keys for " + std::to_string(boxes.size()) +
                    " views");
  std::vector<NoiseBoxRange> ranges(boxes.size());
  std::vector<NoiseBox> all;
  for (std::size_t v = 0; v < boxes.size(); ++v) {
    ranges[v].key = keys[v];
    ranges[v].begin = static_cast<std::int32_t>(all.size());
    all.insert(all.end(), boxes[v].begin(), boxes[v].end());
    ranges[v].end = static_cast<std::int32_t>(all.size());
  }
  if (all.empty()) return;
  detail::ParamPack pack;
  const std::size_t r = pack.put(ranges), b = pack.put(all);
  pack.place(views.device());
  pack.upload();
  f.ranges = pack.device<NoiseBoxRange>(r);
  f.boxes = pack.device<NoiseBox>(b);
  detail::for_each_index(views, f, what);
}

/// Additive Gaussian noise with each view's draw.
inline void gaussian_noise_batch_(at::Tensor& views, const std::vector<GaussianNoiseDraw>& draws) {
  GaussianNoiseFunctor f;
  f.v = augment_views(views, draws.size(), "gaussian_noise");
  bool any = false;
  for (const auto& d : draws) any = any || d.on;
  if (!any) return;
  detail::run_with_draws(views, f, &GaussianNoiseFunctor::draws, draws, "gaussian_noise");
}

/// Axial blur or sharpening with each view's draw; `weights` holds every kernel the draws point into.
inline void axial_filter_batch_(at::Tensor& views, const std::vector<AxialFilterDraw>& draws,
                                const std::vector<float>& weights) {
  AxialFilterFunctor f;
  f.v = augment_views(views, draws.size(), "axial_filter");
  const auto outside = [&](std::int32_t offset, std::int32_t radius) {
    return offset < 0 || radius < 0 || static_cast<std::size_t>(offset) + 2 * static_cast<std::size_t>(radius) + 1 > weights.size();
  };
  bool any = false, sharpen = false;
  for (const auto& d : draws) {
    any = any || d.mode != 0;
    sharpen = sharpen || d.mode == 2;
    if ((d.mode != 0 && outside(d.first_offset, d.first_radius)) || (d.mode == 2 && outside(d.inner_offset, d.inner_radius)))
      throw DataError("axial_filter: a view's weights lie outside the weight array");
  }
  if (!any) return;
  detail::ParamPack pack;
  const std::size_t d = pack.put(draws), w = pack.put(weights);
  pack.place(views.device());
  pack.upload();
  at::Tensor tmp = at::empty_like(views, at::MemoryFormat::Contiguous);
  f.tmp = tmp.data_ptr<float>();
  f.draws = pack.device<AxialFilterDraw>(d);
  f.weights = pack.device<float>(w);
  for (std::int32_t pass = 0; pass < (sharpen ? 4 : 2); ++pass) {
    f.pass = pass;
    detail::for_each_index(views, f, "axial_filter");
  }
}

/// Window and scaling to [0, 1] of every view with its draw.
inline void window_batch_(at::Tensor& views, const std::vector<WindowDraw>& draws) {
  WindowFunctor f;
  f.v = augment_views(views, draws.size(), "random_window");
  detail::run_with_draws(views, f, &WindowFunctor::draws, draws, "random_window");
}

}  // namespace hdssl::ops
