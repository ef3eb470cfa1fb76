#pragma once
// AugmentationSet<A...>: augmentation policies composed at compile time, applied in order to every
// view of a batch, each view independently.
//
//   using MySet = hdssl::augment::AugmentationSet<hdssl::augment::Bezier, hdssl::augment::Inpaint>;
//   MySet set(MySet::options_type{}, /*seed=*/42);
//   torch::Tensor augmented = set(batch.view1, /*batch=*/step, /*view_offset=*/0);
//
// Randomness: stage A of view v of batch b draws only from Rng::for_stream(seed, b, v, A::purpose),
// so the output depends on (seed, b, v) and never on the thread count or on the other views.
// Views of a pair are numbered by the caller through view_offset (e.g. view1 -> 0..B-1,
// view2 -> B..2B-1).
// CPU: views run in parallel, handed out one at a time (parallel_for_each_item); a policy's own
// inner parallel loops then run inline.
// Other devices (CUDA): each policy must provide a batched path
//   static void apply_batch(torch::Tensor views, const options_type&, std::uint64_t seed,
//                           std::uint64_t batch, std::uint64_t view_offset);
// that draws from the same streams; every built-in policy has one (the CUDA shuffle kernels and the
// functors of ops/augment_functors.hpp), so a batch augmented on the GPU equals the CPU one.
#include "hdssl/augment/policy.hpp"
#include "hdssl/core/dynamic_parallel.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace hdssl::augment {

namespace detail {
template <typename A>
using apply_batch_t = decltype(A::apply_batch(std::declval<torch::Tensor>(),
                                              std::declval<const typename A::options_type&>(), std::uint64_t{},
                                              std::uint64_t{}, std::uint64_t{}));

template <typename T, typename... Ts>
inline constexpr bool is_one_of_v = (std::is_same_v<T, Ts> || ...);
template <typename... Ts>
struct all_distinct : std::true_type {};
template <typename T, typename... Ts>
struct all_distinct<T, Ts...> : std::bool_constant<!is_one_of_v<T, Ts...> && all_distinct<Ts...>::value> {};

/// True when no two of the policies draw from the same random-stream purpose.
template <typename... A>
constexpr bool distinct_purposes() {
  constexpr std::size_t n = sizeof...(A);
  if constexpr (n < 2) {
    return true;
  } else {
    constexpr Purpose p[n] = {A::purpose...};
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i + 1; j < n; ++j)
        if (p[i] == p[j]) return false;
    return true;
  }
}

template <typename T, typename... Ts>
struct index_of;
template <typename T, typename... Ts>
struct index_of<T, T, Ts...> : std::integral_constant<std::size_t, 0> {};
template <typename T, typename U, typename... Ts>
struct index_of<T, U, Ts...> : std::integral_constant<std::size_t, 1 + index_of<T, Ts...>::value> {};
}  // namespace detail

template <typename A>
inline constexpr bool has_batched_path_v = is_detected_v<detail::apply_batch_t, A>;

template <typename... A>
class AugmentationSet {
  static_assert((check_augmentation<A>() && ... && true), "see the static_assert above for what is missing");
  static_assert(detail::all_distinct<A...>::value,
                "an augmentation appears twice in one set: both copies would draw the same random stream; "
                "wrap the second in a distinct tag struct with its own purpose");
  static_assert(detail::distinct_purposes<A...>(),
                "two augmentations of one set have the same `purpose`: they would draw the same random numbers; "
                "give each its own hdssl::Purpose (user-defined ones from Purpose::user up)");

 public:
  using options_type = std::tuple<typename A::options_type...>;
  static constexpr std::size_t size = sizeof...(A);

  explicit AugmentationSet(options_type options = {}, std::uint64_t seed = 0) : o_(std::move(options)), seed_(seed) {}

