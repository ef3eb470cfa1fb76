// Local pixel shuffle: the parallel CPU path against a naive sequential oracle, its statistics, the
// augmentation policy, and (with a GPU) the CUDA kernels against the CPU path bit for bit.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/augment/local_shuffle.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/ops/local_shuffle.hpp"
#include "hdssl/ops/torch_compat.hpp"

using hdssl::Purpose;
using hdssl::Rng;
using hdssl::ops::LocalShuffleParams;

namespace {

/// The method read literally (method.md 6.1), written independently of the tiled implementation: per view,
/// loop over the blocks in order, read each block from the untouched original, write it back permuted.
/// Random draws follow the documented contract: Rng(key, 0) gives "apply?" then the shared permutation,
/// Rng(key, 1 + k) gives block k's origin (x, y, z) then, per block, its own permutation.
torch::Tensor naive_shuffle(const torch::Tensor& views_in, const std::vector<std::uint64_t>& keys,
                            const LocalShuffleParams& p) {
  const torch::Tensor views = views_in.to(torch::kDouble).contiguous();  // values only move: exact in double
  const auto V = views.size(0), X = views.size(1), Y = views.size(2), Z = views.size(3);
  torch::Tensor out = views.clone();
  auto src = views.accessor<double, 4>();
  auto dst = out.accessor<double, 4>();
  const auto extent = [&](int64_t d) { return std::max<int64_t>(1, d / p.divisor); };
  const int64_t bx = extent(X), by = extent(Y), bz = extent(Z);
  const int64_t n = bx * by * bz;
  for (int64_t v = 0; v < V; ++v) {
    Rng main(keys[v], 0);
    if (!main.bernoulli(p.p)) continue;
    std::vector<int32_t> shared(n);
    std::iota(shared.begin(), shared.end(), 0);
    if (!p.per_block_permutation) main.shuffle(shared.data(), static_cast<uint32_t>(n));
    for (int64_t k = 0; k < p.blocks; ++k) {
      Rng r(keys[v], 1 + static_cast<uint64_t>(k));
      const int64_t ox = r.below(static_cast<uint32_t>(std::max<int64_t>(1, X - bx)));
      const int64_t oy = r.below(static_cast<uint32_t>(std::max<int64_t>(1, Y - by)));
      const int64_t oz = r.below(static_cast<uint32_t>(std::max<int64_t>(1, Z - bz)));
      std::vector<int32_t> perm = shared;
      if (p.per_block_permutation) {
        std::iota(perm.begin(), perm.end(), 0);
        r.shuffle(perm.data(), static_cast<uint32_t>(n));
      }
      std::vector<double> window;  // numpy's window.flatten(): z fastest
      for (int64_t x = 0; x < bx; ++x)
        for (int64_t y = 0; y < by; ++y)
          for (int64_t z = 0; z < bz; ++z) window.push_back(src[v][ox + x][oy + y][oz + z]);
      int64_t q = 0;
      for (int64_t x = 0; x < bx; ++x)
        for (int64_t y = 0; y < by; ++y)
          for (int64_t z = 0; z < bz; ++z) dst[v][ox + x][oy + y][oz + z] = window[perm[q++]];
    }
  }
  return out.to(views_in.scalar_type());
}

std::vector<std::uint64_t> batch_keys(uint64_t seed, uint64_t batch, int64_t views) {
  std::vector<std::uint64_t> keys;
  for (int64_t v = 0; v < views; ++v) keys.push_back(hdssl::stream_key(seed, batch, v, Purpose::shuffle));
  return keys;
}

/// Distinct values everywhere, so any misplaced voxel shows.
torch::Tensor distinct_views(int64_t V, int64_t X, int64_t Y, int64_t Z) {
  return torch::randperm(V * X * Y * Z, torch::kDouble).view({V, X, Y, Z}).to(torch::kFloat) / float(V * X * Y * Z);
}

LocalShuffleParams params(double p, int32_t blocks, int32_t divisor, bool per_block) {
  LocalShuffleParams q;
  q.p = p;
  q.blocks = blocks;
  q.divisor = divisor;
  q.per_block_permutation = per_block;
  return q;
}


}  // namespace

