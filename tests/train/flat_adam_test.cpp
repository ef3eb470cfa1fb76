// The trainer's multi-tensor pieces against LibTorch: FlatTensors keeps values, layouts and modules working;
// FlatAdam follows clip_grad_norm_ + torch::optim::Adam step for step, skips a non-finite step without a
// trace, and keeps LibTorch's checkpoint format in both directions.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "hdssl/core/error.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/train/flat_adam.hpp"
#include "hdssl/train/flat_tensors.hpp"
#include "hdssl/train/step_readback.hpp"

namespace {

using hdssl::train::FlatAdam;
using hdssl::train::FlatTensors;

torch::nn::Sequential small_net(bool channels_last) {
  torch::manual_seed(3);
  // No bias before the BatchNorm: its gradient would be rounding noise, which Adam's normalisation turns
  // into steps of a full learning rate in either direction, so no two implementations could agree on it.
  torch::nn::Sequential net(torch::nn::Conv3d(torch::nn::Conv3dOptions(1, 4, 3).padding(1).bias(false)), torch::nn::BatchNorm3d(4),
                            torch::nn::ReLU(), torch::nn::Conv3d(torch::nn::Conv3dOptions(4, 3, 1)));
  if (channels_last) hdssl::nn::to_channels_last(*net);
  return net;
}

torch::Tensor batch_input(int step) {
  torch::manual_seed(100 + step);
  return torch::randn({2, 1, 6, 5, 4});
}

/// Forward + backward of a simple loss; `poison` makes the gradient non-finite.
void backward(torch::nn::Sequential& net, int step, double poison = 1.0) {
  net->train();
  const auto y = net->forward(batch_input(step));
  ((y - 0.3).pow(2).mean() * poison).backward();
}

/// The largest difference between two parameter lists in units of float32 spacing at each value.
double max_ulps(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto d = (a[i].detach().to(torch::kFloat64) - b[i].detach().to(torch::kFloat64)).abs();
    const auto ulp = b[i].detach().abs().to(torch::kFloat64).clamp_min(1e-30) * std::ldexp(1.0, -23);
    worst = std::max(worst, (d / ulp).max().item<double>());
  }
  return worst;
}

/// The largest absolute difference between two parameter lists.
double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

std::vector<torch::Tensor> copies(const std::vector<torch::Tensor>& v) {
  std::vector<torch::Tensor> c;
  for (const auto& t : v) c.push_back(t.detach().clone());
  return c;
}

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("FlatTensors: values, shapes and layouts kept, every tensor a view of one buffer per dtype") {
  auto net = small_net(/*channels_last=*/true);
  const auto input = batch_input(0);
  net->eval();
  const auto before = net->forward(input);
  std::vector<torch::Tensor> tensors = net->parameters();
  for (const auto& b : net->buffers()) tensors.push_back(b);  // float statistics and an int64 counter
  const auto transposed = torch::arange(12, torch::kFloat32).view({3, 4}).t();  // not dense in its own order
  tensors.push_back(transposed);
  const auto values = copies(tensors);
  std::vector<std::vector<int64_t>> strides;
  for (const auto& t : tensors) strides.push_back(t.strides().vec());

  FlatTensors flat(tensors);
  CHECK(flat.groups() == 2);
  CHECK(flat.intact());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(torch::equal(tensors[i], values[i]));
    CHECK(tensors[i].storage_offset() % FlatTensors::kAlignElements == 0);
    if (i + 1 < tensors.size()) CHECK(tensors[i].strides().vec() == strides[i]);  // channels-last kept
  }
  CHECK(net->parameters()[0].is_alias_of(flat.buffer(0)));  // the module's own tensors were re-seated
  CHECK(transposed.is_alias_of(flat.buffer(0)));
  CHECK(torch::equal(net->forward(input), before));

  // One kernel reaches every tensor: scaling the buffer scales the module's weights.
  {
    torch::NoGradGuard no_grad;
    const auto snap = flat.snapshot();
    flat.buffer(0).mul_(2);
    CHECK(torch::equal(net->parameters()[0], values[0] * 2));
    flat.restore_unless(torch::tensor(true), snap);  // keep: stays doubled
    CHECK(torch::equal(net->parameters()[0], values[0] * 2));
    flat.restore_unless(torch::tensor(false), snap);  // restore: back to the snapshot
    CHECK(torch::equal(net->parameters()[0], values[0]));
  }
  net->to(torch::kFloat64);  // replaces storage: no longer intact
  CHECK_FALSE(flat.intact());
}

