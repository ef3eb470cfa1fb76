#pragma once
// Overlapping crop pairs and their shared positive voxels (method.md section 5).
//
// Per pair: an anchor drawn uniformly from the body voxels; two crops of size P that both contain it
// (start per axis uniform in [max(0, a-P+1), min(size-P, a)]); up to `max_positives` body voxels of
// the intersection of the two crops, drawn without replacement, indexing both views (coordinates
// re-expressed in each crop's frame).
//
// Cost: the reference scans every body voxel of the volume for every pair. Here the body voxel list
// is built once per volume (SampleSource, for the anchors) and positives are drawn inside the
// intersection box by rejection against the body mask: O(max_positives) per pair.
//   - Intersection boxes with at most `exact_box_factor * max_positives` voxels are scanned
//     instead (still O(max_positives)); the result is then exact: every body voxel if there are
//     fewer than max_positives, else a uniform subset.
//   - Larger boxes: uniform draws in the box, rejecting non-body voxels and repeats, at most
//     `attempts_per_positive * max_positives` draws. A box whose body fraction is so small that the
//     cap is hit yields fewer positives; the batch says so (`counts`, `short_pairs`). Set
//     `scan_when_short` to scan such a box instead (O(box volume), exact).
// Every random choice comes from the pair's own streams (hdssl::Rng keyed by seed, batch, pair),
// so a batch is identical for any thread count.
#include "hdssl/core/dynamic_parallel.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/core/tensor_text.hpp"
#include "hdssl/core/rng.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace hdssl::sampling {

struct PairSamplerOptions {
  std::array<std::int64_t, 3> patch{{128, 128, 32}};  ///< crop size (X, Y, Z)
  std::int64_t pairs = 10;                            ///< pairs per batch (B): 2B views
  std::int64_t max_positives = 1024;                  ///< positives per pair (fewer if the overlap has fewer)
  std::int64_t volumes_per_batch = 1;                 ///< [ref] 1; >1 spreads the pairs over distinct volumes
  std::int64_t attempts_per_positive = 16;            ///< rejection cap = this * max_positives draws
  std::int64_t exact_box_factor = 4;                  ///< scan boxes up to this * max_positives voxels
  bool scan_when_short = false;                       ///< scan the box when rejection falls short
  bool pad_small = false;  ///< pad volumes smaller than the patch (high side, pad_value, not body) instead of failing
  double pad_value = 0.0;

  static PairSamplerOptions from_json(const nlohmann::json& j) {
    PairSamplerOptions o;
    OptionReader r(j, "sampler");
    r.read<std::int64_t, 3>("patch", o.patch, 1, std::int64_t{1} << 20);
    r.read<std::int64_t>("pairs", o.pairs, 1, 1 << 20)
        .read<std::int64_t>("max_positives", o.max_positives, 1, 1 << 24)
        .read<std::int64_t>("volumes_per_batch", o.volumes_per_batch, 1, 1 << 20)
        .read<std::int64_t>("attempts_per_positive", o.attempts_per_positive, 1, 1 << 20)
        .read<std::int64_t>("exact_box_factor", o.exact_box_factor, 0, 1 << 20)
        .read("scan_when_short", o.scan_when_short)
        .read("pad_small", o.pad_small)
        .read<double>("pad_value", o.pad_value, -1e30, 1e30);
    r.finish();
    return o;
  }
  nlohmann::json to_json() const {
    return {{"patch", patch},
            {"pairs", pairs},
            {"max_positives", max_positives},
            {"volumes_per_batch", volumes_per_batch},
            {"attempts_per_positive", attempts_per_positive},
            {"exact_box_factor", exact_box_factor},
            {"scan_when_short", scan_when_short},
            {"pad_small", pad_small},
            {"pad_value", pad_value}};
  }
};

/// A volume ready for sampling: float32 image, bool body mask and the list of body voxels (the
/// anchors' population), built once and reused for every batch drawn from it.
struct SampleSource {
  torch::Tensor image;   ///< (X, Y, Z) float32, contiguous
  torch::Tensor body;    ///< (X, Y, Z) bool, contiguous
  std::vector<std::int64_t> body_voxels;  ///< linear indices (x * Y + y) * Z + z of body voxels
  std::string name;      ///< for messages

  std::array<std::int64_t, 3> shape() const { return {{image.size(0), image.size(1), image.size(2)}}; }
};

