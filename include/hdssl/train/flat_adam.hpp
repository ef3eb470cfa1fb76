#pragma once
// Global-norm clip and Adam over the parameters as one flat buffer, decided on the device.
//
// LibTorch's clip_grad_norm_ + torch::optim::Adam launch a few kernels per parameter tensor and read the
// norm back to the host every step; the trainer then needed that read to decide whether to skip a
// non-finite step. Here the parameters, their gradients and both Adam moments are each one buffer
// (train/flat_tensors.hpp), so a step is a dozen kernels over the buffers (and some twenty on 0-dim
// scalars) whatever the model, and the skip is a mask:
//
//   norm  = ||g||                           (one reduction over the gradient buffer)
//   g    *= min(1, max_norm / (norm + 1e-6))   (torch's clip_grad_norm_ coefficient)
//   ok    = isfinite(norm)                  (a NaN/Inf gradient, or a non-finite loss: see below)
//   where ok: t += 1, m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)
//   elsewhere: p, m, v and t unchanged (the gradient is zeroed and the step size is 0)
//
// The arithmetic is torch::optim::Adam's (1.13/2.x, no weight decay, no amsgrad) operation for operation,
// so on the CPU the parameters equal LibTorch's clip + Adam bit for bit while the clip does not bind
// (tests/train/flat_adam_test.cpp); when it binds the norm differs in its last bits (one reduction over the
// buffer instead of a norm of per-tensor norms).
//
// The Adam object it is built from stays the carrier of the options and, for checkpoints, of the state:
// `with_state_in` writes the moments and step count into it in LibTorch's format for the moment of a save,
// and the constructor takes over whatever state it holds (a resumed run's), so checkpoints stay readable
// by torch::optim::Adam and the other way round. Every parameter is updated every step (a parameter that
// received no gradient gets a zero one): meant for pre-training, where every parameter is in the graph.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/train/flat_tensors.hpp"

namespace hdssl::train {

class FlatAdam {
 public:
  /// Takes over `adam`'s parameters (one group, float32, weight_decay 0, no amsgrad) and state. Build it
  /// after everything that replaces parameter storage (to(device), channels-last, loading a checkpoint).
  explicit FlatAdam(torch::optim::Adam& adam) : adam_(adam) {
    if (adam.param_groups().size() != 1) throw std::invalid_argument("FlatAdam: one parameter group expected");
    const auto& o = options();
    if (o.weight_decay() != 0 || o.amsgrad())
      throw std::invalid_argument("FlatAdam: weight decay and amsgrad are not implemented");
    const std::vector<torch::Tensor>& params = adam.param_groups()[0].params();
    for (const auto& p : params) {
      if (p.scalar_type() != torch::kFloat32) throw std::invalid_argument("FlatAdam: float32 parameters expected");
      // torch's Adam leaves a frozen parameter alone; here it would still move with its momentum.
      if (!p.requires_grad()) throw std::invalid_argument("FlatAdam: every parameter must be trained (requires_grad)");
    }
    torch::NoGradGuard no_grad;
    params_ = FlatTensors(params);
    std::tie(grad_, grads_) = params_.twin();
    std::tie(exp_avg_, exp_avgs_) = params_.twin();
    std::tie(exp_avg_sq_, exp_avg_sqs_) = params_.twin();
    denom_ = torch::empty_like(grad_);
    for (size_t i = 0; i < grads_.size(); ++i) params_.tensors()[i].mutable_grad() = grads_[i];
    const auto device = grad_.device();
    steps_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    applied_ = torch::ones({}, torch::TensorOptions().dtype(torch::kBool).device(device));
    take_state();
  }

  FlatAdam(const FlatAdam&) = delete;
  FlatAdam& operator=(const FlatAdam&) = delete;

  /// One fill of the gradient buffer (the parameters' .grad stay its views: autograd accumulates into them).
  void zero_grad() { grad_.zero_(); }

  /// Clip to `max_norm` (INFINITY: no clip) and one Adam step, skipped on the device when the gradient norm
  /// is not finite. Returns the norm before clipping, a 0-dim float32 tensor on the parameters' device;
  /// applied() says whether the step was taken. Nothing here waits for the device. The gradients are
  /// spent afterwards (their buffer holds the update): read them before, zero them before the next backward.
  torch::Tensor step(double max_norm) {
    torch::NoGradGuard no_grad;
    check_intact();
    const double lr = options().lr();
    const double beta1 = std::get<0>(options().betas()), beta2 = std::get<1>(options().betas());
    const double eps = options().eps();
    torch::Tensor norm = grad_.norm();
    grad_.mul_((max_norm / (norm + 1e-6)).clamp_max(1.0));
    applied_ = torch::isfinite(norm);
    const torch::Tensor taken = applied_.to(torch::kFloat64);  // 1 or 0
    grad_.masked_fill_(applied_.logical_not(), 0.0);
    steps_.add_(taken);
    const torch::Tensor t = steps_.clamp_min(1.0);  // a skipped first step must not divide by 1 - b^0 = 0
    const torch::Tensor bias_correction1 = 1.0 - torch::pow(beta1, t);
    const torch::Tensor bias_correction2 = 1.0 - torch::pow(beta2, t);
    // Decay factors of 1 where skipped: m and v keep their values (the gradient there is 0).
    exp_avg_.mul_(torch::where(applied_, beta1, 1.0)).add_(grad_, 1 - beta1);
    exp_avg_sq_.mul_(torch::where(applied_, beta2, 1.0)).addcmul_(grad_, grad_, 1 - beta2);
    // The scalars are computed in double, as Adam does on the host, and rounded to float32 once, as Adam's
    // scalar arguments are: a float64 operand would also send every element through a converting loop.
    // No temporaries of the buffers' size (a fresh 200 MB tensor per step costs more than the arithmetic
    // on the CPU, where large blocks go back to the system): the denominator has its own buffer, and the
    // spent gradient's buffer takes -step_size * m.
    torch::sqrt_out(denom_, exp_avg_sq_);
    denom_.div_(bias_correction2.sqrt().to(torch::kFloat32)).add_(eps);
    // Adam's p.addcdiv_(m, denom, -step_size) computes p + (-step_size * m) / denom: the same order here,
    // with the step size a device scalar that is 0 on a skipped step.
    const torch::Tensor neg_step_size = ((-lr / bias_correction1) * taken).to(torch::kFloat32);
    torch::mul_out(grad_, exp_avg_, neg_step_size);
    params_.buffer().addcdiv_(grad_, denom_);
    // The update went through the buffer: each parameter's own version counter is moved on too, so that
    // autograd still catches a graph that saw the old values.
    for (const auto& p : params_.tensors()) p.unsafeGetTensorImpl()->bump_version();
    return norm;
  }