TEST_CASE("block geometry of the reference patch: 6x6x1 blocks, origins in [0, dim - block)") {
  const auto g = hdssl::ops::ShuffleGeometry::of(128, 128, 32, 20);
  CHECK(g.bx == 6);
  CHECK(g.by == 6);
  CHECK(g.bz == 1);
  CHECK(g.n == 36);
  CHECK(g.rx == 122);
  CHECK(g.ry == 122);
  CHECK(g.rz == 31);
  // Views thinner than the divisor still get 1-voxel extents and a valid origin range.
  const auto thin = hdssl::ops::ShuffleGeometry::of(10, 1, 40, 20);
  CHECK(thin.bx == 1);
  CHECK(thin.by == 1);
  CHECK(thin.ry == 1);
  CHECK(thin.bz == 2);
  CHECK(thin.rz == 38);
}

TEST_CASE("plan: block count, origins inside their ranges and spread uniformly") {
  const LocalShuffleParams p = params(1.0, 5000, 20, false);
  const auto g = hdssl::ops::ShuffleGeometry::of(128, 128, 32, p.divisor);
  hdssl::ops::cpu::HostShufflePlan host(3, p, g);
  hdssl::ops::ShuffleKeys keys;
  keys.seed = 7;
  hdssl::ops::cpu::build_shuffle_plan(hdssl::ops::ShufflePlanFunctor{host.plan, keys, p, g}, 3);
  REQUIRE(host.origins.size() == 3u * 5000u);
  double sx = 0, sz = 0;
  int32_t max_x = 0, max_z = 0, min_x = 1000;
  for (auto packed : host.origins) {
    int32_t x, y, z;
    hdssl::ops::unpack_origin(packed, x, y, z);
    CHECK(y >= 0);
    CHECK(y < g.ry);
    max_x = std::max(max_x, x);
    min_x = std::min(min_x, x);
    max_z = std::max(max_z, z);
    sx += x;
    sz += z;
  }
  CHECK(min_x == 0);
  CHECK(max_x == g.rx - 1);  // 15000 draws over 122 values: both ends are hit
  CHECK(max_z == g.rz - 1);
  // Means of uniform integers on [0, r): (r - 1) / 2; sd of the mean ~ r / sqrt(12 * 15000) ~ 0.29 (x).
  CHECK(sx / 15000 == doctest::Approx(60.5).epsilon(0.03));
  CHECK(sz / 15000 == doctest::Approx(15.0).epsilon(0.05));
  // The shared permutation of each view is a permutation of the 36 offsets of a 6x6x1 block.
  for (int v = 0; v < 3; ++v) {
    std::vector<int32_t> flat;
    for (int q = 0; q < 36; ++q) {
      int32_t x, y, z;
      hdssl::ops::unpack_offset(host.perms[v * 36 + q], x, y, z);
      CHECK(z == 0);
      flat.push_back(x * 6 + y);
    }
    std::sort(flat.begin(), flat.end());
    for (int i = 0; i < 36; ++i) CHECK(flat[i] == i);
  }
}

TEST_CASE("CPU shuffle equals the sequential oracle (shared and per-block permutations, several shapes)") {
  struct Case {
    int64_t V, X, Y, Z;
    LocalShuffleParams p;
  };
  const std::vector<Case> cases = {
      {2, 128, 128, 32, params(1.0, 5000, 20, false)},  // the reference patch
      {2, 128, 128, 32, params(1.0, 5000, 20, true)},   // Models Genesis: one permutation per block
      {3, 37, 23, 9, params(1.0, 400, 5, false)},       // odd extents, 7x4x1 blocks, tiles clipped at the faces
      {2, 41, 30, 26, params(1.0, 300, 6, true)},       // 6x5x4 blocks: overlaps in all three axes
      {2, 12, 9, 3, params(1.0, 50, 20, false)},        // smaller than the divisor: 1x1x1 blocks
  };
  for (const auto& c : cases) {
    CAPTURE(c.X);
    CAPTURE(c.p.per_block_permutation);
    const torch::Tensor views = distinct_views(c.V, c.X, c.Y, c.Z);
    const auto keys = batch_keys(11, 3, c.V);
    const torch::Tensor got = hdssl::ops::local_pixel_shuffle(views, 11, 3, c.p);
    const torch::Tensor want = naive_shuffle(views, keys, c.p);
    CHECK(torch::equal(got, want));
    // Something moved, except with 1x1x1 blocks, whose only permutation is the identity.
    const bool single_voxel_blocks = hdssl::ops::ShuffleGeometry::of(c.X, c.Y, c.Z, c.p.divisor).n == 1;
    CHECK(torch::equal(got, views) == single_voxel_blocks);
  }
}

