#pragma once
// Explicit, seedable, counter-based random streams (Philox4x32-10).
//
// Why counter-based: every random choice of a batch (anchor, crop starts, positives, each
// augmentation of each view, each shuffle block) is a pure function of
// (seed, batch, view, purpose[, item]). Work split across threads, or across CUDA threads, draws
// from its own stream and never from a shared generator, so a batch is bit-identical whatever the
// thread count or device.
//
// Layout (the same as ATen's at::philox_engine, which the tests use as an independent oracle):
//   key     (2 x 32 bit) = the 64-bit stream key, usually from stream_key(seed, batch, view, purpose)
//   counter (4 x 32 bit) = [ block (64 bit) | item (64 bit) ]; `item` selects an independent
//                          sub-stream of a key (e.g. shuffle block index), `block` advances as the
//                          stream is consumed (4 x 32-bit outputs per block).
//
// This header is plain C++ usable from CUDA device code: no <random>, no exceptions, no allocation.
#include "hdssl/config.hpp"

#include <cmath>
#include <cstdint>

namespace hdssl {

/// What a stream is used for. Different purposes of the same (seed, batch, view) never share draws.
/// Values are part of the reproducibility contract: append, never renumber.
enum class Purpose : std::uint32_t {
  generic = 0,
  volume = 1,     ///< which volume(s) a batch's pairs come from
  anchor = 2,     ///< anchor voxel of a pair
  crop = 3,       ///< crop starts of the two views of a pair
  positives = 4,  ///< positive voxels of a pair
  shuffle = 5,    ///< local pixel shuffle: apply?, permutation, block origins
  bezier = 6,     ///< non-linear intensity curve
  inpaint = 7,    ///< local in-painting boxes and noise
  outpaint = 8,   ///< out-painting box and noise
  blur = 9,       ///< axial Gaussian blur / sharpen
  noise = 10,     ///< additive Gaussian noise
  window = 11,    ///< random intensity window
  folds = 12,     ///< cross-validation: the order volumes are dealt into folds
  segmentation = 13,  ///< downstream training: the volume, classes and centres of a batch's patches
  cohort = 14,    ///< synthetic subjects: deformation, bias field, contrast and noise of one subject
  user = 1024,    ///< first value free for user-defined augmentations
};

/// SplitMix64 finaliser: a bijective 64-bit mixer (used to derive keys, never as the stream itself).
HDSSL_HOST_DEVICE constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Key of the stream for (seed, batch, view, purpose). Each component is folded in with a full
/// SplitMix64 round, so neighbouring tuples give unrelated keys. `view` is the index of the view in
/// the batch (2 * pair + side) for per-view augmentations, or the pair index for per-pair draws.
HDSSL_HOST_DEVICE constexpr std::uint64_t stream_key(std::uint64_t seed, std::uint64_t batch, std::uint64_t view,
                                                     std::uint32_t purpose) {
  std::uint64_t k = splitmix64(seed);
  k = splitmix64(k ^ batch);
  k = splitmix64(k ^ view);
  k = splitmix64(k ^ static_cast<std::uint64_t>(purpose));
  return k;
}
HDSSL_HOST_DEVICE constexpr std::uint64_t stream_key(std::uint64_t seed, std::uint64_t batch, std::uint64_t view,
                                                     Purpose purpose) {
  return stream_key(seed, batch, view, static_cast<std::uint32_t>(purpose));
}

/// One Philox4x32-10 block: 128 random bits from a 128-bit counter and a 64-bit key.
struct Philox4x32 {
  std::uint32_t v[4];
};

HDSSL_HOST_DEVICE inline Philox4x32 philox4x32_10(Philox4x32 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(M0) * ctr.v[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(M1) * ctr.v[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

/// A random stream: Philox4x32-10 with a fixed key and item, consumed block by block.
/// Cheap to construct (no warm-up), trivially copyable.
class Rng {
 public:
  /// Stream `item` of key `key`, starting `offset` 128-bit blocks in.
  HDSSL_HOST_DEVICE explicit Rng(std::uint64_t key = 0, std::uint64_t item = 0, std::uint64_t offset = 0)
      : key_(key), item_(item), block_(offset) {}

  /// Convenience: the stream for (seed, batch, view, purpose), sub-stream `item`.
  HDSSL_HOST_DEVICE static Rng for_stream(std::uint64_t seed, std::uint64_t batch, std::uint64_t view,
                                          Purpose purpose, std::uint64_t item = 0) {
    return Rng(stream_key(seed, batch, view, purpose), item);
  }

  HDSSL_HOST_DEVICE std::uint64_t key() const { return key_; }
  HDSSL_HOST_DEVICE std::uint64_t item() const { return item_; }

  /// An independent stream derived from this one's key (e.g. one per box, per voxel row).
  HDSSL_HOST_DEVICE Rng substream(std::uint64_t item) const { return Rng(key_, item); }

  /// Next 32 random bits.
  HDSSL_HOST_DEVICE std::uint32_t next_u32() {
    if (used_ == 4) refill();
    return buf_.v[used_++];
  }
  HDSSL_HOST_DEVICE std::uint64_t next_u64() {
    const std::uint64_t lo = next_u32();
    const std::uint64_t hi = next_u32();
    return lo | (hi << 32);
  }

  /// Uniform float in [0, 1) with 24 random bits (never returns 1.0f).
  HDSSL_HOST_DEVICE float uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }
  /// Uniform double in [0, 1) with 53 random bits.
  HDSSL_HOST_DEVICE double uniform_double() {
    return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
  }
  /// Uniform float in [lo, hi).
  HDSSL_HOST_DEVICE float uniform(float lo, float hi) {
    const float r = lo + (hi - lo) * uniform();
    return r < hi ? r : lo;  // rounding can land on hi for wide ranges; keep the interval half-open
  }
  /// True with probability p.
  HDSSL_HOST_DEVICE bool bernoulli(double p) { return uniform_double() < p; }

  /// Unbiased integer in [0, n) (Lemire's multiply-and-reject); n == 0 returns 0.
  HDSSL_HOST_DEVICE std::uint32_t below(std::uint32_t n) {
    if (n == 0) return 0;
    std::uint64_t m = static_cast<std::uint64_t>(next_u32()) * n;
    std::uint32_t low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const std::uint32_t threshold = static_cast<std::uint32_t>(-n) % n;
      while (low < threshold) {
        m = static_cast<std::uint64_t>(next_u32()) * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }
  /// Unbiased integer in [0, n) for 64-bit n (rejection on the top multiple of n).
  HDSSL_HOST_DEVICE std::uint64_t below64(std::uint64_t n) {
    if (n == 0) return 0;
    if (n <= 0xFFFFFFFFull) return below(static_cast<std::uint32_t>(n));
    const std::uint64_t limit = ~0ull - (~0ull % n);  // values >= limit would bias the modulo
    std::uint64_t x = next_u64();
    while (x >= limit) x = next_u64();
    return x % n;
  }
  /// Integer uniform in [lo, hi) ; hi <= lo returns lo.
  HDSSL_HOST_DEVICE std::int64_t range(std::int64_t lo, std::int64_t hi) {
    if (hi <= lo) return lo;
    return lo + static_cast<std::int64_t>(below64(static_cast<std::uint64_t>(hi - lo)));
  }

  /// Standard normal (Box-Muller; both values of a pair are used).
  HDSSL_HOST_DEVICE double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform_double();  // (0, 1]: log stays finite
    const double u2 = uniform_double();
    const double r = ::sqrt(-2.0 * ::log(u1));
    const double t = 6.283185307179586476925 * u2;
    spare_ = r * ::sin(t);
    has_spare_ = true;
    return r * ::cos(t);
  }

  /// Fisher-Yates shuffle of data[0..n) (same result on host and device for the same stream).
  template <typename T>
  HDSSL_HOST_DEVICE void shuffle(T* data, std::uint32_t n) {
    for (std::uint32_t i = n; i > 1; --i) {
      const std::uint32_t j = below(i);
      const T tmp = data[i - 1];
      data[i - 1] = data[j];
      data[j] = tmp;
    }
  }

  /// Skips `n` 128-bit blocks (4 x 32-bit draws each) from the current block boundary.
  HDSSL_HOST_DEVICE void skip_blocks(std::uint64_t n) {
    block_ += n;
    used_ = 4;
    has_spare_ = false;
  }

  // UniformRandomBitGenerator interface, for host code that wants <random> distributions.
  // (hdssl itself never does: libstdc++/libc++ distributions differ, which would break portability.)
  using result_type = std::uint32_t;
  HDSSL_HOST_DEVICE static constexpr result_type min() { return 0; }
  HDSSL_HOST_DEVICE static constexpr result_type max() { return 0xFFFFFFFFu; }
  HDSSL_HOST_DEVICE result_type operator()() { return next_u32(); }

 private:
  HDSSL_HOST_DEVICE void refill() {
    const Philox4x32 ctr{{static_cast<std::uint32_t>(block_), static_cast<std::uint32_t>(block_ >> 32),
                          static_cast<std::uint32_t>(item_), static_cast<std::uint32_t>(item_ >> 32)}};
    buf_ = philox4x32_10(ctr, static_cast<std::uint32_t>(key_), static_cast<std::uint32_t>(key_ >> 32));
    ++block_;
    used_ = 0;
  }

  std::uint64_t key_;
  std::uint64_t item_;
  std::uint64_t block_;
  Philox4x32 buf_{{0, 0, 0, 0}};
  std::uint32_t used_ = 4;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace hdssl
