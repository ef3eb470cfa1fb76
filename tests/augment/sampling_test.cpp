// Random streams and the pair sampler: known-answer values, independence from thread count, and the
// geometric guarantees of pairs (crop bounds, anchor in both crops, positives shared by both crops).
#include <doctest/doctest.h>

#include <ATen/core/PhiloxRNGEngine.h>
#include <hdssl/core/dynamic_parallel.hpp>
#include <hdssl/core/rng.hpp>
#include <hdssl/sampling/pair_sampler.hpp>

#include <cmath>
#include <set>
#include <tuple>

using hdssl::Purpose;
using hdssl::Rng;
using hdssl::sampling::PairBatch;
using hdssl::sampling::PairSampler;
using hdssl::sampling::PairSamplerOptions;

namespace {

/// Restores LibTorch's thread count when a test changes it.
struct ThreadGuard {
  int saved = torch::get_num_threads();
  ~ThreadGuard() { torch::set_num_threads(saved); }
};

/// An ellipsoidal "body" in a box, image = x + 1000 y + 1e6 z so every voxel value is unique.
std::pair<torch::Tensor, torch::Tensor> phantom(std::int64_t X, std::int64_t Y, std::int64_t Z, double fill = 0.45) {
  auto x = torch::arange(X, torch::kFloat64).view({X, 1, 1}).expand({X, Y, Z});
  auto y = torch::arange(Y, torch::kFloat64).view({1, Y, 1}).expand({X, Y, Z});
  auto z = torch::arange(Z, torch::kFloat64).view({1, 1, Z}).expand({X, Y, Z});
  auto image = (x + 1000 * y + 1e6 * z).to(torch::kFloat32);
  auto r2 = ((x - X / 2.0) / (X * fill)).pow(2) + ((y - Y / 2.0) / (Y * fill)).pow(2) +
            ((z - Z / 2.0) / (Z * 0.6)).pow(2);
  return {image, r2.le(1.0)};
}

bool equal(const PairBatch& a, const PairBatch& b) {
  return torch::equal(a.view1, b.view1) && torch::equal(a.view2, b.view2) && torch::equal(a.positives1, b.positives1) &&
         torch::equal(a.positives2, b.positives2) && torch::equal(a.counts, b.counts) &&
         torch::equal(a.starts1, b.starts1) && torch::equal(a.starts2, b.starts2) && a.short_pairs == b.short_pairs;
}

/// Checks every geometric guarantee of a batch against the volume, by brute force.
void check_batch(const PairBatch& batch, const std::vector<std::pair<torch::Tensor, torch::Tensor>>& vols,
                 const PairSamplerOptions& o) {
  const auto P = o.patch;
  const std::int64_t B = o.pairs;
  REQUIRE(batch.view1.sizes() == torch::IntArrayRef({B, 1, P[0], P[1], P[2]}));
  REQUIRE(batch.view2.sizes() == batch.view1.sizes());
  REQUIRE(batch.positives1.size(1) == 4);
  REQUIRE(batch.positives1.sizes() == batch.positives2.sizes());
  REQUIRE(batch.counts.sum().item<std::int64_t>() == batch.positives1.size(0));
  auto a = batch.anchors.accessor<std::int64_t, 2>();
  auto s1 = batch.starts1.accessor<std::int64_t, 2>();
  auto s2 = batch.starts2.accessor<std::int64_t, 2>();
  auto p1 = batch.positives1.accessor<std::int64_t, 2>();
  auto p2 = batch.positives2.accessor<std::int64_t, 2>();
  auto counts = batch.counts.accessor<std::int64_t, 1>();
  std::int64_t row = 0, short_pairs = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& [image, body] = vols[static_cast<std::size_t>(batch.volume_index[b].item<std::int64_t>())];
    auto m = body.accessor<bool, 3>();
    for (int ax = 0; ax < 3; ++ax) {
      const std::int64_t size = image.size(ax);
      CHECK(s1[b][ax] >= 0);
      CHECK(s1[b][ax] + P[ax] <= size);
      CHECK(s2[b][ax] >= 0);
      CHECK(s2[b][ax] + P[ax] <= size);
      CHECK(a[b][ax] >= s1[b][ax]);
      CHECK(a[b][ax] < s1[b][ax] + P[ax]);
      CHECK(a[b][ax] >= s2[b][ax]);
      CHECK(a[b][ax] < s2[b][ax] + P[ax]);
    }
    CHECK(m[a[b][0]][a[b][1]][a[b][2]]);
    // Views are the crops of the volume.
    auto crop = [&](decltype(s1)& s) {
      return image.slice(0, s[b][0], s[b][0] + P[0]).slice(1, s[b][1], s[b][1] + P[1]).slice(2, s[b][2], s[b][2] + P[2]);
    };
    CHECK(torch::equal(batch.view1[b][0], crop(s1)));
    CHECK(torch::equal(batch.view2[b][0], crop(s2)));
    // Positives: same world voxel in both views, inside both crops, in the body, no repeats.
    std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> seen;
    for (std::int64_t i = 0; i < counts[b]; ++i, ++row) {
      REQUIRE(p1[row][0] == b);
      REQUIRE(p2[row][0] == b);
      std::array<std::int64_t, 3> w{};
      for (int ax = 0; ax < 3; ++ax) {
        w[ax] = s1[b][ax] + p1[row][1 + ax];
        CHECK(w[ax] == s2[b][ax] + p2[row][1 + ax]);
        CHECK(p1[row][1 + ax] >= 0);
        CHECK(p1[row][1 + ax] < P[ax]);
        CHECK(p2[row][1 + ax] >= 0);
        CHECK(p2[row][1 + ax] < P[ax]);
      }
      CHECK(m[w[0]][w[1]][w[2]]);
      CHECK(seen.insert({w[0], w[1], w[2]}).second);
    }
    // How many body voxels the overlap really has (independent scan of the intersection box).
    std::array<std::int64_t, 3> lo{}, hi{};
    for (int ax = 0; ax < 3; ++ax) {
      lo[ax] = std::max(s1[b][ax], s2[b][ax]);
      hi[ax] = std::min(s1[b][ax], s2[b][ax]) + P[ax];
    }
    const std::int64_t truth =
        body.slice(0, lo[0], hi[0]).slice(1, lo[1], hi[1]).slice(2, lo[2], hi[2]).sum().item<std::int64_t>();
    CHECK(counts[b] <= std::min(truth, o.max_positives));
    if (o.scan_when_short) CHECK(counts[b] == std::min(truth, o.max_positives));
    if (counts[b] < o.max_positives) ++short_pairs;
  }
  CHECK(batch.short_pairs == short_pairs);
}

}  // namespace

