// The augmentations on a GPU (the CUDA kernels of ops/cuda/augment.cuh and the shuffle kernels, through the
// policies' batched paths) against the one-view CPU path with the same streams: every policy and both presets
// at the paper's batch (10 pairs of 128x128x32). Bit for bit, except Gaussian noise, whose double log, sin
// and cos differ between CUDA and the host's libm by an ulp or two: there each voxel within 2 float ulps.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "hdssl/augment/presets.hpp"
#include "hdssl/ops/torch_compat.hpp"

using namespace hdssl::augment;

namespace {

const bool kNoGpu = !hdssl::ops::compat::cuda_ops_available();

torch::Tensor batch_of_views(bool hu, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor u = torch::rand({20, 1, 128, 128, 32});
  return hu ? u * 2400.0 - 1200.0 : u;
}

/// The set on the CPU (one view at a time) and on the GPU (both halves of the pair batch, as the trainer
/// calls it); `ulps` = 0 demands equal bits.
template <typename Set>
void check_cuda(const Set& set, bool hu, uint64_t seed, int ulps, const std::string& what) {
  CAPTURE(what);
  const torch::Tensor v = batch_of_views(hu, seed);
  const torch::Tensor a = v.narrow(0, 0, 10).contiguous(), b = v.narrow(0, 10, 10).contiguous();
  torch::Tensor e1, e2, g1, g2;
  set.augment_pair_into(a, b, e1, e2, 17);
  set.augment_pair_into(a.cuda(), b.cuda(), g1, g2, 17);
  REQUIRE(g1.is_cuda());
  const torch::Tensor expected = torch::cat({e1, e2}), got = torch::cat({g1, g2}).cpu();
  CHECK_MESSAGE(!torch::equal(expected, v), what << ": the augmentation left the batch unchanged");
  const int64_t differing = got.ne(expected).sum().item<int64_t>();
  if (ulps == 0) {
    CHECK_MESSAGE(differing == 0, what << ": " << differing << " of " << got.numel() << " voxels differ");
    return;
  }
  const torch::Tensor tolerance = expected.abs().clamp_min(1.0f) * (ulps * std::numeric_limits<float>::epsilon());
  const int64_t outside = (got - expected).abs().gt(tolerance).sum().item<int64_t>();
  MESSAGE(what << ": " << differing << " of " << got.numel() << " voxels differ from the CPU's in their last bits");
  CHECK_MESSAGE(outside == 0, what << ": " << outside << " voxels differ by more than " << ulps << " ulps");
}

}  // namespace

TEST_CASE("CUDA augmentations equal the CPU ones, policy by policy" * doctest::skip(kNoGpu)) {
  check_cuda(AugmentationSet<LocalPixelShuffle>(), false, 1, 0, "local_pixel_shuffle");
  Bezier::Options bezier;
  bezier.invert_p = 0.5;
  check_cuda(AugmentationSet<Bezier>({bezier}, 2), false, 2, 0, "bezier");
  check_cuda(AugmentationSet<Inpaint>(), false, 3, 0, "inpaint");
  Outpaint::Options outpaint;
  outpaint.p = 0.7;
  check_cuda(AugmentationSet<Outpaint>({outpaint}, 4), false, 4, 0, "outpaint");
  for (const double sharpen_p : {0.0, 1.0}) {
    AxialFilter::Options filter;
    filter.p = 0.7;
    filter.sharpen_p = sharpen_p;
    check_cuda(AugmentationSet<AxialFilter>({filter}, 5), true, 5, 0, sharpen_p > 0 ? "axial sharpening" : "axial blur");
  }
  check_cuda(AugmentationSet<GaussianNoise>(), true, 6, 2, "gaussian_noise");
  check_cuda(AugmentationSet<RandomWindow>(), true, 7, 0, "random_window");
}

TEST_CASE("CUDA augmentations equal the CPU ones: the hdssl and vox2vec presets" * doctest::skip(kNoGpu)) {
  check_cuda(HdsslAugmentations(hdssl_options(), 31), false, 8, 0, "hdssl preset");
  // The window clips to [0, 1] after the noise: an ulp before it stays within an ulp of 1 after it.
  check_cuda(Vox2vecAugmentations(vox2vec_options(), 32), true, 9, 2, "vox2vec preset");
}