TEST_CASE("CPU shuffle: strided inputs, a channel axis and every element size give the oracle's values") {
  const LocalShuffleParams p = params(1.0, 700, 8, false);
  const auto keys = batch_keys(5, 0, 2);
  // [V, 1, X, Y, Z] whose memory is ordered (V, Z, Y, X): strides far from contiguous.
  const torch::Tensor base = distinct_views(2, 40, 33, 17);
  const torch::Tensor strided = base.permute({0, 3, 2, 1}).contiguous().permute({0, 3, 2, 1}).unsqueeze(1);
  REQUIRE(!strided.is_contiguous());
  const torch::Tensor want = naive_shuffle(base, keys, p);
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(strided, keys, p).squeeze(1), want));
  // The shuffle moves values: doubles (8 bytes), bf16 (2), uint8 (1) follow the same plan.
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(base.to(torch::kDouble), keys, p), want.to(torch::kDouble)));
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(base.to(torch::kBFloat16), keys, p),
                     naive_shuffle(base.to(torch::kBFloat16), keys, p)));
  const torch::Tensor bytes = torch::randint(0, 256, {2, 40, 33, 17}, torch::kUInt8);
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(bytes, keys, p),
                     naive_shuffle(bytes.to(torch::kDouble), keys, p).to(torch::kUInt8)));
}

TEST_CASE("one block: its values are a permutation of the original block's, nothing else changes") {
  using torch::indexing::Slice;
  for (bool per_block : {false, true}) {
    for (uint64_t seed = 0; seed < 8; ++seed) {
      const LocalShuffleParams p = params(1.0, 1, 20, per_block);
      const torch::Tensor views = distinct_views(1, 128, 128, 32);
      const torch::Tensor out = hdssl::ops::local_pixel_shuffle(views, seed, 0, p);
      // Block 0's origin, from its documented sub-stream.
      Rng r(hdssl::stream_key(seed, 0, 0, Purpose::shuffle), 1);
      const int64_t x0 = r.below(122), y0 = r.below(122), z0 = r.below(31);
      const auto block = [&](const torch::Tensor& t) {
        return t.index({0, Slice(x0, x0 + 6), Slice(y0, y0 + 6), Slice(z0, z0 + 1)});
      };
      CHECK(torch::equal(std::get<0>(block(out).flatten().sort()), std::get<0>(block(views).flatten().sort())));
      CHECK(!torch::equal(block(out), block(views)));  // 1 / 36! chance of the identity
      torch::Tensor outside_out = out.clone(), outside_in = views.clone();
      block(outside_out).zero_();
      block(outside_in).zero_();
      CHECK(torch::equal(outside_out, outside_in));
    }
  }
}