TEST_CASE("Philox4x32-10 matches the published known-answer vectors and ATen's engine") {
  // Random123 kat_vectors: philox4x32_10 for counter/key all zero and for the digits of pi.
  auto r = hdssl::philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
  r = hdssl::philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u);
  CHECK(r.v[1] == 0x94fdccebu);
  CHECK(r.v[2] == 0x5001e420u);
  CHECK(r.v[3] == 0x24126ea1u);
  // Stream (key, item) == ATen's philox_engine(seed = key, subsequence = item), draw for draw.
  for (std::uint64_t item : {0ull, 1ull, 12345678901ull}) {
    Rng g(0x0123456789ABCDEFull, item);
    at::philox_engine e(0x0123456789ABCDEFull, item);
    bool same = true;
    for (int i = 0; i < 4099; ++i) same = same && (g.next_u32() == e());
    CHECK(same);
  }
  // skip_blocks(n) == ATen's offset n.
  Rng g(77, 5);
  g.skip_blocks(1000);
  at::philox_engine e(77, 5, 1000);
  CHECK(g.next_u32() == e());
}

TEST_CASE("Random streams: ranges, uniformity, independence of purposes") {
  Rng rng = Rng::for_stream(1, 2, 3, Purpose::generic);
  // below(n) is uniform: chi-square over 10 bins with 100k draws (99.9% critical value 27.9 for 9 dof).
  std::vector<int> bins(10, 0);
  const int draws = 100000;
  for (int i = 0; i < draws; ++i) ++bins[rng.below(10)];
  double chi2 = 0;
  for (int c : bins) chi2 += (c - draws / 10.0) * (c - draws / 10.0) / (draws / 10.0);
  CHECK(chi2 < 27.9);
  double mean = 0, mean2 = 0, lo = 1, hi = 0;
  for (int i = 0; i < draws; ++i) {
    const double u = rng.uniform();
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    mean += u / draws;
  }
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(mean == doctest::Approx(0.5).epsilon(0.01));
  mean = 0;
  for (int i = 0; i < draws; ++i) {
    const double n = rng.normal();
    mean += n / draws;
    mean2 += n * n / draws;
  }
  CHECK(std::abs(mean) < 0.02);
  CHECK(mean2 == doctest::Approx(1.0).epsilon(0.02));
  for (int i = 0; i < 1000; ++i) {
    const auto v = rng.range(-3, 4);
    CHECK((v >= -3 && v < 4));
  }
  CHECK(rng.range(5, 5) == 5);
  // Different purposes / views / batches give different keys; the same tuple gives the same key.
  std::set<std::uint64_t> keys;
  for (std::uint64_t b = 0; b < 4; ++b)
    for (std::uint64_t v = 0; v < 4; ++v)
      for (std::uint32_t p = 0; p < 12; ++p) keys.insert(hdssl::stream_key(9, b, v, p));
  CHECK(keys.size() == 4u * 4u * 12u);
  CHECK(hdssl::stream_key(9, 1, 2, Purpose::bezier) == hdssl::stream_key(9, 1, 2, Purpose::bezier));
  // A Fisher-Yates shuffle is a permutation.
  std::vector<int> perm(36);
  for (int i = 0; i < 36; ++i) perm[i] = i;
  rng.shuffle(perm.data(), 36);
  std::set<int> uniq(perm.begin(), perm.end());
  CHECK(uniq.size() == 36u);
  CHECK(*uniq.begin() == 0);
  CHECK(*uniq.rbegin() == 35);
}

