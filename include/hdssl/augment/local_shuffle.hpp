#pragma once
// Local pixel shuffling as an augmentation policy (method.md 6.1), for AugmentationSet.
// The work itself is hdssl::ops' shuffle (ops/local_shuffle_functor.hpp: semantics and random draws);
// this header adds the JSON options and the in-place, one-view CPU entry the augmentation set calls.
// A whole batch (CPU or CUDA, e.g. the GPU kernels): apply_batch, through hdssl::ops::local_pixel_shuffle_out,
// which gives the same result as this policy applied view by view with the set's streams.
#include "hdssl/augment/policy.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/ops/cpu/local_shuffle.hpp"
#include "hdssl/ops/local_shuffle.hpp"
#include "hdssl/ops/local_shuffle_functor.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace hdssl::augment {

struct LocalPixelShuffle {
  struct Options {
    double p = 0.8;                      ///< probability that a view is shuffled
    std::int32_t blocks = 5000;          ///< blocks per view
    std::int32_t divisor = 20;           ///< block extent per axis = max(1, floor(dim / divisor))
    bool per_block_permutation = false;  ///< [ref] false: one permutation shared by the blocks of a view

    ops::LocalShuffleParams params() const { return ops::LocalShuffleParams{p, blocks, divisor, per_block_permutation}; }

    static Options from_json(const nlohmann::json& j) {
      Options o;
      OptionReader(j, "augment.local_pixel_shuffle")
          .probability("p", o.p)
          .read<std::int32_t>("blocks", o.blocks, 0, 10'000'000)
          .read<std::int32_t>("divisor", o.divisor, 1, 1'000'000)
          .read("per_block_permutation", o.per_block_permutation)
          .finish();
      return o;
    }
    nlohmann::json to_json() const {
      return {{"p", p}, {"blocks", blocks}, {"divisor", divisor}, {"per_block_permutation", per_block_permutation}};
    }
  };
  using options_type = Options;
  static constexpr const char* name = "local_pixel_shuffle";
  static constexpr Purpose purpose = Purpose::shuffle;

  /// In place on one view. Draws from rng's key only (sub-streams 0 and 1 + block), not its position, so a
  /// batch shuffled on the GPU with the same keys matches bit for bit. Throws ConfigError for blocks larger
  /// than ops::kMaxShuffleBlockVoxels.
  static void apply(ViewRef view, const Options& o, Rng& rng) {
    if (view.numel() == 0) return;
    const ops::LocalShuffleParams params = o.params();
    const ops::ShuffleGeometry g = ops::ShuffleGeometry::of(view.nx, view.ny, view.nz, params.divisor);
    if (g.n > ops::kMaxShuffleBlockVoxels || g.bx > ops::kMaxShuffleBlockExtent ||
        g.by > ops::kMaxShuffleBlockExtent || g.bz > ops::kMaxShuffleBlockExtent)
      throw ConfigError("augment.local_pixel_shuffle: blocks of " + std::to_string(g.bx) + "x" +
                        std::to_string(g.by) + "x" + std::to_string(g.bz) + " voxels exceed the supported " +
                        std::to_string(ops::kMaxShuffleBlockVoxels) + " voxels or " +
                        std::to_string(ops::kMaxShuffleBlockExtent) + " per axis (raise divisor)");
    Rng main(rng.key(), 0);
    if (!ops::shuffle_applies(main, params.p) || params.blocks == 0) return;  // skip the copy of the original
    const std::vector<float> original(view.data, view.data + view.numel());
    const std::uint64_t key = rng.key();
    ops::ShuffleKeys keys;
    keys.keys = &key;
    ops::ViewStrides strides;
    strides.sv = view.numel();
    strides.sx = view.ny * view.nz;
    strides.sy = view.nz;
    strides.sz = 1;
    ops::cpu::local_shuffle<float>(original.data(), strides, view.data, strides, 1, static_cast<std::int32_t>(view.nx),
                                   static_cast<std::int32_t>(view.ny), static_cast<std::int32_t>(view.nz), keys,
                                   params);
  }

  /// A batch of views in place (CPU or CUDA), view v shuffled with stream view_offset + v: the batch op reads
  /// the original while it writes, so it shuffles from a copy.
  static void apply_batch(torch::Tensor views, const Options& o, std::uint64_t seed, std::uint64_t batch,
                          std::uint64_t view_offset) {
    const at::Tensor original = views.clone();
    ops::local_pixel_shuffle_out(original, views, seed, batch, o.params(), view_offset);
  }
};

}  // namespace hdssl::augment
