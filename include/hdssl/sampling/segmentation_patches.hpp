#pragma once
// Training patches for the downstream setups (method.md 7): each batch comes from one random training
// volume; half of its patches (rounded down) are centred on a random foreground voxel of one random class
// present in that volume, the others start uniformly at random. No augmentation. Batch b is a function of
// (seed, b) alone (Philox, Purpose::segmentation), so a resumed run sees the batches the uninterrupted one saw.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"

namespace hdssl::sampling {

/// One labelled training volume, preprocessed: image (X, Y, Z) float in [0, 1] and the class-index map
/// (X, Y, Z) uint8/int16 (0 background, c + 1 class c), plus the flat indices of every class's voxels.
struct LabelledVolume {
  torch::Tensor image;
  torch::Tensor classes;
  std::vector<torch::Tensor> class_voxels;  ///< per class: int64 flat indices into (X, Y, Z); may be empty
  std::string source;

  /// Builds the per-class voxel lists from `classes` (K classes).
  static LabelledVolume make(torch::Tensor image, torch::Tensor classes, int64_t num_classes, std::string source) {
    LabelledVolume v{std::move(image), std::move(classes), {}, std::move(source)};
    const auto flat = v.classes.reshape({-1}).to(torch::kLong);
    for (int64_t k = 0; k < num_classes; ++k) v.class_voxels.push_back(torch::nonzero(flat == k + 1).reshape({-1}));
    return v;
  }
};

struct SegmentationBatch {
  torch::Tensor images;   ///< (B, 1, px, py, pz) float
  torch::Tensor targets;  ///< (B, K, px, py, pz) float 0/1
  int64_t volume = 0;     ///< index of the volume it came from
};

struct SegmentationPatchOptions {
  std::array<int64_t, 3> patch{{128, 128, 32}};
  int64_t batch = 8;
  double foreground_fraction = 0.5;  ///< share of patches centred on a foreground voxel
};

class SegmentationPatchSampler {
 public:
  SegmentationPatchSampler(SegmentationPatchOptions options, uint64_t seed) : o_(options), seed_(seed) {
    if (o_.batch < 1) throw ConfigError("segmentation patches: batch must be >= 1");
    if (!(o_.foreground_fraction >= 0 && o_.foreground_fraction <= 1))
      throw ConfigError("segmentation patches: foreground_fraction must lie in [0, 1]");
  }

  const SegmentationPatchOptions& options() const { return o_; }

  /// Batch b from `volumes` (each at least patch-sized, as the preprocessing pads them), K = num_classes.
  SegmentationBatch sample(const std::vector<LabelledVolume>& volumes, int64_t num_classes, uint64_t b) const {
    if (volumes.empty()) throw DataError("segmentation patches: no training volumes");
    Rng rng = Rng::for_stream(seed_, b, 0, Purpose::segmentation);
    SegmentationBatch out;
    out.volume = static_cast<int64_t>(rng.below(static_cast<uint32_t>(volumes.size())));
    const LabelledVolume& v = volumes[static_cast<size_t>(out.volume)];
    const std::array<int64_t, 3> size{{v.image.size(0), v.image.size(1), v.image.size(2)}};
    for (int a = 0; a < 3; ++a)
      if (size[a] < o_.patch[a])
        throw DataError("segmentation patches: volume '" + v.source + "' is smaller than the patch on axis " +
                        std::to_string(a) + " (preprocessing pads to patch_size; was it changed?)");
    std::vector<int64_t> present;
    for (int64_t k = 0; k < num_classes; ++k)
      if (v.class_voxels[static_cast<size_t>(k)].numel() > 0) present.push_back(k);
    // floor(fraction x batch), with a margin so that 0.29 x 100 (28.999...) counts 29 patches.
    const int64_t n_fg = present.empty() ? 0 : static_cast<int64_t>(std::floor(o_.foreground_fraction * o_.batch + 1e-9));
    std::vector<torch::Tensor> imgs, cls;
    for (int64_t p = 0; p < o_.batch; ++p) {
      std::array<int64_t, 3> start{};
      if (p < n_fg) {
        const int64_t k = present[rng.below(static_cast<uint32_t>(present.size()))];
        const auto& list = v.class_voxels[static_cast<size_t>(k)];
        const int64_t flat = list.data_ptr<int64_t>()[below(rng, list.numel())];
        const std::array<int64_t, 3> c{{flat / (size[1] * size[2]), (flat / size[2]) % size[1], flat % size[2]}};
        for (int a = 0; a < 3; ++a) start[a] = std::clamp<int64_t>(c[a] - o_.patch[a] / 2, 0, size[a] - o_.patch[a]);
      } else {
        for (int a = 0; a < 3; ++a) start[a] = below(rng, size[a] - o_.patch[a] + 1);
      }
      auto crop = [&](const torch::Tensor& t) {
        return t.slice(0, start[0], start[0] + o_.patch[0])
            .slice(1, start[1], start[1] + o_.patch[1])
            .slice(2, start[2], start[2] + o_.patch[2]);
      };
      imgs.push_back(crop(v.image).unsqueeze(0));
      cls.push_back(crop(v.classes).to(torch::kLong));
    }
    out.images = torch::stack(imgs).to(torch::kFloat32).contiguous();
    const auto c = torch::stack(cls);  // (B, px, py, pz)
    out.targets = torch::empty({o_.batch, num_classes, o_.patch[0], o_.patch[1], o_.patch[2]}, torch::kFloat32);
    for (int64_t k = 0; k < num_classes; ++k) out.targets.select(1, k).copy_(c == k + 1);
    return out;
  }

 private:
  static int64_t below(Rng& rng, int64_t n) { return n <= 1 ? 0 : static_cast<int64_t>(rng.below64(static_cast<uint64_t>(n))); }
  SegmentationPatchOptions o_;
  uint64_t seed_;
};

}  // namespace hdssl::sampling
