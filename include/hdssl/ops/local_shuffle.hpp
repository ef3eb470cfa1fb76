#pragma once
// Local pixel shuffle of a batch of views (method.md 6.1): checks, then the CPU loop or the CUDA kernels.
// Semantics, random draws and the parallel "later block wins" rule: local_shuffle_functor.hpp.
// Both devices give bit-identical results for the same keys.
#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/core/tensor_text.hpp"
#include "hdssl/ops/cpu/local_shuffle.hpp"
#include "hdssl/ops/element_bits.hpp"
#include "hdssl/ops/local_shuffle_functor.hpp"
#include "hdssl/ops/local_shuffle_tiles.hpp"
#include "hdssl/ops/torch_compat.hpp"

#if HDSSL_WITH_CUDA
#include "hdssl/ops/cuda/launch.hpp"
#endif

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace hdssl::ops {

namespace detail {

/// Throws hdssl::ConfigError naming the option when a shuffle parameter is out of range for views of
/// extents (nx, ny, nz).
inline void check_shuffle_params(const LocalShuffleParams& p, std::int64_t nx, std::int64_t ny, std::int64_t nz) {
  const std::string where = "local_pixel_shuffle: ";
  if (!(p.p >= 0.0 && p.p <= 1.0)) throw ConfigError(where + "p = " + std::to_string(p.p) + " is not in [0, 1]");
  if (p.blocks < 0) throw ConfigError(where + "blocks = " + std::to_string(p.blocks) + " is negative");
  if (p.divisor < 1) throw ConfigError(where + "divisor = " + std::to_string(p.divisor) + " must be at least 1");
  const ShuffleGeometry g = ShuffleGeometry::of(nx, ny, nz, p.divisor);
  if (g.bx > kMaxShuffleBlockExtent || g.by > kMaxShuffleBlockExtent || g.bz > kMaxShuffleBlockExtent)
    throw ConfigError(where + "block extents " + std::to_string(g.bx) + "x" + std::to_string(g.by) + "x" +
                      std::to_string(g.bz) + " exceed " + std::to_string(kMaxShuffleBlockExtent) +
                      " on an axis (raise divisor = " + std::to_string(p.divisor) + ")");
  if (g.n > kMaxShuffleBlockVoxels)
    throw ConfigError(where + "blocks of " + std::to_string(g.bx) + "x" + std::to_string(g.by) + "x" +
                      std::to_string(g.bz) + " voxels exceed the supported " + std::to_string(kMaxShuffleBlockVoxels) +
                      " (raise divisor = " + std::to_string(p.divisor) + ")");
}

/// Extents and strides of views [V, X, Y, Z] or [V, 1, X, Y, Z]; throws DataError naming `what` otherwise.
struct ViewBatch {
  std::int64_t views = 0;
  std::int32_t nx = 0, ny = 0, nz = 0;
  ViewStrides strides;
};
inline ViewBatch view_batch(const at::Tensor& t, const char* what) {
  const std::string where = std::string("local_pixel_shuffle: ") + what;
  if (!t.defined()) throw DataError(where + " is an undefined tensor");
  const bool with_channel = t.dim() == 5;
  if (!(t.dim() == 4 || (with_channel && t.size(1) == 1)))
    throw DataError(where + " must be [V, X, Y, Z] or [V, 1, X, Y, Z], got " + shape_string(t));
  const int a = with_channel ? 2 : 1;
  constexpr std::int64_t max_extent = (std::int64_t{1} << 21) - 1;  // origins pack 21 bits per axis
  for (int d = a; d < a + 3; ++d)
    if (t.size(d) > max_extent)
      throw DataError(where + " has extent " + std::to_string(t.size(d)) + " on axis " + std::to_string(d) +
                      ", more than the supported " + std::to_string(max_extent));
  ViewBatch b;
  b.views = t.size(0);
  b.nx = static_cast<std::int32_t>(t.size(a));
  b.ny = static_cast<std::int32_t>(t.size(a + 1));
  b.nz = static_cast<std::int32_t>(t.size(a + 2));
  b.strides.sv = t.stride(0);
  b.strides.sx = t.stride(a);
  b.strides.sy = t.stride(a + 1);
  b.strides.sz = t.stride(a + 2);
  return b;
}

template <int Size>
void shuffle_cpu_sized(const at::Tensor& in, const ViewBatch& ib, at::Tensor& out, const ViewBatch& ob,
                       const ShuffleKeys& keys, const LocalShuffleParams& params) {
  using T = element_bits_t<Size>;
  cpu::local_shuffle<T>(static_cast<const T*>(compat::const_data(in)), ib.strides, static_cast<T*>(out.data_ptr()),
                        ob.strides, ib.views, ib.nx, ib.ny, ib.nz, keys, params);
}

/// Shared body of the public overloads: shuffles `views` into `out` (same shape and dtype, no shared
/// memory). `host_keys`: one key per view in host memory, or null to derive keys from `keys`.
inline void local_pixel_shuffle_impl(const at::Tensor& views, at::Tensor& out, ShuffleKeys keys,
                                     const LocalShuffleParams& params, const std::vector<std::uint64_t>* host_keys) {
  const ViewBatch ib = view_batch(views, "views");
  check_shuffle_params(params, ib.nx, ib.ny, ib.nz);
  const int elem = static_cast<int>(views.element_size());
  if (!(elem == 1 || elem == 2 || elem == 4 || elem == 8))
    throw DataError("local_pixel_shuffle: views has an unsupported element size of " + std::to_string(elem) + " bytes");
  if (host_keys != nullptr && static_cast<std::int64_t>(host_keys->size()) != ib.views)
    throw DataError("local_pixel_shuffle: " + std::to_string(host_keys->size()) + " keys for " +
                    std::to_string(ib.views) + " views");
  if (!out.defined() || out.sizes() != views.sizes() || out.scalar_type() != views.scalar_type() ||
      out.device() != views.device())
    throw DataError("local_pixel_shuffle: out must be a " + std::string(c10::toString(views.scalar_type())) + " " +
                    shape_string(views) + " tensor on " + views.device().str());
  if (views.numel() == 0) return;
  // Blocks read the original while others are written: the output may not share memory with the input.
  if (out.is_alias_of(views))
    throw DataError("local_pixel_shuffle: out shares memory with views (the shuffle reads the original)");
  const ViewBatch ob = view_batch(out, "out");

  if (views.is_cuda()) {
#if HDSSL_WITH_CUDA
    const c10::cuda::CUDAGuard guard(views.device());
    at::Tensor key_tensor;
    if (host_keys != nullptr) {
      key_tensor = at::empty({static_cast<std::int64_t>(host_keys->size())}, at::kLong);
      std::memcpy(key_tensor.data_ptr(), host_keys->data(), host_keys->size() * sizeof(std::uint64_t));
      key_tensor = key_tensor.to(views.device());
      keys.keys = static_cast<const std::uint64_t*>(compat::const_data(key_tensor));
    }
    if (shuffle_view_span(ib.nx, ib.ny, ib.nz, ib.strides) > std::int64_t{0xFFFFFFFF})
      throw DataError("local_pixel_shuffle: a view of " + shape_string(views) +
                      " spans more than 2^32 elements; the CUDA shuffle addresses views with 32-bit offsets");
    const auto layout = ShuffleDeviceLayout::of(ib.views, ib.nx, ib.ny, ib.nz, params);
    at::Tensor workspace = at::empty({layout.bytes()}, views.options().dtype(at::kByte));
    const int status = cuda::local_shuffle_raw(elem, compat::const_data(views), ib.strides, out.data_ptr(), ob.strides,
                                               ib.views, ib.nx, ib.ny, ib.nz, keys, params, workspace.data_ptr(),
                                               compat::current_stream(views.device()));
    HDSSL_CUDA_LAUNCH_CHECK(status);
    return;
#else
    throw DataError("local_pixel_shuffle: views are on " + views.device().str() +
                    " but hdssl was built without CUDA support (HDSSL_WITH_CUDA=0)");
#endif
  }
  if (!views.device().is_cpu())
    throw DataError("local_pixel_shuffle: views are on an unsupported device " + views.device().str());
  if (host_keys != nullptr) keys.keys = host_keys->data();
  switch (elem) {
    case 1: shuffle_cpu_sized<1>(views, ib, out, ob, keys, params); break;
    case 2: shuffle_cpu_sized<2>(views, ib, out, ob, keys, params); break;
    case 4: shuffle_cpu_sized<4>(views, ib, out, ob, keys, params); break;
    default: shuffle_cpu_sized<8>(views, ib, out, ob, keys, params); break;
  }
}

inline at::Tensor empty_like_views(const at::Tensor& views) {
  if (!views.defined()) throw DataError("local_pixel_shuffle: views is an undefined tensor");
  return at::empty(views.sizes(), views.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace detail

/// Shuffles every view of `views` ([V, X, Y, Z] or [V, 1, X, Y, Z], any dtype and strides, CPU or CUDA) into
/// `out` (same shape, dtype and device, any strides, no memory shared with `views`; lets a data loader reuse
/// its buffers). View v draws from the stream stream_key(seed, batch, first_view + v, Purpose::shuffle), the
/// stream the augmentation set gives view first_view + v of a batch. Not differentiable (an input
/// augmentation). Throws ConfigError / DataError naming the problem.
inline void local_pixel_shuffle_out(const at::Tensor& views, at::Tensor& out, std::uint64_t seed, std::uint64_t batch,
                                    const LocalShuffleParams& params = {}, std::uint64_t first_view = 0) {
  ShuffleKeys keys;
  keys.seed = seed;
  keys.batch = batch;
  keys.first_view = first_view;
  detail::local_pixel_shuffle_impl(views, out, keys, params, nullptr);
}

/// Same into a new contiguous tensor.
inline at::Tensor local_pixel_shuffle(const at::Tensor& views, std::uint64_t seed, std::uint64_t batch,
                                      const LocalShuffleParams& params = {}, std::uint64_t first_view = 0) {
  at::Tensor out = detail::empty_like_views(views);
  local_pixel_shuffle_out(views, out, seed, batch, params, first_view);
  return out;
}

/// Same with an explicit stream key per view (keys.size() == V).
inline at::Tensor local_pixel_shuffle(const at::Tensor& views, const std::vector<std::uint64_t>& keys,
                                      const LocalShuffleParams& params = {}) {
  at::Tensor out = detail::empty_like_views(views);
  detail::local_pixel_shuffle_impl(views, out, ShuffleKeys{}, params, &keys);
  return out;
}

}  // namespace hdssl::ops
