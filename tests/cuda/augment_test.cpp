// The augmentations on a GPU (the CUDA kernels of ops/cuda/augment.cuh and the shuffle kernels, through the
// policies' batched paths) against the one-view CPU path with the same streams: every policy and both presets
// at the paper's batch (10 pairs of 128x128x32). Bit for bit, except Gaussian noise, whose double log, sin
// and cos differ between CUDA and the host's libm by an ulp or two: there each voxel within 2 float ulps of
// its input and noise (and within 1e-6 after the vox2vec window).
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <functional>
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

/// Per-voxel tolerance from the input batch and the CPU's result; null = equal bits demanded.
using Tolerance = std::function<torch::Tensor(const torch::Tensor& input, const torch::Tensor& expected)>;

/// Gaussian noise alone: the noise draw may differ by an ulp of the noise, the sum by an ulp of itself, so
/// 2 float ulps of |input| + |noise| (a result near 0 can come from a large input and a large noise).
torch::Tensor noise_ulps(const torch::Tensor& input, const torch::Tensor& expected) {
  return (input.abs() + (expected - input).abs() + 1.0) * (2 * std::numeric_limits<float>::epsilon());
}
/// The vox2vec preset: an ulp of a value in HU before the window (|value| < 2048: 1.2e-4), scaled by
/// 1 / (hi - lo) <= 1/1300, is below 1e-7 after it; 1e-6 allows that and the window's own rounding and is far
/// below what a wrong draw would change (sigma / (hi - lo), about 1e-2).
torch::Tensor windowed_noise(const torch::Tensor& input, const torch::Tensor&) { return torch::full_like(input, 1e-6); }

/// The set on the CPU (one view at a time) and on the GPU (both halves of the pair batch, as the trainer
/// calls it).
template <typename Set>
void check_cuda(const Set& set, bool hu, uint64_t seed, const Tolerance& tolerance, const std::string& what) {
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
  if (!tolerance) {
    CHECK_MESSAGE(differing == 0, what << ": " << differing << " of " << got.numel() << " voxels differ");
    return;
  }
  const int64_t outside = (got - expected).abs().gt(tolerance(v, expected)).sum().item<int64_t>();
  MESSAGE(what << ": " << differing << " of " << got.numel() << " voxels differ from the CPU's in their last bits, max "
               << (got - expected).abs().max().item<double>());
  CHECK_MESSAGE(outside == 0, what << ": " << outside << " voxels differ by more than the tolerance");
}

}  // namespace

TEST_CASE("CUDA augmentations equal the CPU ones, policy by policy" * doctest::skip(kNoGpu)) {
  check_cuda(AugmentationSet<LocalPixelShuffle>(), false, 1, nullptr, "local_pixel_shuffle");
  Bezier::Options bezier;
  bezier.invert_p = 0.5;
  check_cuda(AugmentationSet<Bezier>({bezier}, 2), false, 2, nullptr, "bezier");
  check_cuda(AugmentationSet<Inpaint>(), false, 3, nullptr, "inpaint");
  Outpaint::Options outpaint;
  outpaint.p = 0.7;
  check_cuda(AugmentationSet<Outpaint>({outpaint}, 4), false, 4, nullptr, "outpaint");
  for (const double sharpen_p : {0.0, 1.0}) {
    AxialFilter::Options filter;
    filter.p = 0.7;
    filter.sharpen_p = sharpen_p;
    check_cuda(AugmentationSet<AxialFilter>({filter}, 5), true, 5, nullptr, sharpen_p > 0 ? "axial sharpening" : "axial blur");
  }
  check_cuda(AugmentationSet<GaussianNoise>(), true, 6, noise_ulps, "gaussian_noise");
  check_cuda(AugmentationSet<RandomWindow>(), true, 7, nullptr, "random_window");
}

TEST_CASE("CUDA augmentations equal the CPU ones: the hdssl and vox2vec presets" * doctest::skip(kNoGpu)) {
  check_cuda(HdsslAugmentations(hdssl_options(), 31), false, 8, nullptr, "hdssl preset");
  check_cuda(Vox2vecAugmentations(vox2vec_options(), 32), true, 9, windowed_noise, "vox2vec preset");
}