namespace {

/// Runs the device algorithm (local_shuffle_tiles.hpp) on the host exactly as the CUDA kernels call it:
/// the plan and the bins one block at a time, then per tile the three phases with `threads` threads, each
/// phase run by the threads in reverse order (the map must not depend on the order of the atomics).
/// `capacity` < 0: the capacity the device uses; otherwise forced (small values exercise overflowed bins).
/// Returns the output and the largest bin count seen.
std::pair<torch::Tensor, int32_t> device_algorithm_on_host(const torch::Tensor& views, uint64_t seed,
                                                           const LocalShuffleParams& p, int32_t capacity,
                                                           int32_t threads = 256) {
  using namespace hdssl::ops;
  const auto V = views.size(0);
  const auto X = static_cast<int32_t>(views.size(1)), Y = static_cast<int32_t>(views.size(2)),
             Z = static_cast<int32_t>(views.size(3));
  ShuffleDeviceLayout layout = ShuffleDeviceLayout::of(V, X, Y, Z, p);
  if (capacity >= 0) layout.capacity = capacity;
  std::vector<std::uint64_t> workspace(static_cast<size_t>((layout.bytes() + 7) / 8));
  const ShufflePlan plan = layout.plan(workspace.data());
  const ShuffleBins bins = layout.bins(workspace.data());
  std::fill(bins.counts, bins.counts + layout.bin_count(), 0);
  ShuffleKeys keys;
  keys.seed = seed;
  const ShufflePlanFunctor planner{plan, keys, p, layout.geom};
  const ShuffleBinFunctor binner{plan, p, layout.geom, layout.tiling, bins};
  auto add = [](int32_t* counter, int32_t one) { const int32_t old = *counter; *counter += one; return old; };
  for (int64_t v = 0; v < V; ++v) {
    planner.view(v);
    for (int32_t k = 0; k < p.blocks; ++k) {
      planner.block(v, k);
      binner.bin(v, k, add);
    }
  }
  torch::Tensor out = torch::full_like(views, -1.0f);
  ShuffleDeviceTile<float> d;
  d.f.in = views.data_ptr<float>();
  d.f.out = out.data_ptr<float>();
  d.f.in_strides = ViewStrides{int64_t{X} * Y * Z, int64_t{Y} * Z, Z, 1};
  d.f.out_strides = d.f.in_strides;
  d.f.plan = plan;
  d.f.params = p;
  d.f.geom = layout.geom;
  d.tiling = layout.tiling;
  d.bins = bins;
  std::vector<ShuffleOwner> owner(kShuffleDeviceTileVoxels);
  auto max_into = [](ShuffleOwner* slot, ShuffleOwner e) { *slot = std::max(*slot, e); };
  for (int64_t v = 0; v < V; ++v) {
    for (int64_t t = 0; t < layout.tiling.tiles_per_view(); ++t) {
      const TileBox tile = layout.tiling.tile(t);
      REQUIRE(tile.voxels() <= kShuffleDeviceTileVoxels);
      if (!d.shuffled(v)) {
        for (int32_t i = threads - 1; i >= 0; --i) d.write(v, tile, nullptr, i, threads);
        continue;
      }
      for (int32_t i = threads - 1; i >= 0; --i) d.clear(tile, owner.data(), i, threads);
      for (int32_t i = threads - 1; i >= 0; --i) d.mark(v, t, tile, owner.data(), i, threads, max_into);
      for (int32_t i = threads - 1; i >= 0; --i) d.write(v, tile, owner.data(), i, threads);
    }
  }
  return {out, *std::max_element(bins.counts, bins.counts + layout.bin_count())};
}

}  // namespace

TEST_CASE("the CUDA kernels' algorithm (bins per device tile, owner map, rows per warp), run on the host") {
  using namespace hdssl::ops;
  struct Case {
    int32_t V, X, Y, Z;
    LocalShuffleParams p;
  };
  for (const auto& c : {Case{3, 128, 128, 32, params(0.8, 5000, 20, false)}, Case{2, 41, 30, 70, params(1.0, 300, 6, true)},
                        Case{2, 200, 9, 3, params(1.0, 900, 20, false)}, Case{2, 7, 5, 40, params(1.0, 400, 3, false)}}) {
    CAPTURE(c.X);
    CAPTURE(c.Z);
    const torch::Tensor views = distinct_views(c.V, c.X, c.Y, c.Z);
    const torch::Tensor expected = naive_shuffle(views, batch_keys(77, 0, c.V), c.p);
    const auto [binned, most] = device_algorithm_on_host(views, 77, c.p, -1);
    CHECK(torch::equal(binned, expected));
    // The bins held every block: the binned path ran, not the fallback.
    const auto layout = ShuffleDeviceLayout::of(c.V, c.X, c.Y, c.Z, c.p);
    CHECK(most <= layout.capacity);
    CHECK(most > 0);
    // Overflowed bins (capacity forced to 2) fall back to scanning every block: same result.
    const auto [fallback, most_again] = device_algorithm_on_host(views, 77, c.p, 2);
    CHECK(most_again > 2);
    CHECK(torch::equal(fallback, expected));
    // Fewer threads than rows or voxels per tile: the strided loops cover everything once.
    CHECK(torch::equal(device_algorithm_on_host(views, 77, c.p, -1, 32).first, expected));
  }
  // Device tiles of the reference patch: 16 x 8 x 32 (4096 voxels, z along the lanes of a warp), 128 per view;
  // the bins of 5000 blocks of 6x6x1 then hold about 92 blocks each.
  const auto t = device_shuffle_tiling(128, 128, 32);
  CHECK(t.tx == 16);
  CHECK(t.ty == 8);
  CHECK(t.tz == 32);
  CHECK(t.tiles_per_view() == 128);
  const auto g = ShuffleGeometry::of(128, 128, 32, 20);
  CHECK(shuffle_bin_capacity(params(0.8, 5000, 20, false), g, t) < 300);
}