TEST_CASE("FlatAdam follows clip_grad_norm_ + torch::optim::Adam, and skips a non-finite step without a trace") {
  for (const bool channels_last : {false, true}) {
    CAPTURE(channels_last);
    auto ref = small_net(channels_last), net = small_net(channels_last);
    const auto opts = torch::optim::AdamOptions(1e-2).betas({0.9, 0.999}).eps(1e-8);
    torch::optim::Adam ref_adam(ref->parameters(), opts), adam(net->parameters(), opts);
    FlatAdam flat(adam);

    SUBCASE("clip not binding: the same parameters, to the last bits of fused multiply-adds") {
      double worst = 0;
      for (int s = 0; s < 6; ++s) {
        ref_adam.zero_grad();
        backward(ref, s);
        const double ref_norm = torch::nn::utils::clip_grad_norm_(ref->parameters(), INFINITY);
        ref_adam.step();
        flat.zero_grad();
        backward(net, s);
        const double norm = flat.step(INFINITY).item<double>();
        CHECK(norm == doctest::Approx(ref_norm).epsilon(1e-6));
        CHECK(flat.applied().item<bool>());
        worst = std::max(worst, max_ulps(net->parameters(), ref->parameters()));
      }
      MESSAGE("largest parameter difference over 6 steps: " << worst << " float32 ulps");
      CHECK(worst <= 4);
      CHECK(flat.steps() == 6);
      // The steps did move the parameters (a comparison of unchanged tensors would prove nothing).
      CHECK(max_ulps(net->parameters(), small_net(channels_last)->parameters()) > 1e4);
    }

    SUBCASE("clip binding: gradients scaled by max_norm / (norm + 1e-6)") {
      for (int s = 0; s < 4; ++s) {
        ref_adam.zero_grad();
        backward(ref, s);
        const double ref_norm = torch::nn::utils::clip_grad_norm_(ref->parameters(), 0.05);
        REQUIRE(ref_norm > 0.05);
        ref_adam.step();
        flat.zero_grad();
        backward(net, s);
        CHECK(flat.step(0.05).item<double>() == doctest::Approx(ref_norm).epsilon(1e-6));
      }
      const double d = max_difference(net->parameters(), ref->parameters());
      MESSAGE("clip binding: largest parameter difference " << d << " (lr 1e-2)");
      CHECK(d < 1e-6);
    }

    SUBCASE("a NaN or Inf gradient: parameters, moments and step count unchanged; Adam goes on as if it never happened") {
      for (int s = 0; s < 2; ++s) {
        ref_adam.zero_grad(), backward(ref, s), torch::nn::utils::clip_grad_norm_(ref->parameters(), 1.0), ref_adam.step();
        flat.zero_grad(), backward(net, s), flat.step(1.0);
      }
      const auto params = copies(net->parameters());
      for (const double poison : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
        flat.zero_grad();
        backward(net, 9, poison);
        const double norm = flat.step(1.0).item<double>();
        CHECK_FALSE(std::isfinite(norm));
        CHECK_FALSE(flat.applied().item<bool>());
        CHECK(all_equal(net->parameters(), params));
        CHECK(flat.steps() == 2);
      }
      // The next good step equals LibTorch's third (its moments and bias corrections were untouched).
      ref_adam.zero_grad(), backward(ref, 2), torch::nn::utils::clip_grad_norm_(ref->parameters(), 1.0), ref_adam.step();
      flat.zero_grad(), backward(net, 2), flat.step(1.0);
      CHECK(flat.applied().item<bool>());
      const double d = max_difference(net->parameters(), ref->parameters());
      MESSAGE("after two skipped steps: largest difference from LibTorch's " << d);
      CHECK(d < 1e-6);
      CHECK_FALSE(all_equal(net->parameters(), params));
    }
  }
}