/// One batch of pairs. Views are the un-augmented crops (the reconstruction targets).
struct PairBatch {
  torch::Tensor view1, view2;            ///< [B, 1, PX, PY, PZ] float32
  torch::Tensor positives1, positives2;  ///< [N, 4] int64 rows (pair, x, y, z) in each view's frame
  torch::Tensor counts;                  ///< [B] int64 positives per pair (rows of pair b are contiguous, in order)
  torch::Tensor anchors;                 ///< [B, 3] int64 anchor voxel (volume frame)
  torch::Tensor starts1, starts2;        ///< [B, 3] int64 crop origins (volume frame)
  torch::Tensor volume_index;            ///< [B] int64 index into the pool the pair came from
  std::int64_t short_pairs = 0;          ///< pairs with fewer than max_positives positives
};

class PairSampler {
 public:
  explicit PairSampler(PairSamplerOptions options = {}, std::uint64_t seed = 0) : o_(options), seed_(seed) {
    for (int a = 0; a < 3; ++a)
      if (o_.patch[a] < 1) throw ConfigError("sampler.patch: every size must be positive");
    if (o_.pairs < 1) throw ConfigError("sampler.pairs: must be at least 1");
    if (o_.max_positives < 1) throw ConfigError("sampler.max_positives: must be at least 1");
    if (o_.volumes_per_batch < 1) throw ConfigError("sampler.volumes_per_batch: must be at least 1");
    if (o_.attempts_per_positive < 1) throw ConfigError("sampler.attempts_per_positive: must be at least 1");
  }

  const PairSamplerOptions& options() const { return o_; }
  std::uint64_t seed() const { return seed_; }

  /// Checks and caches a volume for sampling. `image` (X, Y, Z) any real dtype, `body` (X, Y, Z)
  /// bool or numeric (non-zero = body). A volume smaller than the patch on some axis is an error
  /// (preprocessing pads it) unless options.pad_small, which pads the high side with pad_value and
  /// marks the padding as non-body.
  SampleSource prepare(torch::Tensor image, torch::Tensor body, std::string name = "volume") const {
    if (!image.defined() || image.dim() != 3)
      throw DataError(name + ": image must be a 3-D (X, Y, Z) tensor, got " +
                      (image.defined() ? std::to_string(image.dim()) + " dimensions" : std::string("undefined")));
    if (!body.defined() || body.sizes() != image.sizes())
      throw DataError(name + ": body mask must have the image's shape " + shape_string(image) + ", got " +
                      shape_string(body));
    image = image.to(torch::kCPU, torch::kFloat32).contiguous();
    body = (body.scalar_type() == torch::kBool ? body : body.ne(0)).to(torch::kCPU).contiguous();
    bool small = false;
    for (int a = 0; a < 3; ++a) small = small || image.size(a) < o_.patch[a];
    if (small) {
      if (!o_.pad_small)
        throw DataError(name + ": volume " + shape_string(image) + " is smaller than the patch " +
                        patch_string() + "; pad it to the patch size in preprocessing, or set sampler.pad_small");
      std::vector<std::int64_t> pad;  // torch's order: last axis first, (low, high) pairs
      for (int a = 2; a >= 0; --a) {
        pad.push_back(0);
        pad.push_back(std::max<std::int64_t>(0, o_.patch[a] - image.size(a)));
      }
      image = torch::constant_pad_nd(image, pad, o_.pad_value).contiguous();
      body = torch::constant_pad_nd(body.to(torch::kUInt8), pad, 0).to(torch::kBool).contiguous();
    }
    SampleSource s;
    s.image = image;
    s.body = body;
    s.name = std::move(name);
    const bool* m = body.data_ptr<bool>();
    const std::int64_t n = body.numel();
    std::int64_t count = 0;
    for (std::int64_t i = 0; i < n; ++i) count += m[i] ? 1 : 0;
    if (count == 0) throw DataError(s.name + ": body mask is empty; no anchor can be drawn");
    s.body_voxels.reserve(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < n; ++i)
      if (m[i]) s.body_voxels.push_back(i);
    return s;
  }

  /// Batch `batch` from one volume.
  PairBatch sample(const SampleSource& source, std::uint64_t batch) const {
    std::vector<const SampleSource*> pool{&source};
    return sample_pool(pool, batch);
  }
  /// Batch `batch` from a pool: volumes_per_batch distinct volumes are drawn at random (all of
  /// them if the pool is smaller) and the pairs go to them in turn.
  PairBatch sample(const std::vector<SampleSource>& pool, std::uint64_t batch) const {
    std::vector<const SampleSource*> ptrs;
    for (const auto& s : pool) ptrs.push_back(&s);
    return sample_pool(ptrs, batch);
  }

