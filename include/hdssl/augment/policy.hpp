#pragma once
// What an augmentation policy is, how its runtime options map to JSON, and the view it works on.
//
// An augmentation is a tag struct (compile-time structure) whose tunable numbers live in a runtime
// options struct (JSON). AugmentationSet<A...> (augment/augmentation_set.hpp) composes policies in
// order; this header states, and checks with static_assert, what each policy must provide:
//
//   struct MyAugmentation {
//     struct Options {                               // runtime knobs (probabilities, sizes)
//       double p = 0.5;
//       static Options from_json(const nlohmann::json&);  // unknown keys -> hdssl::ConfigError
//       nlohmann::json to_json() const;
//     };
//     using options_type = Options;
//     static constexpr const char* name = "my_augmentation";   // key in the set's JSON
//     static constexpr hdssl::Purpose purpose = hdssl::Purpose::user;  // random stream it draws from
//     // In place on one view. `rng` is this view's own stream for this policy: draw every random
//     // choice (including "apply or not") from it and from nothing else.
//     static void apply(ViewRef view, const Options&, Rng& rng);
//   };
#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/core/rng.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace hdssl::augment {

/// One view being augmented: contiguous float32 (X, Y, Z) with z fastest (a [1, X, Y, Z] or
/// [X, Y, Z] slice of a contiguous [V, 1, X, Y, Z] batch).
struct ViewRef {
  float* data = nullptr;
  std::int64_t nx = 0, ny = 0, nz = 0;

  std::int64_t numel() const { return nx * ny * nz; }
  std::int64_t index(std::int64_t x, std::int64_t y, std::int64_t z) const { return (x * ny + y) * nz + z; }
  float& at(std::int64_t x, std::int64_t y, std::int64_t z) const { return data[index(x, y, z)]; }
  std::int64_t dim(int axis) const { return axis == 0 ? nx : axis == 1 ? ny : nz; }
};

/// The stream stage P of view `view` of batch `batch` draws every random choice from (the set's rule: the
/// one-view path and the batched path of a policy both draw from it, so they agree).
template <typename P>
Rng view_stream(std::uint64_t seed, std::uint64_t batch, std::uint64_t view) {
  return Rng::for_stream(seed, batch, view, P::purpose);
}

/// P::draw(o, rng) for each of `views` views of a batch, view v from the stream of view view_offset + v: the
/// per-view parameters of a batched path whose draws need nothing but the options.
template <typename P>
auto draw_views(const typename P::options_type& o, std::size_t views, std::uint64_t seed, std::uint64_t batch,
                std::uint64_t view_offset) {
  std::vector<decltype(P::draw(o, std::declval<Rng&>()))> draws;
  draws.reserve(views);
  for (std::size_t v = 0; v < views; ++v) {
    Rng rng = view_stream<P>(seed, batch, view_offset + v);
    draws.push_back(P::draw(o, rng));
  }
  return draws;
}

// ------------------------------------------------------------------ detection idiom (C++17)
namespace detail {
template <typename, template <typename...> class Op, typename... Args>
struct detector : std::false_type {};
template <template <typename...> class Op, typename... Args>
struct detector<std::void_t<Op<Args...>>, Op, Args...> : std::true_type {};

template <typename A>
using options_type_t = typename A::options_type;
template <typename A>
using name_t = decltype(A::name);
template <typename A>
using purpose_t = decltype(A::purpose);
template <typename A>
using apply_t = decltype(A::apply(std::declval<ViewRef>(), std::declval<const typename A::options_type&>(),
                                  std::declval<Rng&>()));
template <typename O>
using from_json_t = decltype(O::from_json(std::declval<const nlohmann::json&>()));
template <typename O>
using to_json_t = decltype(std::declval<const O&>().to_json());
}  // namespace detail

template <template <typename...> class Op, typename... Args>
inline constexpr bool is_detected_v = detail::detector<void, Op, Args...>::value;

/// True when A satisfies every requirement of an augmentation policy (see the top of this file).
template <typename A, typename = void>
struct is_augmentation : std::false_type {};
template <typename A>
struct is_augmentation<A, std::enable_if_t<is_detected_v<detail::options_type_t, A>>>
    : std::bool_constant<is_detected_v<detail::name_t, A> && is_detected_v<detail::purpose_t, A> &&
                         is_detected_v<detail::apply_t, A> &&
                         is_detected_v<detail::from_json_t, typename A::options_type> &&
                         is_detected_v<detail::to_json_t, typename A::options_type>> {};
template <typename A>
inline constexpr bool is_augmentation_v = is_augmentation<A>::value;

/// static_asserts one requirement at a time, so the compiler says which one is missing.
template <typename A>
constexpr bool check_augmentation() {
  static_assert(is_detected_v<detail::options_type_t, A>,
                "an augmentation policy needs `using options_type = ...;` (its runtime options struct)");
  if constexpr (is_detected_v<detail::options_type_t, A>) {
    static_assert(is_detected_v<detail::name_t, A>,
                  "an augmentation policy needs `static constexpr const char* name` (its JSON key)");
    static_assert(is_detected_v<detail::purpose_t, A>,
                  "an augmentation policy needs `static constexpr hdssl::Purpose purpose` (its random stream)");
    static_assert(is_detected_v<detail::apply_t, A>,
                  "an augmentation policy needs `static void apply(ViewRef, const options_type&, Rng&)`");
    static_assert(is_detected_v<detail::from_json_t, typename A::options_type>,
                  "options_type needs `static options_type from_json(const nlohmann::json&)`");
    static_assert(is_detected_v<detail::to_json_t, typename A::options_type>,
                  "options_type needs `nlohmann::json to_json() const`");
  }
  return true;
}

// ------------------------------------------------------------------ JSON options
/// Options objects are read with hdssl::OptionReader (core/json_options.hpp), e.g.
/// OptionReader r(j, "augment.bezier"); r.probability("p", o.p); r.finish();
using hdssl::OptionReader;

}  // namespace hdssl::augment