TEST_CASE("FlatAdam state in LibTorch's format: written for a save, taken over on load, in both directions") {
  auto net = small_net(false);
  const auto opts = torch::optim::AdamOptions(1e-2);
  torch::optim::Adam adam(net->parameters(), opts);
  FlatAdam flat(adam);
  for (int s = 0; s < 3; ++s) flat.zero_grad(), backward(net, s), flat.step(1.0);

  std::stringstream model_bytes, optimizer_bytes;
  flat.with_state_in([&] {
    CHECK(adam.state().size() == net->parameters().size());
    torch::serialize::OutputArchive m, o;
    net->save(m);
    adam.save(o);
    m.save_to(model_bytes);
    o.save_to(optimizer_bytes);
  });
  CHECK(adam.state().empty());  // the flat buffers hold the state between saves

  // Three ways on from step 3: the original, a FlatAdam resumed from the save, LibTorch's Adam resumed.
  auto load = [&](torch::nn::Sequential& into, torch::optim::Adam& opt) {
    torch::serialize::InputArchive m, o;
    model_bytes.seekg(0), optimizer_bytes.seekg(0);
    m.load_from(model_bytes);
    o.load_from(optimizer_bytes);
    into->load(m);
    opt.load(o);
  };
  auto resumed = small_net(false), torch_resumed = small_net(false);
  torch::optim::Adam resumed_adam(resumed->parameters(), opts), torch_adam(torch_resumed->parameters(), opts);
  load(resumed, resumed_adam);
  load(torch_resumed, torch_adam);
  REQUIRE(torch_adam.state().size() == net->parameters().size());
  FlatAdam resumed_flat(resumed_adam);
  CHECK(resumed_flat.steps() == 3);
  CHECK(resumed_adam.state().empty());
  for (int s = 3; s < 5; ++s) {
    flat.zero_grad(), backward(net, s), flat.step(1.0);
    resumed_flat.zero_grad(), backward(resumed, s), resumed_flat.step(1.0);
    torch_adam.zero_grad(), backward(torch_resumed, s);
    torch::nn::utils::clip_grad_norm_(torch_resumed->parameters(), 1.0);
    torch_adam.step();
  }
  CHECK(all_equal(resumed->parameters(), net->parameters()));  // exact: the same operations on the same state
  const double d = max_difference(torch_resumed->parameters(), net->parameters());
  MESSAGE("LibTorch's Adam resumed from the flat state: largest difference " << d);
  CHECK(d < 1e-6);

  SUBCASE("a state with unequal step counts is refused, naming them") {
    auto other = small_net(false);
    torch::optim::Adam odd(other->parameters(), opts);
    odd.zero_grad(), backward(other, 0), odd.step();
    other->parameters()[0].mutable_grad().zero_();
    for (size_t i = 1; i < other->parameters().size(); ++i) other->parameters()[i].mutable_grad() = torch::Tensor();
    odd.step();  // only parameter 0 has a gradient: it alone reaches step 2
    try {
      FlatAdam bad(odd);
      FAIL("unequal step counts were accepted");
    } catch (const hdssl::IoError& e) {
      CHECK_MESSAGE(std::string(e.what()).find("different step counts (2 and 1)") != std::string::npos, e.what());
    }
  }
  SUBCASE("replacing a parameter's storage afterwards is caught at the next step") {
    net->to(torch::kFloat64);
    net->to(torch::kFloat32);
    CHECK_THROWS_WITH_AS(flat.step(1.0), doctest::Contains("storage was replaced"), std::logic_error);
  }
}

TEST_CASE("FlatAdam::poison_unless_finite: a non-finite loss skips the step, a finite one changes nothing") {
  auto a = small_net(false), b = small_net(false);
  torch::optim::Adam adam_a(a->parameters(), 1e-2), adam_b(b->parameters(), 1e-2);
  FlatAdam fa(adam_a), fb(adam_b);
  fa.zero_grad(), backward(a, 0), fa.step(1.0);
  fb.zero_grad(), backward(b, 0), fb.poison_unless_finite(torch::tensor(2.5, torch::kFloat64)), fb.step(1.0);
  CHECK(all_equal(a->parameters(), b->parameters()));  // adding loss - loss = 0 is exact
  const auto before = copies(b->parameters());
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    fb.zero_grad(), backward(b, 1), fb.poison_unless_finite(torch::tensor(bad)), fb.step(1.0);
    CHECK_FALSE(fb.applied().item<bool>());
    CHECK(all_equal(b->parameters(), before));
  }
  CHECK(fb.steps() == 1);
}

TEST_CASE("FlatTensors and FlatAdam refuse tied tensors and frozen parameters, naming them") {
  const auto w = torch::randn({3});
  CHECK_THROWS_WITH_AS(FlatTensors({w, torch::randn({2}), w}), doctest::Contains("tensor 2 is tensor 0 again"),
                       std::invalid_argument);
  auto net = small_net(false);
  net->parameters()[1].set_requires_grad(false);
  torch::optim::Adam adam(net->parameters(), 1e-2);
  CHECK_THROWS_WITH_AS(FlatAdam{adam}, doctest::Contains("requires_grad"), std::invalid_argument);
}

TEST_CASE("StepReadback: the values of a queued copy, on the CPU at once") {
  hdssl::train::StepReadback r;
  CHECK_FALSE(r.started());
  CHECK_THROWS_AS(r.get(), std::logic_error);
  r.start(torch::tensor({1.5f, -2.0f, 0.25f}));
  CHECK(r.started());
  CHECK(r.get() == std::vector<double>{1.5, -2.0, 0.25});
}