TEST_CASE("determinism: same seed same output on 1 and 2 threads, other seeds differ") {
  const torch::Tensor views = distinct_views(4, 64, 64, 16);
  const LocalShuffleParams p = params(1.0, 2000, 20, false);
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const torch::Tensor one = hdssl::ops::local_pixel_shuffle(views, 42, 9, p);
  torch::set_num_threads(2);
  const torch::Tensor two = hdssl::ops::local_pixel_shuffle(views, 42, 9, p);
  torch::set_num_threads(threads);
  CHECK(torch::equal(one, two));
  CHECK(!torch::equal(one, hdssl::ops::local_pixel_shuffle(views, 43, 9, p)));
  CHECK(!torch::equal(one, hdssl::ops::local_pixel_shuffle(views, 42, 10, p)));
  // View v of a batch equals the same view shuffled alone with first_view = v.
  using torch::indexing::Slice;
  CHECK(torch::equal(one.index({Slice(2, 3)}),
                     hdssl::ops::local_pixel_shuffle(views.index({Slice(2, 3)}), 42, 9, p, /*first_view=*/2)));
}

TEST_CASE("probability: p = 0 is the identity, p = 1 shuffles every view, p = 0.8 about 80 % of them") {
  const torch::Tensor views = distinct_views(200, 20, 20, 4);
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(0.0, 100, 20, false)), views));
  const auto changed_views = [&](double prob) {
    // 5x5x1 blocks: a shared permutation is the identity with probability 1 / 25!, not 1 / 4! as for 2x2x1.
    const torch::Tensor out = hdssl::ops::local_pixel_shuffle(views, 1, 1, params(prob, 200, 4, false));
    return (out != views).flatten(1).any(1).sum().item<int64_t>();
  };
  CHECK(changed_views(1.0) == 200);
  const int64_t n = changed_views(0.8);
  // Binomial(200, 0.8): sd 5.7; 4 sd either side.
  CHECK(n >= 137);
  CHECK(n <= 183);
  // blocks = 0 changes nothing either.
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(1.0, 0, 20, false)), views));
}

TEST_CASE("augmentation policy: in place on one view, equal to the batch op with the set's streams") {
  using hdssl::augment::LocalPixelShuffle;
  static_assert(hdssl::augment::is_augmentation_v<LocalPixelShuffle>);
  const torch::Tensor views = distinct_views(3, 64, 48, 16);
  LocalPixelShuffle::Options o;
  o.p = 1.0;
  o.blocks = 3000;
  const torch::Tensor want = hdssl::ops::local_pixel_shuffle(views, 99, 4, o.params());
  torch::Tensor work = views.clone();
  for (int64_t v = 0; v < 3; ++v) {
    hdssl::augment::ViewRef ref{work[v].data_ptr<float>(), 64, 48, 16};
    Rng rng = Rng::for_stream(99, 4, static_cast<uint64_t>(v), Purpose::shuffle);
    LocalPixelShuffle::apply(ref, o, rng);
  }
  CHECK(torch::equal(work, want));

  const auto round_trip = LocalPixelShuffle::Options::from_json(o.to_json());
  CHECK(round_trip.blocks == 3000);
  CHECK(round_trip.p == 1.0);
  const auto j = nlohmann::json{{"p", 0.5}, {"per_block_permutation", true}};
  const auto parsed = LocalPixelShuffle::Options::from_json(j);
  CHECK(parsed.per_block_permutation);
  CHECK(parsed.blocks == 5000);
  CHECK_THROWS_AS(LocalPixelShuffle::Options::from_json(nlohmann::json{{"p", 1.5}}), hdssl::ConfigError);
  CHECK_THROWS_AS(LocalPixelShuffle::Options::from_json(nlohmann::json{{"block", 3}}), hdssl::ConfigError);
}