  PairBatch sample_pool(const std::vector<const SampleSource*>& pool, std::uint64_t batch) const {
    PairBatch out;
    sample_into(out, pool, batch);
    return out;
  }

  /// As sample(), writing into `out` and reusing its tensors when their shapes fit (a training loop
  /// keeps one PairBatch per worker). Positive tensors are views of a buffer of B * max_positives rows.
  void sample_into(PairBatch& out, const SampleSource& source, std::uint64_t batch) const {
    sample_into(out, std::vector<const SampleSource*>{&source}, batch);
  }
  /// The pool indices batch `batch` draws its pairs from (pair b uses entry b % size of the result): a
  /// partial Fisher-Yates over a pool of `pool_size` volumes. A loader that keeps only some volumes in
  /// memory asks this first and materialises just these.
  std::vector<std::int64_t> volumes_for_batch(std::size_t pool_size, std::uint64_t batch) const {
    const std::int64_t k = std::min<std::int64_t>(o_.volumes_per_batch, static_cast<std::int64_t>(pool_size));
    std::vector<std::int64_t> order(pool_size);
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int64_t>(i);
    Rng vrng = Rng::for_stream(seed_, batch, 0, Purpose::volume);
    for (std::int64_t i = 0; i < k; ++i) {
      const std::int64_t j = i + static_cast<std::int64_t>(vrng.below64(order.size() - i));
      std::swap(order[i], order[j]);
    }
    order.resize(static_cast<std::size_t>(k));
    return order;
  }

