// Fused pyramid gather: hand-computed values, the indexing oracle hdssl::nn::gather_pyramid (forward and
// autograd backward, duplicates included), and (with a GPU) the CUDA kernels against the CPU oracle.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/ops/gather_pyramid.hpp"
#include "hdssl/ops/torch_compat.hpp"

namespace {

/// Levels (B, C_i, ceil(X / 2^i), ...), as the FPN's ceil-mode pooling makes them.
std::vector<torch::Tensor> make_pyramid(int64_t B, const std::vector<int64_t>& channels, int64_t X, int64_t Y,
                                        int64_t Z, torch::Dtype dtype, bool channels_last, bool grad,
                                        torch::Device device = torch::kCPU) {
  std::vector<torch::Tensor> levels;
  for (size_t i = 0; i < channels.size(); ++i) {
    const int64_t d = int64_t{1} << i;
    torch::Tensor t = torch::randn({B, channels[i], (X + d - 1) / d, (Y + d - 1) / d, (Z + d - 1) / d});
    t = t.to(dtype);
    if (channels_last) t = t.contiguous(torch::MemoryFormat::ChannelsLast3d);
    t = t.to(device).detach().requires_grad_(grad);
    levels.push_back(t);
  }
  return levels;
}

/// N random rows plus `dups` repeats of earlier rows (duplicates must add up in the backward).
torch::Tensor make_index(int64_t N, int64_t B, int64_t X, int64_t Y, int64_t Z, int64_t dups) {
  torch::Tensor idx = torch::stack({torch::randint(0, B, {N}, torch::kLong), torch::randint(0, X, {N}, torch::kLong),
                                    torch::randint(0, Y, {N}, torch::kLong), torch::randint(0, Z, {N}, torch::kLong)},
                                   1);
  if (dups > 0) idx = torch::cat({idx, idx.index({torch::randint(0, N, {dups}, torch::kLong)})}, 0);
  return idx;
}

std::vector<torch::Tensor> detached_copies(const std::vector<torch::Tensor>& levels, torch::Dtype dtype,
                                           torch::Device device) {
  std::vector<torch::Tensor> out;
  for (const auto& l : levels) out.push_back(l.detach().to(device, dtype).requires_grad_(true));
  return out;
}


}  // namespace

TEST_CASE("gather: hand-computed values of a two-level pyramid") {
  // level 0: (1, 2, 4, 4, 4) with value c*64 + x*16 + y*4 + z; level 1: (1, 1, 2, 2, 2) with x*4 + y*2 + z.
  const torch::Tensor l0 = torch::arange(128, torch::kFloat).view({1, 2, 4, 4, 4});
  const torch::Tensor l1 = torch::arange(8, torch::kFloat).view({1, 1, 2, 2, 2});
  const torch::Tensor idx = torch::tensor({0, 3, 1, 2, 0, 0, 3, 1}, torch::kLong).view({2, 4});
  const torch::Tensor out = hdssl::ops::gather_pyramid({l0, l1}, idx);
  REQUIRE((out.sizes() == torch::IntArrayRef({2, 3})));
  // row 0: (3, 1, 2) -> 54, 118; level 1 at (1, 0, 1) -> 5.  row 1: (0, 3, 1) -> 13, 77; (0, 1, 0) -> 2.
  const std::vector<float> want = {54, 118, 5, 13, 77, 2};
  for (int k = 0; k < 6; ++k) CHECK(out.flatten()[k].item<float>() == want[k]);
}

TEST_CASE("gather forward equals the indexing oracle exactly (fp32, fp64, bf16, NCDHW and channels-last)") {
  const std::vector<int64_t> channels = {4, 8, 16, 32, 64};
  const torch::Tensor idx = make_index(300, 3, 24, 20, 12, 50);
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16}) {
    for (bool cl : {false, true}) {
      CAPTURE(cl);
      const auto pyr = make_pyramid(3, channels, 24, 20, 12, dtype, cl, false);
      const torch::Tensor got = hdssl::ops::gather_pyramid(pyr, idx);
      CHECK((got.scalar_type() == dtype));
      CHECK(torch::equal(got, hdssl::nn::gather_pyramid(pyr, idx)));
    }
  }
  // A non-contiguous index (every other row of a bigger one) reads through its strides.
  const auto pyr = make_pyramid(3, channels, 24, 20, 12, torch::kFloat, false, false);
  const torch::Tensor strided = make_index(400, 3, 24, 20, 12, 0).index({torch::indexing::Slice(0, 400, 2)});
  CHECK(torch::equal(hdssl::ops::gather_pyramid(pyr, strided), hdssl::nn::gather_pyramid(pyr, strided)));
}

