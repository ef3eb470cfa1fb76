#pragma once
// Compile-time policies of the pre-training model: what changes the *structure* of the network and of
// the loss (pyramid depth and width, channel balancing, which loss terms and heads exist). Numbers a
// user tunes (temperature, loss weight, projection size) are runtime options (PretrainOptions).
//
// Each axis is a small tag struct with static constexpr knobs; ModelPolicy checks the combination with
// static_asserts whose messages say how to fix it. This header does not include LibTorch, so a policy
// mistake is reported in a fraction of a second.
#include "hdssl/ops/gather_functor.hpp"  // kMaxGatherLevels (no LibTorch)

#include <type_traits>

namespace hdssl::policy {

// ------------------------------------------------------------------ pyramid
/// An FPN of `Levels` levels; level i has Base * 2^i channels.
template <int Levels, int Base>
struct Pyramid {
  // The upper bound is what the fused positive gather takes in one call (ops::kMaxGatherLevels); a 128^3
  // patch has no eighth level anyway.
  static_assert(Levels >= 2 && Levels <= ops::kMaxGatherLevels,
                "policy::Pyramid<Levels, Base>: Levels must be in [2, 8] (vox2vec uses 6, hdssl uses 5)");
  static_assert(Base >= 1, "policy::Pyramid<Levels, Base>: Base (channels of the finest level) must be >= 1");
  static constexpr int levels = Levels;
  static constexpr int base = Base;
  static constexpr int channels(int level) { return Base << level; }
  /// Size of the raw (unbalanced) voxel embedding: sum of all levels' channels.
  static constexpr int raw_embedding = Base * ((1 << Levels) - 1);
};

// ------------------------------------------------------------------ balancing
/// vox2vec: the voxel embedding is the raw concatenation of all levels (coarse levels dominate).
struct NoBalancing {
  static constexpr bool enabled = false;
  static constexpr bool frozen = false;
  static constexpr int width = 0;
};

/// hdssl: every level is projected to W channels before concatenation. Frozen = the reference's
/// behaviour (random projections never trained; hdssl keeps them as buffers so a resumed run uses the same ones); learnable by default.
template <int W, bool Frozen = false>
struct Balanced {
  static_assert(W > 0,
                "policy::Balanced<W>: W (channels per level after balancing) must be positive; the paper uses "
                "Balanced<32>. For the raw concatenation of vox2vec use policy::NoBalancing.");
  static constexpr bool enabled = true;
  static constexpr bool frozen = Frozen;
  static constexpr int width = W;
};
template <int W>
using FrozenBalanced = Balanced<W, true>;

// ------------------------------------------------------------------ loss terms
/// Contrastive term only (vox2vec).
struct InfoNCE {
  static constexpr bool reconstruction = false;
  static constexpr double default_reconstruction_weight = 0.0;
};
/// Hybrid loss L = L_nce + lambda * L_mse (the paper); lambda is a runtime option, 10 by default.
struct InfoNCEPlusReconstruction {
  static constexpr bool reconstruction = true;
  static constexpr double default_reconstruction_weight = 10.0;
};

// ------------------------------------------------------------------ heads
struct Auto {};  ///< let ModelPolicy choose (a reconstruction head exactly when the loss needs one)
struct NoReconstructionHead {
  static constexpr bool reconstruction = false;
};
struct WithReconstructionHead {
  static constexpr bool reconstruction = true;
};

// ------------------------------------------------------------------ detection (C++17, no concepts)
namespace detail {
template <class, class = void>
struct is_pyramid : std::false_type {};
template <class T>
struct is_pyramid<T, std::void_t<decltype(T::levels), decltype(T::base), decltype(T::raw_embedding)>>
    : std::true_type {};
template <class, class = void>
struct is_balancing : std::false_type {};
template <class T>
struct is_balancing<T, std::void_t<decltype(T::enabled), decltype(T::frozen), decltype(T::width)>> : std::true_type {};
template <class, class = void>
struct is_loss : std::false_type {};
template <class T>
struct is_loss<T, std::void_t<decltype(T::reconstruction), decltype(T::default_reconstruction_weight)>>
    : std::true_type {};
template <class, class = void>
struct is_head : std::false_type {};
template <class T>
struct is_head<T, std::void_t<decltype(T::reconstruction)>> : std::bool_constant<!is_loss<T>::value> {};
}  // namespace detail

/// A complete pre-training model description: ModelPolicy<Pyramid<5, 32>, Balanced<32>, InfoNCEPlusReconstruction>.
template <class PyramidP, class BalancingP, class LossP, class HeadsP = Auto>
struct ModelPolicy {
  static_assert(detail::is_pyramid<PyramidP>::value,
                "ModelPolicy: the first argument must be a pyramid policy such as policy::Pyramid<5, 32>");
  static_assert(detail::is_balancing<BalancingP>::value,
                "ModelPolicy: the second argument must be policy::NoBalancing, policy::Balanced<W> or "
                "policy::FrozenBalanced<W>");
  static_assert(detail::is_loss<LossP>::value,
                "ModelPolicy: the third argument must be policy::InfoNCE or policy::InfoNCEPlusReconstruction");
  static_assert(std::is_same_v<HeadsP, Auto> || detail::is_head<HeadsP>::value,
                "ModelPolicy: the fourth argument must be policy::Auto, policy::WithReconstructionHead or "
                "policy::NoReconstructionHead");

  using pyramid = PyramidP;
  using balancing = BalancingP;
  using loss = LossP;
  using heads = std::conditional_t<std::is_same_v<HeadsP, Auto>,
                                   std::conditional_t<LossP::reconstruction, WithReconstructionHead, NoReconstructionHead>,
                                   HeadsP>;

  static_assert(!LossP::reconstruction || heads::reconstruction,
                "ModelPolicy: policy::InfoNCEPlusReconstruction needs a reconstruction head; use "
                "policy::WithReconstructionHead (or policy::Auto) as the fourth argument, or the loss policy::InfoNCE");
  static_assert(LossP::reconstruction || !heads::reconstruction,
                "ModelPolicy: a reconstruction head without a reconstruction loss term is never trained; use "
                "policy::InfoNCEPlusReconstruction, or policy::NoReconstructionHead (or policy::Auto)");

  static constexpr int levels = PyramidP::levels;
  static constexpr int base_channels = PyramidP::base;
  static constexpr bool balanced = BalancingP::enabled;
  static constexpr bool frozen_balancing = BalancingP::frozen;
  static constexpr bool reconstruction = LossP::reconstruction;
  /// d: size of the voxel embedding fed to the projection head.
  static constexpr int embedding_dim = balanced ? levels * BalancingP::width : PyramidP::raw_embedding;
};

template <class T, class = void>
struct is_model_policy : std::false_type {};
template <class T>
struct is_model_policy<T, std::void_t<typename T::pyramid, typename T::balancing, typename T::loss, typename T::heads,
                                      decltype(T::embedding_dim)>> : std::true_type {};
template <class T>
inline constexpr bool is_model_policy_v = is_model_policy<T>::value;

}  // namespace hdssl::policy
