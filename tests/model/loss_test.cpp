// Losses against values worked out independently: by hand on tiny inputs, and by explicit loops in
// double precision; gradients against central finite differences in double precision.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/loss/infonce.hpp"
#include "hdssl/loss/reconstruction.hpp"
#include "hdssl/loss/segmentation.hpp"

namespace {

const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);

// The formula of method.md section 4 written with scalar loops (no matrix ops, no masking tricks).
double info_nce_loops(const torch::Tensor& a, const torch::Tensor& b, double tau) {
  const int64_t n = a.size(0), d = a.size(1);
  auto A = a.accessor<double, 2>();
  auto B = b.accessor<double, 2>();
  auto dot = [&](auto& X, int64_t i, auto& Y, int64_t j) {
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += X[i][k] * Y[j][k];
    return s / tau;
  };
  double l1 = 0, l2 = 0;
  for (int64_t r = 0; r < n; ++r) {
    double sum1 = 0, sum2 = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j != r) sum1 += std::exp(dot(A, r, A, j));
      sum1 += std::exp(dot(A, r, B, j));
      sum2 += std::exp(dot(A, j, B, r));  // column r of S12
      if (j != r) sum2 += std::exp(dot(B, r, B, j));
    }
    l1 += -dot(A, r, B, r) + std::log(sum1);
    l2 += -dot(A, r, B, r) + std::log(sum2);
  }
  return (l1 / n + l2 / n) / 2;
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// BCE + soft Dice with loops over (batch, class, voxel) of a (B, K, V) tensor.
double segmentation_loops(const torch::Tensor& logits, const torch::Tensor& target) {
  auto L = logits.accessor<double, 3>();
  auto G = target.accessor<double, 3>();
  const int64_t B = logits.size(0), K = logits.size(1), V = logits.size(2);
  double bce = 0, dice = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      double pg = 0, pp = 0, gg = 0;
      for (int64_t v = 0; v < V; ++v) {
        const double p = sigmoid(L[b][k][v]), g = G[b][k][v];
        bce += -(g * std::log(p) + (1 - g) * std::log(1 - p));
        pg += p * g, pp += p * p, gg += g * g;
      }
      dice += 1 - 2 * pg / (pp + gg + 1);
    }
  return bce / double(B * K * V) + dice / double(B * K);
}

// Autograd gradient of f at x vs central differences; returns the largest absolute difference.
double gradient_error(const std::function<torch::Tensor(const torch::Tensor&)>& f, torch::Tensor x) {
  x = x.detach().clone().set_requires_grad(true);
  const auto analytic = torch::autograd::grad({f(x)}, {x})[0];
  const double h = 1e-6;
  double worst = 0;
  auto flat = x.detach().view(-1);
  auto grad = analytic.reshape(-1);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double keep = flat[i].item<double>();
    flat[i] = keep + h;
    const double up = f(x.detach()).item<double>();
    flat[i] = keep - h;
    const double down = f(x.detach()).item<double>();
    flat[i] = keep;
    worst = std::max(worst, std::abs((up - down) / (2 * h) - grad[i].item<double>()));
  }
  return worst;
}

}  // namespace

TEST_CASE("info_nce: hand-computed value on orthonormal pairs") {
  // z1 = z2 = I (2 x 2), tau = 1: S11 and S22 have only -inf diagonals and 0 off-diagonals, S12 = I, so
  // every row gives -1 + log(e^0 + e^1 + e^0): L = log(2 + e) - 1.
  const auto z = torch::eye(2, f64);
  CHECK(hdssl::loss::info_nce(z, z, 1.0).item<double>() == doctest::Approx(std::log(2 + std::exp(1.0)) - 1).epsilon(1e-14));
}