  /// Options of the set as {"<policy name>": {...}, ...}; missing policies keep their defaults,
  /// unknown names and unknown keys are ConfigErrors.
  static options_type options_from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw ConfigError("augment: expected a JSON object keyed by augmentation name");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const bool known = ((it.key() == A::name) || ...);
      if (!known) {
        std::string names;
        ((names += (names.empty() ? "" : ", ") + std::string(A::name)), ...);
        throw ConfigError("augment: unknown augmentation \"" + it.key() + "\" for this set (known: " + names + ")");
      }
    }
    options_type o;
    read_each(j, o, std::index_sequence_for<A...>{});
    return o;
  }
  static AugmentationSet from_json(const nlohmann::json& j, std::uint64_t seed = 0) {
    return AugmentationSet(options_from_json(j), seed);
  }
  nlohmann::json to_json() const {
    nlohmann::json j = nlohmann::json::object();
    write_each(j, std::index_sequence_for<A...>{});
    return j;
  }

  std::uint64_t seed() const { return seed_; }
  void set_seed(std::uint64_t seed) { seed_ = seed; }
  const options_type& options() const { return o_; }
  template <typename P>
  typename P::options_type& options() {
    static_assert(detail::is_one_of_v<P, A...>, "this augmentation is not part of the set");
    return std::get<detail::index_of<P, A...>::value>(o_);
  }
  template <typename P>
  const typename P::options_type& options() const {
    static_assert(detail::is_one_of_v<P, A...>, "this augmentation is not part of the set");
    return std::get<detail::index_of<P, A...>::value>(o_);
  }

  /// Augmented copy of `views` ([V, 1, X, Y, Z] or [V, X, Y, Z] float32); the input is untouched
  /// (it stays the reconstruction target).
  torch::Tensor operator()(const torch::Tensor& views, std::uint64_t batch, std::uint64_t view_offset = 0) const {
    torch::Tensor out;
    augment_into(views, out, batch, view_offset);
    return out;
  }

  /// As operator(), into `out`, which is reused when it already has the input's shape and nothing
  /// else shares its memory (fresh multi-megabyte buffers cost a page fault per 4 KiB on first
  /// touch). On the CPU each view is copied and augmented while it is still in cache.
  void augment_into(const torch::Tensor& views, torch::Tensor& out, std::uint64_t batch,
                    std::uint64_t view_offset = 0) const {
    check_views(views);
    const torch::Tensor in = views.contiguous();
    prepare_out(in, out);
    if (!in.device().is_cpu()) {
      out.copy_(in);
      apply_batched(out, batch, view_offset, std::index_sequence_for<A...>{});
      return;
    }
    const std::int64_t V = in.size(0), n = in.numel() / std::max<std::int64_t>(1, V);
    const float* src = in.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    const std::int64_t nx = in.size(in.dim() - 3), ny = in.size(in.dim() - 2), nz = in.size(in.dim() - 1);
    parallel_for_each_item(V, [&](std::int64_t v) {
      std::memcpy(dst + v * n, src + v * n, static_cast<std::size_t>(n) * sizeof(float));
      apply_view(ViewRef{dst + v * n, nx, ny, nz}, batch, view_offset + static_cast<std::uint64_t>(v));
    });
  }

  /// Both views of a batch of pairs in one parallel pass: views1 are numbered 0..B-1 and views2
  /// B..2B-1, exactly as augment_into(views1, out1, batch, 0) and augment_into(views2, out2, batch, B).
  /// One pass instead of two halves the thread hand-overs, which matter on a busy machine.
  void augment_pair_into(const torch::Tensor& views1, const torch::Tensor& views2, torch::Tensor& out1,
                         torch::Tensor& out2, std::uint64_t batch) const {
    check_views(views1);
    check_views(views2);
    if (views1.sizes() != views2.sizes())
      throw DataError("augment: the two view batches of a pair batch must have the same shape");
    if (!views1.device().is_cpu() || !views2.device().is_cpu()) {
      augment_into(views1, out1, batch, 0);
      augment_into(views2, out2, batch, static_cast<std::uint64_t>(views1.size(0)));
      return;
    }
    const torch::Tensor in1 = views1.contiguous(), in2 = views2.contiguous();
    prepare_out(in1, out1);
    prepare_out(in2, out2);
    const std::int64_t B = in1.size(0), n = in1.numel() / std::max<std::int64_t>(1, B);
    const std::int64_t nx = in1.size(in1.dim() - 3), ny = in1.size(in1.dim() - 2), nz = in1.size(in1.dim() - 1);
    const float* src[2] = {in1.data_ptr<float>(), in2.data_ptr<float>()};
    float* dst[2] = {out1.data_ptr<float>(), out2.data_ptr<float>()};
    parallel_for_each_item(2 * B, [&](std::int64_t i) {
      const std::int64_t side = i / std::max<std::int64_t>(1, B), v = i % std::max<std::int64_t>(1, B);
      std::memcpy(dst[side] + v * n, src[side] + v * n, static_cast<std::size_t>(n) * sizeof(float));
      apply_view(ViewRef{dst[side] + v * n, nx, ny, nz}, batch, static_cast<std::uint64_t>(i));
    });
  }

  /// In place on a contiguous float32 batch of views.
  void apply_(torch::Tensor& views, std::uint64_t batch, std::uint64_t view_offset = 0) const {
    check_views(views);
    if (!views.is_contiguous()) throw DataError("augment: views must be contiguous to be augmented in place");
    if (!views.device().is_cpu()) {
      apply_batched(views, batch, view_offset, std::index_sequence_for<A...>{});
      return;
    }
    const std::int64_t V = views.size(0);
    const std::int64_t nx = views.size(views.dim() - 3), ny = views.size(views.dim() - 2),
                       nz = views.size(views.dim() - 1);
    float* base = views.data_ptr<float>();
    parallel_for_each_item(V, [&](std::int64_t v) {
      apply_view(ViewRef{base + v * nx * ny * nz, nx, ny, nz}, batch, view_offset + static_cast<std::uint64_t>(v));
    });
  }

  /// In place through every stage's batched path (apply_batch), on any device: what CUDA views always take;
  /// on CPU views the same result as apply_ (the tests check it), one stage over the whole batch at a time.
  void apply_batched_(torch::Tensor& views, std::uint64_t batch, std::uint64_t view_offset = 0) const {
    check_views(views);
    if (!views.is_contiguous()) throw DataError("augment: views must be contiguous to be augmented in place");
    apply_batched(views, batch, view_offset, std::index_sequence_for<A...>{});
  }

  /// Every stage, in order, on one view numbered `view` in batch `batch`.
  void apply_view(ViewRef view, std::uint64_t batch, std::uint64_t view_index) const {
    apply_each(view, batch, view_index, std::index_sequence_for<A...>{});
  }

 private:
  /// Keeps out when it already matches `in` and nothing else shares its memory.
  static void prepare_out(const torch::Tensor& in, torch::Tensor& out) {
    if (!out.defined() || out.sizes() != in.sizes() || out.scalar_type() != in.scalar_type() ||
        out.device() != in.device() || !out.is_contiguous() || out.storage_offset() != 0 ||
        out.storage().use_count() != 1 || out.is_same(in))
      out = torch::empty_like(in, at::MemoryFormat::Contiguous);
  }
  static void check_views(const torch::Tensor& views) {
    if (!views.defined() || (views.dim() != 5 && views.dim() != 4))
      throw DataError("augment: views must be a [V, 1, X, Y, Z] or [V, X, Y, Z] tensor");
    if (views.dim() == 5 && views.size(1) != 1)
      throw DataError("augment: views must have one channel, got " + std::to_string(views.size(1)));
    if (views.scalar_type() != torch::kFloat32) throw DataError("augment: views must be float32");
  }
  template <std::size_t... I>
  static void read_each(const nlohmann::json& j, options_type& o, std::index_sequence<I...>) {
    ((j.contains(A::name) ? void(std::get<I>(o) = A::options_type::from_json(j.at(A::name))) : void()), ...);
  }
  template <std::size_t... I>
  void write_each(nlohmann::json& j, std::index_sequence<I...>) const {
    ((j[A::name] = std::get<I>(o_).to_json()), ...);
  }
  template <std::size_t... I>
  void apply_each(ViewRef view, std::uint64_t batch, std::uint64_t view_index, std::index_sequence<I...>) const {
    (stage<A>(view, std::get<I>(o_), batch, view_index), ...);
  }
  template <typename P>
  void stage(ViewRef view, const typename P::options_type& o, std::uint64_t batch, std::uint64_t view_index) const {
    Rng rng = view_stream<P>(seed_, batch, view_index);
    P::apply(view, o, rng);
  }
  template <std::size_t... I>
  void apply_batched(torch::Tensor& views, std::uint64_t batch, std::uint64_t view_offset,
                     std::index_sequence<I...>) const {
    (batched_stage<A>(views, std::get<I>(o_), batch, view_offset), ...);
  }
  template <typename P>
  void batched_stage(torch::Tensor& views, const typename P::options_type& o, std::uint64_t batch,
                     std::uint64_t view_offset) const {
    if constexpr (has_batched_path_v<P>) {
      P::apply_batch(views, o, seed_, batch, view_offset);
    } else {
      throw DataError(std::string("augment: \"") + P::name + "\" has no path for views on " +
                      views.device().str() + "; augment on the CPU");
    }
  }

  options_type o_;
  std::uint64_t seed_;
};

}  // namespace hdssl::augment
