// The batched augmentation path (apply_batch: each view's draws on the host, then the voxel functors of
// ops/augment_functors.hpp over the whole batch: the path CUDA views take) run on the CPU against the
// one-view CPU path of every policy and of both presets, bit for bit. tests/cuda runs the same comparison
// with the batch on a GPU.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "hdssl/augment/presets.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/ops/augment_batch.hpp"
#include "hdssl/ops/augment_functors.hpp"

using namespace hdssl::augment;

namespace {

torch::Tensor unit_views(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  return torch::rand(shape);
}
torch::Tensor hu_views(std::vector<int64_t> shape, uint64_t seed) { return unit_views(shape, seed) * 2400.0 - 1200.0; }

/// The set's one-view CPU path (augment_into) against its batched path on a copy, same streams.
template <typename Set>
void check_batched(const Set& set, const torch::Tensor& views, uint64_t batch, uint64_t offset, const std::string& what) {
  CAPTURE(what);
  const torch::Tensor expected = set(views, batch, offset);
  torch::Tensor got = views.clone();
  set.apply_batched_(got, batch, offset);
  const int64_t differing = got.ne(expected).sum().template item<int64_t>();
  CHECK_MESSAGE(differing == 0, what << ": " << differing << " of " << got.numel() << " voxels differ");
  // The comparison means something only if the augmentation changed the batch.
  CHECK_MESSAGE(!torch::equal(expected, views), what << ": the augmentation left the batch unchanged");
}

/// Two shapes: a channel axis and an even plane; no channel axis and an odd plane (the last noise pair
/// of every slab is half used).
template <typename Set>
void check_policy(const Set& set, bool hu, const std::string& what) {
  const auto make = hu ? hu_views : unit_views;
  check_batched(set, make({6, 1, 40, 36, 12}, 1), 3, 5, what + " [6, 1, 40, 36, 12]");
  check_batched(set, make({5, 17, 9, 7}, 2), 11, 0, what + " [5, 17, 9, 7]");
}

}  // namespace

TEST_CASE("uniform_at reads draw o of a stream without the draws before it") {
  for (const uint64_t item : {0ull, 1ull, 12345ull}) {
    hdssl::Rng r(0xC0FFEEull, item);
    for (uint64_t o = 0; o < 41; ++o) CHECK(hdssl::ops::uniform_at(0xC0FFEEull, item, o) == r.uniform());
  }
}

TEST_CASE("batched path on the CPU equals the one-view path, policy by policy") {
  {
    LocalPixelShuffle::Options o;
    o.p = 0.6;
    o.blocks = 300;
    o.divisor = 5;  // blocks of several voxels on the small test shapes too
    check_policy(AugmentationSet<LocalPixelShuffle>({o}, 7), false, "local_pixel_shuffle");
  }
  for (const int64_t samples : {int64_t{1024}, int64_t{100000}}) {
    Bezier::Options o;
    o.p = 0.7;
    o.invert_p = 0.5;
    o.samples = samples;
    check_policy(AugmentationSet<Bezier>({o}, 8), false, "bezier, " + std::to_string(samples) + " samples");
  }
  {
    Inpaint::Options o;  // the paper's: always, up to 30 boxes
    check_policy(AugmentationSet<Inpaint>({o}, 9), false, "inpaint");
    o.p = 0.5;
    o.max_boxes = 3;
    check_policy(AugmentationSet<Inpaint>({o}, 10), false, "inpaint, p 0.5, 3 boxes");
  }
  {
    Outpaint::Options o;
    o.p = 0.7;
    check_policy(AugmentationSet<Outpaint>({o}, 11), false, "outpaint");
  }
  for (const double sharpen_p : {0.0, 1.0}) {
    AxialFilter::Options o;
    o.p = 0.7;
    o.sharpen_p = sharpen_p;
    check_policy(AugmentationSet<AxialFilter>({o}, 12), true, sharpen_p > 0 ? "axial sharpening" : "axial blur");
  }
  {
    GaussianNoise::Options o;
    o.p = 0.6;
    check_policy(AugmentationSet<GaussianNoise>({o}, 13), true, "gaussian_noise");
  }
  {
    RandomWindow::Options o;
    o.p = 0.5;
    check_policy(AugmentationSet<RandomWindow>({o}, 14), true, "random_window");
  }
}