TEST_CASE("info_nce: equals the scalar-loop formula and is asymmetric in the right places") {
  torch::manual_seed(3);
  const auto z1 = torch::nn::functional::normalize(torch::randn({6, 5}, f64),
                                                   torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto z2 = torch::nn::functional::normalize(torch::randn({6, 5}, f64),
                                                   torch::nn::functional::NormalizeFuncOptions().dim(1));
  CHECK(hdssl::loss::info_nce(z1, z2, 0.1).item<double>() == doctest::Approx(info_nce_loops(z1, z2, 0.1)).epsilon(1e-12));
  CHECK(hdssl::loss::info_nce(z1, z2, 0.5).item<double>() == doctest::Approx(info_nce_loops(z1, z2, 0.5)).epsilon(1e-12));
  // Swapping the views leaves the symmetric loss unchanged.
  CHECK(hdssl::loss::info_nce(z2, z1, 0.1).item<double>() == doctest::Approx(info_nce_loops(z1, z2, 0.1)).epsilon(1e-12));
}

TEST_CASE("info_nce: gradients match finite differences (double)") {
  torch::manual_seed(4);
  const auto z2 = torch::randn({5, 4}, f64) * 0.5;
  const auto z1 = torch::randn({5, 4}, f64) * 0.5;
  CHECK(gradient_error([&](const torch::Tensor& x) { return hdssl::loss::info_nce(x, z2, 0.1); }, z1) < 1e-6);
  CHECK(gradient_error([&](const torch::Tensor& x) { return hdssl::loss::info_nce(z1, x, 0.1); }, z2) < 1e-6);
}

TEST_CASE("info_nce: bad input is a typed error") {
  CHECK_THROWS_AS(hdssl::loss::info_nce(torch::zeros({3, 4}), torch::zeros({4, 4})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::loss::info_nce(torch::zeros({1, 4}), torch::zeros({1, 4})), hdssl::DataError);
  CHECK_THROWS_AS(hdssl::loss::info_nce(torch::zeros({3, 4}), torch::zeros({3, 4}), 0.0), hdssl::ConfigError);
}

TEST_CASE("reconstruction_mse: hand-computed mean of the two views") {
  // View 1: (1^2 + 2^2) / 2 = 2.5; view 2: (1 + 1) / 2 = 1; mean 1.75.
  const auto p1 = torch::tensor({1.0, 2.0}, f64), t1 = torch::zeros({2}, f64);
  const auto p2 = torch::zeros({2}, f64), t2 = torch::ones({2}, f64);
  CHECK(hdssl::loss::reconstruction_mse(p1, t1, p2, t2).item<double>() == doctest::Approx(1.75).epsilon(1e-15));
  CHECK_THROWS_AS(hdssl::loss::reconstruction_mse(p1, torch::zeros({3}, f64)), hdssl::DataError);
  CHECK(gradient_error([&](const torch::Tensor& x) { return hdssl::loss::reconstruction_mse(x, t1, p2, t2); },
                       torch::randn({2}, f64)) < 1e-7);
}

TEST_CASE("segmentation loss: hand-computed value") {
  // logits 0 -> p = 1/2 everywhere; g = (1, 0): BCE = log 2; Dice = 2 * 0.5 / (0.5 + 1 + 1) = 0.4.
  const auto logits = torch::zeros({1, 1, 2}, f64);
  const auto target = torch::tensor({1.0, 0.0}, f64).view({1, 1, 2});
  CHECK(hdssl::loss::segmentation_bce(logits, target).item<double>() == doctest::Approx(std::log(2.0)).epsilon(1e-15));
  CHECK(hdssl::loss::soft_dice_loss(logits, target).item<double>() == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(hdssl::loss::segmentation_loss(logits, target).item<double>() == doctest::Approx(std::log(2.0) + 0.6).epsilon(1e-15));
}

TEST_CASE("segmentation loss: equals the loop formula over batch and classes, gradients by finite differences") {
  torch::manual_seed(5);
  const auto logits = torch::randn({2, 3, 7}, f64) * 2;
  const auto target = (torch::rand({2, 3, 7}, f64) > 0.5).to(torch::kFloat64);
  CHECK(hdssl::loss::segmentation_loss(logits, target).item<double>() ==
        doctest::Approx(segmentation_loops(logits, target)).epsilon(1e-12));
  // 5-D volumes flatten the same way.
  CHECK(hdssl::loss::segmentation_loss(logits.view({2, 3, 7, 1, 1}), target.view({2, 3, 7, 1, 1})).item<double>() ==
        doctest::Approx(segmentation_loops(logits, target)).epsilon(1e-12));
  CHECK(gradient_error([&](const torch::Tensor& x) { return hdssl::loss::segmentation_loss(x, target); }, logits) < 1e-6);
  CHECK_THROWS_AS(hdssl::loss::segmentation_loss(logits, target.slice(2, 0, 6)), hdssl::DataError);
}