TEST_CASE("gather backward equals the oracle's autograd, duplicated rows included") {
  const std::vector<int64_t> channels = {4, 8, 16, 32};
  const torch::Tensor idx = make_index(400, 2, 20, 16, 12, 200);
  for (bool cl : {false, true}) {
    CAPTURE(cl);
    const auto a = make_pyramid(2, channels, 20, 16, 12, torch::kFloat, cl, true);
    const auto b = detached_copies(a, torch::kFloat, torch::kCPU);
    const torch::Tensor weights = torch::randn({idx.size(0), 60});
    (hdssl::ops::gather_pyramid(a, idx) * weights).sum().backward();
    (hdssl::nn::gather_pyramid(b, idx) * weights).sum().backward();
    for (size_t i = 0; i < a.size(); ++i) {
      CAPTURE(i);
      REQUIRE(a[i].grad().defined());
      CHECK(a[i].grad().is_contiguous(cl ? torch::MemoryFormat::ChannelsLast3d : torch::MemoryFormat::Contiguous));
      CHECK(torch::allclose(a[i].grad(), b[i].grad(), 1e-5, 1e-5));
    }
  }
  // The raw backward gives each gradient its level's layout (autograd would otherwise copy it into place).
  {
    const auto grads = hdssl::ops::detail::gather_pyramid_backward(
        torch::ones({idx.size(0), 12}), idx, {{2, 4, 20, 16, 12}, {2, 8, 10, 8, 6}}, {true, false}, torch::kFloat);
    CHECK(grads[0].is_contiguous(torch::MemoryFormat::ChannelsLast3d));
    CHECK(!grads[0].is_contiguous());
    CHECK(grads[1].is_contiguous());
    // Every row adds 1 to each channel of its cell: the total is rows x channels.
    CHECK(grads[0].sum().item<double>() == doctest::Approx(double(idx.size(0)) * 4));
    CHECK(grads[1].sum().item<double>() == doctest::Approx(double(idx.size(0)) * 8));
  }
  // bf16: accumulated in float32 and rounded once, so within one bf16 rounding of the float32 sums.
  const auto a = make_pyramid(2, channels, 20, 16, 12, torch::kBFloat16, false, true);
  const auto b = detached_copies(a, torch::kFloat, torch::kCPU);
  const torch::Tensor weights = torch::randn({idx.size(0), 60});
  (hdssl::ops::gather_pyramid(a, idx).to(torch::kFloat) * weights).sum().backward();
  (hdssl::nn::gather_pyramid(b, idx) * weights.to(torch::kBFloat16).to(torch::kFloat)).sum().backward();
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK((a[i].grad().scalar_type() == torch::kBFloat16));
    CHECK(torch::allclose(a[i].grad().to(torch::kFloat), b[i].grad(), 1e-2, 1e-2));
  }
}

TEST_CASE("gather: bad inputs throw DataError naming the problem") {
  const auto pyr = make_pyramid(2, {4, 8}, 8, 8, 8, torch::kFloat, false, false);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(pyr, torch::tensor({0, 8, 0, 0}, torch::kLong).view({1, 4})),
                  hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(pyr, torch::tensor({2, 0, 0, 0}, torch::kLong).view({1, 4})),
                  hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(pyr, torch::zeros({3, 3}, torch::kLong)), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(pyr, torch::zeros({3, 4}, torch::kInt)), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid({pyr[0], pyr[1].to(torch::kDouble)}, torch::zeros({3, 4}, torch::kLong)),
                  hdssl::DataError);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid({pyr[0].to(torch::kInt)}, torch::zeros({3, 4}, torch::kLong)),
                  hdssl::DataError);
  std::vector<torch::Tensor> nine(9, pyr[0]);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(nine, torch::zeros({3, 4}, torch::kLong)), hdssl::DataError);
  CHECK((hdssl::ops::gather_pyramid(pyr, torch::zeros({0, 4}, torch::kLong)).sizes() == torch::IntArrayRef({0, 12})));
}