TEST_CASE("Pair sampler: crops, anchors and positives satisfy every guarantee") {
  auto [image, body] = phantom(96, 80, 40);
  PairSamplerOptions o;
  o.patch = {{40, 32, 16}};
  o.pairs = 12;
  o.max_positives = 300;
  PairSampler sampler(o, 7);
  const auto src = sampler.prepare(image, body, "phantom");
  CHECK(src.body_voxels.size() == static_cast<std::size_t>(body.sum().item<std::int64_t>()));
  for (std::uint64_t batch = 0; batch < 6; ++batch) {
    const auto b = sampler.sample(src, batch);
    check_batch(b, {{image, body}}, o);
    // A body covering ~40% of the volume and crops overlapping at least one voxel per axis: most
    // pairs reach the full count.
    CHECK(b.counts.eq(o.max_positives).sum().item<std::int64_t>() >= 6);
  }
}

TEST_CASE("Pair sampler: crop starts cover their whole allowed range, positives spread over the overlap") {
  // Whole volume is body, so the overlap box of every pair is all body.
  const std::int64_t X = 30, Y = 20, Z = 12;
  auto image = torch::rand({X, Y, Z});
  auto body = torch::ones({X, Y, Z}, torch::kBool);
  PairSamplerOptions o;
  o.patch = {{10, 8, 4}};
  o.pairs = 50;
  o.max_positives = 16;
  PairSampler sampler(o, 3);
  const auto src = sampler.prepare(image, body);
  // Per axis, start - (anchor - P + 1) clipped is uniform over the allowed interval: every value
  // of the interval [max(0, a-P+1), min(size-P, a)] should appear across many pairs.
  std::map<std::tuple<int, std::int64_t, std::int64_t>, std::set<std::int64_t>> starts_seen;  // (axis, lo, hi) -> starts
  double sum_rel = 0;
  std::int64_t n_rel = 0;
  for (std::uint64_t batch = 0; batch < 200; ++batch) {
    const auto b = sampler.sample(src, batch);
    auto a = b.anchors.accessor<std::int64_t, 2>();
    auto s1 = b.starts1.accessor<std::int64_t, 2>();
    for (std::int64_t i = 0; i < o.pairs; ++i)
      for (int ax = 0; ax < 1; ++ax) {
        const std::int64_t lo = std::max<std::int64_t>(0, a[i][ax] - o.patch[ax] + 1);
        const std::int64_t hi = std::min<std::int64_t>(X - o.patch[ax], a[i][ax]);
        starts_seen[{ax, lo, hi}].insert(s1[i][ax]);
      }
    // Positive x relative to the overlap box, in [0, 1): mean near 1/2 when spread uniformly.
    auto s2 = b.starts2.accessor<std::int64_t, 2>();
    auto p1 = b.positives1.accessor<std::int64_t, 2>();
    for (std::int64_t r = 0; r < b.positives1.size(0); ++r) {
      const std::int64_t pair = p1[r][0];
      const std::int64_t lo = std::max(s1[pair][0], s2[pair][0]);
      const std::int64_t ext = std::min(s1[pair][0], s2[pair][0]) + o.patch[0] - lo;
      if (ext < 4) continue;
      sum_rel += (static_cast<double>(s1[pair][0] + p1[r][1] - lo) + 0.5) / ext;
      ++n_rel;
    }
  }
  std::int64_t complete = 0, intervals = 0;
  for (const auto& [k, seen] : starts_seen) {
    const auto [ax, lo, hi] = k;
    for (auto s : seen) CHECK((s >= lo && s <= hi));
    if (static_cast<std::int64_t>(seen.size()) == hi - lo + 1) ++complete;
    ++intervals;
  }
  CHECK(complete * 10 >= intervals * 8);  // almost every interval seen in full (200 batches x 50 pairs)
  REQUIRE(n_rel > 1000);
  CHECK(sum_rel / n_rel == doctest::Approx(0.5).epsilon(0.05));
}