  /// Makes the gradient NaN where `value` (a 0-dim tensor on the parameters' device, e.g. the loss) is not
  /// finite, adding exactly 0 where it is, without reading it: the next step() is then skipped. Call it
  /// before the last backward of a data-parallel step, so that the NaN reaches every rank's average.
  void poison_unless_finite(const torch::Tensor& value) {
    torch::NoGradGuard no_grad;
    const torch::Tensor v = value.detach().to(torch::kFloat32);
    grad_.narrow(0, 0, 1).add_(v - v);
  }

  /// Whether the last step() was taken (0-dim bool on the parameters' device).
  const torch::Tensor& applied() const { return applied_; }
  /// Steps taken so far (a host read).
  int64_t steps() const { return static_cast<int64_t>(steps_.item<double>()); }

  /// Runs `write` (a checkpoint save) with the moments and step count in the Adam object, in LibTorch's
  /// own format, and empties it again afterwards (the flat buffers are the state in between).
  template <class Write>
  void with_state_in(Write&& write) {
    auto& state = adam_.state();
    state.clear();
    const int64_t t = steps();
    if (t > 0) {
      const auto& params = params_.tensors();
      for (size_t i = 0; i < params.size(); ++i) {
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(t);
        s->exp_avg(exp_avgs_[i].clone());
        s->exp_avg_sq(exp_avg_sqs_[i].clone());
        state[state_key(state, params[i])] = std::move(s);
      }
    }
    struct Clear {
      decltype(state)& s;
      ~Clear() { s.clear(); }
    } clear{state};
    write();
  }

 private:
  const torch::optim::AdamOptions& options() const {
    return static_cast<const torch::optim::AdamOptions&>(adam_.param_groups()[0].options());
  }

  // The optimiser's state is keyed by the parameter's TensorImpl: its address as text in 1.13, the
  // address itself in 2.x.
  template <class Map>
  static typename Map::key_type state_key(const Map&, const torch::Tensor& p) {
    if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
      std::ostringstream s;
      s << p.unsafeGetTensorImpl();
      return s.str();
    } else {
      return static_cast<typename Map::key_type>(p.unsafeGetTensorImpl());
    }
  }

  /// Moves the Adam object's state (a resumed run's) into the buffers; every parameter must have one, with
  /// the same step count, or none may.
  void take_state() {
    auto& state = adam_.state();
    if (state.empty()) return;
    const auto& params = params_.tensors();
    int64_t t = -1;
    for (size_t i = 0; i < params.size(); ++i) {
      const auto it = state.find(state_key(state, params[i]));
      if (it == state.end())
        throw IoError("optimiser state: parameter " + std::to_string(i) + " of " + std::to_string(params.size()) +
                      " has none while others have (a checkpoint of another model or optimiser?)");
      const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
      if (t >= 0 && s.step() != t)
        throw IoError("optimiser state: parameters at different step counts (" + std::to_string(t) + " and " +
                      std::to_string(s.step()) + "); a flat Adam keeps one for all");
      t = s.step();
      if (!s.exp_avg().defined() || s.exp_avg().sizes() != params[i].sizes() || !s.exp_avg_sq().defined() ||
          s.exp_avg_sq().sizes() != params[i].sizes())
        throw IoError("optimiser state: the moments of parameter " + std::to_string(i) + " do not match its shape");
      exp_avgs_[i].copy_(s.exp_avg());
      exp_avg_sqs_[i].copy_(s.exp_avg_sq());
    }
    steps_.fill_(static_cast<double>(t));
    state.clear();
  }

  void check_intact() const {
    if (!params_.intact())
      throw std::logic_error("FlatAdam: a parameter's storage was replaced after the optimiser was built "
                             "(to(), channels-last or a checkpoint load must come first)");
    for (size_t i = 0; i < grads_.size(); ++i)
      if (!params_.tensors()[i].grad().is_alias_of(grad_))
        throw std::logic_error("FlatAdam: parameter " + std::to_string(i) +
                               "'s gradient was replaced (zero it with FlatAdam::zero_grad, not set_to_none)");
  }

  torch::optim::Adam& adam_;
  FlatTensors params_;
  torch::Tensor grad_, exp_avg_, exp_avg_sq_, denom_, steps_, applied_;
  std::vector<torch::Tensor> grads_, exp_avgs_, exp_avg_sqs_;
};

}  // namespace hdssl::train