  /// `pool` entries that volumes_for_batch(pool.size(), batch) does not name may be null.
  /// `crop` false leaves view1/view2 undefined: the caller crops them itself from starts1/starts2 and
  /// volume_index (train/device_volumes.hpp crops on the GPU from volumes uploaded once).
  void sample_into(PairBatch& out, const std::vector<const SampleSource*>& pool, std::uint64_t batch,
                   bool crop = true) const {
    if (pool.empty()) throw DataError("sampler: the pool of volumes is empty");
    const std::int64_t B = o_.pairs;
    const auto P = o_.patch;

    const std::vector<std::int64_t> order = volumes_for_batch(pool.size(), batch);
    const auto k = static_cast<std::int64_t>(order.size());
    for (const std::int64_t i : order) {
      if (pool[static_cast<std::size_t>(i)] == nullptr)
        throw DataError("sampler: volume " + std::to_string(i) + " of the pool is needed by batch " +
                        std::to_string(batch) + " but not provided");
      check_source(*pool[static_cast<std::size_t>(i)]);
    }

    // Reuse the caller's buffers when they fit: fresh multi-megabyte tensors cost a page fault per
    // 4 KiB on first touch, which on some virtual machines dominates the whole batch.
    if (crop) {
      reuse(out.view1, {B, 1, P[0], P[1], P[2]}, torch::kFloat32);
      reuse(out.view2, {B, 1, P[0], P[1], P[2]}, torch::kFloat32);
    } else {
      out.view1 = out.view2 = torch::Tensor();
    }
    reuse(out.anchors, {B, 3}, torch::kInt64);
    reuse(out.starts1, {B, 3}, torch::kInt64);
    reuse(out.starts2, {B, 3}, torch::kInt64);
    reuse(out.volume_index, {B}, torch::kInt64);
    reuse(out.counts, {B}, torch::kInt64);
    out.short_pairs = 0;
    std::vector<std::vector<std::int64_t>> pos(static_cast<std::size_t>(B));  // per pair: (x1,y1,z1,x2,y2,z2)*

    auto* anchors = out.anchors.data_ptr<std::int64_t>();
    auto* s1p = out.starts1.data_ptr<std::int64_t>();
    auto* s2p = out.starts2.data_ptr<std::int64_t>();
    auto* vip = out.volume_index.data_ptr<std::int64_t>();
    auto* cnt = out.counts.data_ptr<std::int64_t>();
    float* v1 = crop ? out.view1.data_ptr<float>() : nullptr;
    float* v2 = crop ? out.view2.data_ptr<float>() : nullptr;
    const std::int64_t patch_numel = P[0] * P[1] * P[2];

    parallel_for_each_item(B, [&](std::int64_t b) {
      const std::int64_t vi = order[static_cast<std::size_t>(b % k)];
      const SampleSource& src = *pool[static_cast<std::size_t>(vi)];
      const auto S = src.shape();
      vip[b] = vi;

      Rng arng = Rng::for_stream(seed_, batch, static_cast<std::uint64_t>(b), Purpose::anchor);
      const std::int64_t lin = src.body_voxels[arng.below64(src.body_voxels.size())];
      const std::array<std::int64_t, 3> a{{lin / (S[1] * S[2]), (lin / S[2]) % S[1], lin % S[2]}};

      Rng crng = Rng::for_stream(seed_, batch, static_cast<std::uint64_t>(b), Purpose::crop);
      std::array<std::int64_t, 3> c1{}, c2{};
      for (int view = 0; view < 2; ++view)
        for (int ax = 0; ax < 3; ++ax) {
          const std::int64_t lo = std::max<std::int64_t>(0, a[ax] - P[ax] + 1);
          const std::int64_t hi = std::min<std::int64_t>(S[ax] - P[ax], a[ax]);  // inclusive
          (view == 0 ? c1 : c2)[ax] = crng.range(lo, hi + 1);
        }
      for (int ax = 0; ax < 3; ++ax) {
        anchors[b * 3 + ax] = a[ax];
        s1p[b * 3 + ax] = c1[ax];
        s2p[b * 3 + ax] = c2[ax];
      }
      if (crop) {
        copy_crop(src, c1, v1 + b * patch_numel);
        copy_crop(src, c2, v2 + b * patch_numel);
      }

      Rng prng = Rng::for_stream(seed_, batch, static_cast<std::uint64_t>(b), Purpose::positives);
      auto& p = pos[static_cast<std::size_t>(b)];
      draw_positives(src, c1, c2, prng, p);
      cnt[b] = static_cast<std::int64_t>(p.size() / 6);
    });

    std::int64_t total = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      total += cnt[b];
      if (cnt[b] < o_.max_positives) ++out.short_pairs;
    }
    out.positives1 = rows_of(out.positives1, B * o_.max_positives, total);
    out.positives2 = rows_of(out.positives2, B * o_.max_positives, total);
    auto* q1 = out.positives1.data_ptr<std::int64_t>();
    auto* q2 = out.positives2.data_ptr<std::int64_t>();
    std::int64_t row = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& p = pos[static_cast<std::size_t>(b)];
      for (std::size_t i = 0; i < p.size(); i += 6, ++row) {
        q1[row * 4] = b;
        q2[row * 4] = b;
        for (int ax = 0; ax < 3; ++ax) {
          q1[row * 4 + 1 + ax] = p[i + ax];
          q2[row * 4 + 1 + ax] = p[i + 3 + ax];
        }
      }
    }
  }

 private:
  /// Keeps t if it already has this shape and nothing else (no other tensor, no view) shares its
  /// memory, so a caller holding on to an earlier batch never sees it overwritten.
  static void reuse(torch::Tensor& t, std::vector<std::int64_t> shape, torch::Dtype dtype) {
    if (!t.defined() || t.sizes() != torch::IntArrayRef(shape) || t.scalar_type() != dtype || !t.is_contiguous() ||
        !t.device().is_cpu() || t.storage_offset() != 0 || t.storage().use_count() != 1)
      t = torch::empty(shape, dtype);
  }
  /// [rows, 4] int64 over the memory of t when it holds at least `capacity` rows and is unshared.
  static torch::Tensor rows_of(const torch::Tensor& t, std::int64_t capacity, std::int64_t rows) {
    torch::Tensor buf = t;
    if (!buf.defined() || buf.scalar_type() != torch::kInt64 || !buf.device().is_cpu() ||
        buf.storage().nbytes() < static_cast<std::size_t>(capacity * 4) * sizeof(std::int64_t) ||
        buf.storage().use_count() != 1)
      buf = torch::empty({capacity, 4}, torch::kInt64);
    return torch::empty({0}, torch::kInt64).set_(buf.storage(), 0, {rows, 4}, {4, 1});
  }

  std::string patch_string() const {
    return "(" + std::to_string(o_.patch[0]) + ", " + std::to_string(o_.patch[1]) + ", " +
           std::to_string(o_.patch[2]) + ")";
  }

  void check_source(const SampleSource& s) const {
    if (!s.image.defined() || s.image.dim() != 3 || s.image.scalar_type() != torch::kFloat32 ||
        !s.image.is_contiguous() || !s.image.device().is_cpu())
      throw DataError(s.name + ": not prepared for sampling (use PairSampler::prepare)");
    if (!s.body.defined() || s.body.sizes() != s.image.sizes() || s.body.scalar_type() != torch::kBool ||
        !s.body.is_contiguous())
      throw DataError(s.name + ": body mask not prepared for sampling (use PairSampler::prepare)");
    if (s.body_voxels.empty()) throw DataError(s.name + ": body mask is empty; no anchor can be drawn");
    for (int a = 0; a < 3; ++a)
      if (s.image.size(a) < o_.patch[a])
        throw DataError(s.name + ": volume " + shape_string(s.image) + " is smaller than the patch " +
                        patch_string() + "; prepare it with sampler.pad_small or pad it in preprocessing");
  }

  void copy_crop(const SampleSource& src, const std::array<std::int64_t, 3>& c, float* dst) const {
    const auto S = src.shape();
    const auto P = o_.patch;
    const float* img = src.image.data_ptr<float>();
    for (std::int64_t x = 0; x < P[0]; ++x)
      for (std::int64_t y = 0; y < P[1]; ++y) {
        const float* row = img + ((c[0] + x) * S[1] + (c[1] + y)) * S[2] + c[2];
        std::copy(row, row + P[2], dst + (x * P[1] + y) * P[2]);
      }
  }

  /// Appends (x1, y1, z1, x2, y2, z2) per positive, in draw order.
  void draw_positives(const SampleSource& src, const std::array<std::int64_t, 3>& c1,
                      const std::array<std::int64_t, 3>& c2, Rng& rng, std::vector<std::int64_t>& out) const {
    const auto S = src.shape();
    const auto P = o_.patch;
    std::array<std::int64_t, 3> lo{}, ext{};
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::max(c1[a], c2[a]);
      ext[a] = std::min(c1[a], c2[a]) + P[a] - lo[a];  // >= 1: both crops contain the anchor
    }
    const std::int64_t box = ext[0] * ext[1] * ext[2];
    const bool* m = src.body.data_ptr<bool>();
    const std::int64_t K = o_.max_positives;
    auto world = [&](std::int64_t i) {  // box-linear index -> volume-linear index
      const std::int64_t x = lo[0] + i / (ext[1] * ext[2]);
      const std::int64_t y = lo[1] + (i / ext[2]) % ext[1];
      const std::int64_t z = lo[2] + i % ext[2];
      return std::array<std::int64_t, 3>{{x, y, z}};
    };
    auto is_body = [&](const std::array<std::int64_t, 3>& w) { return m[(w[0] * S[1] + w[1]) * S[2] + w[2]]; };
    auto emit = [&](const std::array<std::int64_t, 3>& w) {
      for (int a = 0; a < 3; ++a) out.push_back(w[a] - c1[a]);
      for (int a = 0; a < 3; ++a) out.push_back(w[a] - c2[a]);
    };
    out.reserve(static_cast<std::size_t>(6 * K));

    // Exact path: list the box's body voxels, then a partial Fisher-Yates picks min(K, n) of them.
    auto scan = [&]() {
      out.clear();
      std::vector<std::int64_t> cand;
      for (std::int64_t i = 0; i < box; ++i)
        if (is_body(world(i))) cand.push_back(i);
      const std::int64_t take = std::min<std::int64_t>(K, static_cast<std::int64_t>(cand.size()));
      for (std::int64_t i = 0; i < take; ++i) {
        const std::int64_t j = i + static_cast<std::int64_t>(rng.below64(cand.size() - i));
        std::swap(cand[i], cand[j]);
        emit(world(cand[i]));
      }
    };
    if (box <= o_.exact_box_factor * K) {
      scan();
      return;
    }
    // Rejection path: uniform draws in the box; keeping the first K distinct body voxels gives a
    // uniform K-subset of the box's body voxels (sequential sampling without replacement).
    std::unordered_set<std::int64_t> seen;
    seen.reserve(static_cast<std::size_t>(2 * K));
    const std::int64_t cap = o_.attempts_per_positive * K;
    std::int64_t found = 0;
    for (std::int64_t t = 0; t < cap && found < K; ++t) {
      const std::int64_t i = static_cast<std::int64_t>(rng.below64(static_cast<std::uint64_t>(box)));
      const auto w = world(i);
      if (!is_body(w) || !seen.insert(i).second) continue;
      emit(w);
      ++found;
    }
    if (found < K && o_.scan_when_short) scan();
  }

  PairSamplerOptions o_;
  std::uint64_t seed_;
};

}  // namespace hdssl::sampling