TEST_CASE("Pair sampler: the same seed gives the same batch on one or two threads") {
  ThreadGuard guard;
  auto [image, body] = phantom(70, 64, 30);
  PairSamplerOptions o;
  o.patch = {{32, 32, 16}};
  o.pairs = 10;
  o.max_positives = 200;
  PairSampler sampler(o, 1234);
  const auto src = sampler.prepare(image, body);
  torch::set_num_threads(1);
  const auto one = sampler.sample(src, 5);
  torch::set_num_threads(2);
  const auto two = sampler.sample(src, 5);
  CHECK(equal(one, two));
  CHECK(equal(two, sampler.sample(src, 5)));
  CHECK_FALSE(equal(one, sampler.sample(src, 6)));
  CHECK_FALSE(equal(one, PairSampler(o, 1235).sample(src, 5)));
}

TEST_CASE("Pair sampler: tiny overlaps and sparse bodies give fewer positives, counted, never a crash") {
  const std::int64_t X = 64, Y = 64, Z = 20;
  auto image = torch::rand({X, Y, Z});
  // Body: one thin rod along z plus one isolated voxel; overlaps hold at most a few dozen body voxels.
  auto body = torch::zeros({X, Y, Z}, torch::kBool);
  body.slice(0, 30, 31).slice(1, 30, 31).fill_(true);
  body[5][60][3] = true;
  PairSamplerOptions o;
  o.patch = {{32, 32, 8}};
  o.pairs = 16;
  o.max_positives = 64;
  o.exact_box_factor = 0;  // force the rejection path even for small overlaps
  o.attempts_per_positive = 4;
  {
    PairSampler sampler(o, 11);
    const auto src = sampler.prepare(image, body);
    for (std::uint64_t batch = 0; batch < 5; ++batch) {
      const auto b = sampler.sample(src, batch);
      check_batch(b, {{image, body}}, o);
      CHECK(b.short_pairs == o.pairs);  // at most 20 body voxels per overlap < 64
    }
  }
  o.scan_when_short = true;  // exact counts: check_batch then demands count == min(truth, K)
  {
    PairSampler sampler(o, 11);
    const auto src = sampler.prepare(image, body);
    for (std::uint64_t batch = 0; batch < 5; ++batch) check_batch(sampler.sample(src, batch), {{image, body}}, o);
  }
  o.scan_when_short = false;
  o.exact_box_factor = 4;  // small overlaps scanned exactly by default
  o.patch = {{2, 2, 2}};
  {
    PairSampler sampler(o, 12);
    const auto src = sampler.prepare(image, body);
    const auto b = sampler.sample(src, 0);
    auto with_scan = o;
    with_scan.scan_when_short = true;
    check_batch(b, {{image, body}}, with_scan);  // box <= 4 * K: the default path is already exact
  }
}