TEST_CASE("batched path on the CPU equals the one-view path: the hdssl and vox2vec presets at 64x64x32") {
  const HdsslAugmentations hdssl_set(hdssl_options(), 21);
  check_batched(hdssl_set, unit_views({4, 1, 64, 64, 32}, 3), 2, 0, "hdssl preset");
  auto with_outpaint = hdssl_options();
  std::get<3>(with_outpaint).p = 0.5;
  check_batched(HdsslAugmentations(with_outpaint, 22), unit_views({4, 1, 64, 64, 32}, 4), 5, 4, "hdssl + outpaint");
  const Vox2vecAugmentations vox2vec_set(vox2vec_options(), 23);
  check_batched(vox2vec_set, hu_views({4, 1, 64, 64, 32}, 5), 7, 0, "vox2vec preset");
}

TEST_CASE("the streams are those of the one-view path: the test batches draw both outcomes of every choice") {
  // Without this, a policy whose choice never fires in the batches above would be compared vacuously.
  int blur = 0, bezier_off = 0, bezier_on = 0;
  AxialFilter::Options fo;
  fo.p = 0.7;
  fo.sharpen_p = 0.5;
  Bezier::Options bo;
  bo.p = 0.7;
  for (uint64_t v = 0; v < 6; ++v) {
    hdssl::Rng f = view_stream<AxialFilter>(12, 3, 5 + v);
    const auto d = AxialFilter::draw(fo, f);
    blur += d.on;
    hdssl::Rng b = view_stream<Bezier>(8, 3, 5 + v);
    double r[4];
    bool invert = false;
    (Bezier::draw(bo, b, r, invert) ? bezier_on : bezier_off)++;
  }
  CHECK(blur > 0);
  CHECK(blur < 6);
  CHECK(bezier_on > 0);
  CHECK(bezier_off > 0);
}

TEST_CASE("batched path: bad views are DataErrors naming the policy and the problem") {
  torch::Tensor d = torch::rand({2, 1, 8, 8, 4}, torch::kDouble);
  CHECK_THROWS_WITH_AS(Bezier::apply_batch(d, Bezier::Options{}, 0, 0, 0), doctest::Contains("bezier: views must be float32"),
                       hdssl::DataError);
  torch::Tensor strided = torch::rand({2, 8, 8, 8}).transpose(1, 3);
  CHECK_THROWS_WITH_AS(RandomWindow::apply_batch(strided, RandomWindow::Options{}, 0, 0, 0),
                       doctest::Contains("random_window: views must be contiguous"), hdssl::DataError);
  torch::Tensor two_channels = torch::rand({2, 2, 8, 8, 4});
  CHECK_THROWS_WITH_AS(Inpaint::apply_batch(two_channels, Inpaint::Options{}, 0, 0, 0),
                       doctest::Contains("inpaint: views must be [V, X, Y, Z] or [V, 1, X, Y, Z]"), hdssl::DataError);
  torch::Tensor v = torch::rand({3, 8, 8, 4});
  CHECK_THROWS_WITH_AS(hdssl::ops::window_batch_(v, std::vector<hdssl::ops::WindowDraw>(2)),
                       doctest::Contains("2 parameter sets for 3 views"), hdssl::DataError);
  std::vector<hdssl::ops::AxialFilterDraw> draws(3);
  draws[1].mode = 1;
  draws[1].first_radius = 4;  // 9 weights from an array of 3
  CHECK_THROWS_WITH_AS(hdssl::ops::axial_filter_batch_(v, draws, std::vector<float>(3, 0.25f)),
                       doctest::Contains("weights lie outside"), hdssl::DataError);
}