TEST_CASE("bad inputs throw typed errors that name the problem") {
  const torch::Tensor views = torch::rand({2, 16, 16, 8});
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(torch::rand({16, 16, 8}), 1, 1), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(torch::rand({2, 3, 16, 16, 8}), 1, 1), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(torch::Tensor(), 1, 1), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(1.5, 10, 20, false)), hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(0.5, -1, 20, false)), hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(0.5, 10, 0, false)), hdssl::ConfigError);
  // divisor 1 on a 16x16x8 view: one 2048-voxel block is fine; on 32x32x8 an 8192-voxel block is not.
  CHECK_NOTHROW(hdssl::ops::local_pixel_shuffle(views, 1, 1, params(1.0, 2, 1, false)));
  std::string message;
  try {
    hdssl::ops::local_pixel_shuffle(torch::rand({1, 32, 32, 8}), 1, 1, params(1.0, 2, 1, false));
  } catch (const hdssl::ConfigError& e) {
    message = e.what();
  }
  CHECK(message.find("divisor") != std::string::npos);
  // 2048x1x1 blocks: few voxels, but more than 1023 along one axis.
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(torch::rand({1, 2048, 1, 1}), 1, 1, params(1.0, 2, 1, false)),
                  hdssl::ConfigError);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle(views, std::vector<std::uint64_t>{1, 2, 3}), hdssl::DataError);
  CHECK(hdssl::ops::local_pixel_shuffle(torch::rand({0, 16, 16, 8}), 1, 1).size(0) == 0);
  // The _out form: shape/dtype must match, and the output may not share memory with the input.
  torch::Tensor out = torch::empty_like(views);
  hdssl::ops::local_pixel_shuffle_out(views, out, 1, 1);
  CHECK(torch::equal(out, hdssl::ops::local_pixel_shuffle(views, 1, 1)));
  torch::Tensor same = views;
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle_out(views, same, 1, 1), hdssl::DataError);
  torch::Tensor wrong = torch::empty({2, 16, 16, 8}, torch::kDouble);
  CHECK_THROWS_AS(hdssl::ops::local_pixel_shuffle_out(views, wrong, 1, 1), hdssl::DataError);
}

// Needs a GPU: reported as skipped (doctest, and CTest's cuda_device entry) where there is none.
TEST_CASE("CUDA shuffle equals the CPU shuffle bit for bit" * doctest::skip(!hdssl::ops::compat::cuda_ops_available())) {
  struct Case {
    int64_t V, X, Y, Z;
    LocalShuffleParams p;
  };
  const std::vector<Case> cases = {
      {20, 128, 128, 32, params(0.8, 5000, 20, false)},  // one training batch, reference settings
      {4, 128, 128, 32, params(1.0, 5000, 20, true)},
      {3, 37, 23, 9, params(1.0, 400, 5, false)},
      {2, 41, 30, 70, params(1.0, 300, 6, true)},  // z longer than one device tile
      {2, 200, 9, 3, params(1.0, 900, 20, false)},
  };
  for (const auto& c : cases) {
    CAPTURE(c.X);
    CAPTURE(c.Z);
    const torch::Tensor views = distinct_views(c.V, c.X, c.Y, c.Z);
    const torch::Tensor cpu = hdssl::ops::local_pixel_shuffle(views, 123, 7, c.p);
    const torch::Tensor gpu = hdssl::ops::local_pixel_shuffle(views.cuda(), 123, 7, c.p).cpu();
    CHECK(torch::equal(gpu, cpu));
    // Explicit keys (uploaded) give the same as derived keys.
    const torch::Tensor gpu_keys =
        hdssl::ops::local_pixel_shuffle(views.cuda(), batch_keys(123, 7, c.V), c.p).cpu();
    CHECK(torch::equal(gpu_keys, cpu));
  }
  // Strided [V, 1, X, Y, Z] input and bf16 on the device.
  const LocalShuffleParams p = params(1.0, 700, 8, false);
  const torch::Tensor base = distinct_views(2, 40, 33, 17);
  const torch::Tensor strided = base.cuda().permute({0, 3, 2, 1}).contiguous().permute({0, 3, 2, 1}).unsqueeze(1);
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(strided, 5, 0, p).cpu(),
                     hdssl::ops::local_pixel_shuffle(base, 5, 0, p).unsqueeze(1)));
  CHECK(torch::equal(hdssl::ops::local_pixel_shuffle(base.to(torch::kBFloat16).cuda(), 5, 0, p).cpu(),
                     hdssl::ops::local_pixel_shuffle(base.to(torch::kBFloat16), 5, 0, p)));
}