TEST_CASE("Pair sampler: volumes smaller than the patch are refused or padded on request") {
  auto image = torch::rand({20, 40, 10});
  auto body = torch::ones({20, 40, 10}, torch::kBool);
  PairSamplerOptions o;
  o.patch = {{32, 32, 16}};
  o.pairs = 4;
  o.max_positives = 50;
  PairSampler strict(o, 0);
  CHECK_THROWS_AS(strict.prepare(image, body, "small.nii.gz"), hdssl::DataError);
  try {
    strict.prepare(image, body, "small.nii.gz");
  } catch (const hdssl::DataError& e) {
    CHECK(std::string(e.what()).find("small.nii.gz") != std::string::npos);
    CHECK(std::string(e.what()).find("pad") != std::string::npos);
  }
  o.pad_small = true;
  o.pad_value = -7.0;
  PairSampler padding(o, 0);
  const auto src = padding.prepare(image, body);
  CHECK(src.image.sizes() == torch::IntArrayRef({32, 40, 16}));
  CHECK(src.image.slice(0, 20).eq(-7.0).all().item<bool>());
  CHECK(src.image.slice(2, 10).eq(-7.0).all().item<bool>());
  CHECK(torch::equal(src.image.slice(0, 0, 20).slice(2, 0, 10), image));
  CHECK(src.body.slice(0, 20).any().item<bool>() == false);
  CHECK(src.body_voxels.size() == 20u * 40u * 10u);
  const auto b = padding.sample(src, 0);
  check_batch(b, {{src.image, src.body}}, o);
  // Bad inputs: typed errors naming the problem.
  CHECK_THROWS_AS(strict.prepare(torch::rand({40, 40}), torch::ones({40, 40}), "flat"), hdssl::DataError);
  CHECK_THROWS_AS(strict.prepare(torch::rand({40, 40, 20}), torch::ones({40, 40, 21}), "mismatch"), hdssl::DataError);
  CHECK_THROWS_AS(strict.prepare(torch::rand({40, 40, 20}), torch::zeros({40, 40, 20}), "empty"), hdssl::DataError);
  CHECK_THROWS_AS(strict.sample(std::vector<hdssl::sampling::SampleSource>{}, 0), hdssl::DataError);
}

TEST_CASE("Pair sampler: pairs spread over several volumes of a pool") {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> vols;
  PairSamplerOptions o;
  o.patch = {{16, 16, 8}};
  o.pairs = 9;
  o.max_positives = 40;
  o.volumes_per_batch = 3;
  PairSampler sampler(o, 99);
  std::vector<hdssl::sampling::SampleSource> pool;
  for (int i = 0; i < 5; ++i) {
    auto [im, bo] = phantom(30 + 4 * i, 28, 12 + i);
    vols.push_back({im + 1e7 * i, bo});
    pool.push_back(sampler.prepare(vols.back().first, bo, "vol" + std::to_string(i)));
  }
  for (std::uint64_t batch = 0; batch < 4; ++batch) {
    const auto b = sampler.sample(pool, batch);
    check_batch(b, vols, o);
    std::set<std::int64_t> used;
    for (std::int64_t i = 0; i < o.pairs; ++i) used.insert(b.volume_index[i].item<std::int64_t>());
    CHECK(used.size() == 3u);
  }
  o.volumes_per_batch = 1;
  PairSampler single(o, 99);
  std::set<std::int64_t> over_batches;
  for (std::uint64_t batch = 0; batch < 20; ++batch) {
    const auto b = single.sample(pool, batch);
    CHECK(b.volume_index.eq(b.volume_index[0]).all().item<bool>());
    over_batches.insert(b.volume_index[0].item<std::int64_t>());
  }
  CHECK(over_batches.size() >= 3u);
}