// Needs a GPU: reported as skipped (doctest, and CTest's cuda_device entry) where there is none.
TEST_CASE("CUDA gather equals the CPU oracle: forward exactly, backward within atomics' rounding" * doctest::skip(!hdssl::ops::compat::cuda_ops_available())) {
  const torch::Device dev(torch::kCUDA);
  // hdssl (32 x 5 levels) and vox2vec (16 x 6 levels) pyramids of small patches.
  for (const auto& channels : {std::vector<int64_t>{32, 64, 128, 256, 512}, std::vector<int64_t>{16, 32, 64, 128, 256, 512}}) {
    const torch::Tensor idx = make_index(2000, 4, 64, 64, 32, 1000);
    int64_t total = 0;
    for (auto c : channels) total += c;
    for (bool cl : {false, true}) {
      CAPTURE(cl);
      CAPTURE(channels.size());
      // fp32
      const auto cpu = make_pyramid(4, channels, 64, 64, 32, torch::kFloat, cl, true);
      const auto gpu = detached_copies(cpu, torch::kFloat, dev);
      std::vector<torch::Tensor> gpu_cl;
      for (auto& g : gpu)
        gpu_cl.push_back(cl ? g.detach().contiguous(torch::MemoryFormat::ChannelsLast3d).requires_grad_(true) : g);
      const torch::Tensor out_gpu = hdssl::ops::gather_pyramid(gpu_cl, idx.to(dev));
      const torch::Tensor out_cpu = hdssl::nn::gather_pyramid(cpu, idx);
      CHECK(torch::equal(out_gpu.cpu(), out_cpu));
      const torch::Tensor weights = torch::randn({idx.size(0), total});
      (out_gpu * weights.to(dev)).sum().backward();
      (out_cpu * weights).sum().backward();
      for (size_t i = 0; i < cpu.size(); ++i) {
        CAPTURE(i);
        CHECK(gpu_cl[i].grad().is_contiguous(cl ? torch::MemoryFormat::ChannelsLast3d : torch::MemoryFormat::Contiguous));
        // Float32 atomics add up to a few hundred terms per coarse cell in any order.
        CHECK(torch::allclose(gpu_cl[i].grad().cpu(), cpu[i].grad(), 1e-4, 1e-4));
      }
      // bf16: forward exact; backward against float32 sums of the same bf16 gradients.
      const auto cpu16 = detached_copies(cpu, torch::kBFloat16, torch::kCPU);
      const auto gpu16 = detached_copies(cpu16, torch::kBFloat16, dev);
      const torch::Tensor o16 = hdssl::ops::gather_pyramid(gpu16, idx.to(dev));
      CHECK(torch::equal(o16.cpu(), hdssl::nn::gather_pyramid(cpu16, idx)));
      const torch::Tensor w16 = weights.to(torch::kBFloat16);
      (o16 * w16.to(dev)).sum().backward();
      const auto ref = detached_copies(cpu16, torch::kFloat, torch::kCPU);
      (hdssl::nn::gather_pyramid(ref, idx) * w16.to(torch::kFloat)).sum().backward();
      for (size_t i = 0; i < cpu.size(); ++i) {
        CAPTURE(i);
        CHECK((gpu16[i].grad().scalar_type() == torch::kBFloat16));
        CHECK(torch::allclose(gpu16[i].grad().cpu().to(torch::kFloat), ref[i].grad(), 1e-2, 1e-2));
      }
    }
  }
  // Out-of-range rows are caught before any kernel runs.
  const auto pyr = make_pyramid(2, {4, 8}, 8, 8, 8, torch::kFloat, false, false, dev);
  CHECK_THROWS_AS(hdssl::ops::gather_pyramid(pyr, torch::tensor({0, 8, 0, 0}, torch::kLong).view({1, 4}).to(dev)),
                  hdssl::DataError);
}