TEST_CASE("Pair sampler options: JSON round trip and rejection of unknown or bad keys") {
  PairSamplerOptions o;
  o.patch = {{64, 64, 16}};
  o.max_positives = 512;
  o.volumes_per_batch = 2;
  const auto back = PairSamplerOptions::from_json(o.to_json());
  CHECK(back.to_json() == o.to_json());
  CHECK(back.patch[2] == 16);
  CHECK_THROWS_AS(PairSamplerOptions::from_json({{"max_positive", 5}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PairSamplerOptions::from_json({{"pairs", 0}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PairSamplerOptions::from_json({{"patch", {128, 128}}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PairSamplerOptions::from_json({{"pairs", 2.5}}), hdssl::ConfigError);
  CHECK_THROWS_AS(PairSampler(PairSamplerOptions{{{0, 1, 1}}}), hdssl::ConfigError);
}

TEST_CASE("Pair sampler: sample_into reuses unshared buffers and gives the same batches") {
  auto [image, body] = phantom(60, 60, 24);
  PairSamplerOptions o;
  o.patch = {{24, 24, 8}};
  o.pairs = 5;
  o.max_positives = 100;
  PairSampler sampler(o, 4);
  const auto src = sampler.prepare(image, body);
  PairBatch reused;
  sampler.sample_into(reused, src, 0);
  const float* view_memory = reused.view1.data_ptr<float>();
  const std::int64_t* pos_memory = reused.positives1.data_ptr<std::int64_t>();
  for (std::uint64_t batch = 1; batch < 4; ++batch) {
    sampler.sample_into(reused, src, batch);
    CHECK(equal(reused, sampler.sample(src, batch)));
    CHECK(reused.view1.data_ptr<float>() == view_memory);
    CHECK(reused.positives1.data_ptr<std::int64_t>() == pos_memory);
  }
  // A caller keeping a view of the previous batch keeps its data: the buffer is not reused.
  const auto kept = reused.view1[0];
  const auto kept_copy = kept.clone();
  sampler.sample_into(reused, src, 9);
  CHECK(reused.view1.data_ptr<float>() != view_memory);
  CHECK(torch::equal(kept, kept_copy));
  CHECK(equal(reused, sampler.sample(src, 9)));
}

TEST_CASE("Pair sampler: anchors are uniform over the body voxels") {
  // Body = a 10x10x10 cube and a 20x10x10 slab far apart: 1/3 of the anchors should fall in the cube.
  auto image = torch::rand({64, 32, 24});
  auto body = torch::zeros({64, 32, 24}, torch::kBool);
  body.slice(0, 2, 12).slice(1, 2, 12).slice(2, 2, 12).fill_(true);
  body.slice(0, 40, 60).slice(1, 20, 30).slice(2, 10, 20).fill_(true);
  PairSamplerOptions o;
  o.patch = {{16, 16, 8}};
  o.pairs = 40;
  o.max_positives = 8;
  PairSampler sampler(o, 21);
  const auto src = sampler.prepare(image, body);
  std::int64_t in_cube = 0, total = 0;
  for (std::uint64_t batch = 0; batch < 150; ++batch) {
    const auto b = sampler.sample(src, batch);
    in_cube += b.anchors.select(1, 0).lt(12).sum().item<std::int64_t>();
    total += o.pairs;
  }
  // 6000 anchors, p = 1/3: standard deviation of the fraction ~0.006.
  CHECK(static_cast<double>(in_cube) / total == doctest::Approx(1.0 / 3.0).epsilon(0.06));
}

TEST_CASE("parallel_for_each_item runs every item once and propagates exceptions") {
  ThreadGuard guard;
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    std::vector<std::atomic<int>> hits(37);
    hdssl::parallel_for_each_item(37, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)]++; });
    bool once = true;
    for (auto& h : hits) once = once && h.load() == 1;
    CHECK(once);
    CHECK_THROWS_AS(hdssl::parallel_for_each_item(10,
                                                  [&](std::int64_t i) {
                                                    if (i == 3) throw hdssl::DataError("item 3");
                                                  }),
                    hdssl::DataError);
  }
  hdssl::parallel_for_each_item(0, [&](std::int64_t) { FAIL("no items to run"); });
}
