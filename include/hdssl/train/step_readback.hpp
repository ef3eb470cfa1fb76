#pragma once
// A step's few figures (losses, gradient norm, whether the update was taken) brought to the host without
// stopping the device: start() queues a copy into page-locked memory behind the step's work and records an
// event; get() waits for that event alone. The trainer calls get() for step s after it has queued step
// s + 1, so the GPU is already busy with the next step while the host logs this one: no step waits for
// the host (docs/train.md, "Host synchronisation"). On the CPU the values are simply there.
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace hdssl::train {

class StepReadback {
 public:
  /// Queues the copy of `values` (1-D, any floating dtype, any device) to the host.
  void start(const torch::Tensor& values) {
    const torch::Tensor v = values.detach().to(torch::kFloat64).reshape({-1});
    if (!v.is_cuda()) {
      host_ = v.clone();
      done_.reset();
      return;
    }
    host_ = torch::empty({v.numel()}, torch::TensorOptions().dtype(torch::kFloat64).pinned_memory(true));
    host_.copy_(v, /*non_blocking=*/true);
    const c10::impl::VirtualGuardImpl guard(v.device().type());
    done_.emplace(v.device().type());
    done_->record(guard.getStream(v.device()));
  }

  bool started() const { return host_.defined(); }
  /// Whether the copy has completed (get() would not wait).
  bool ready() const { return host_.defined() && (!done_ || done_->query()); }

  /// The values, once their copy is complete (waits for it, and for nothing queued after it).
  std::vector<double> get() {
    if (!host_.defined()) throw std::logic_error("StepReadback::get before start");
    if (done_) wait_for(*done_);
    const double* p = host_.data_ptr<double>();
    return std::vector<double>(p, p + host_.numel());
  }

 private:
  // c10::Event gained synchronize() after 1.13; before, its completion is polled (the step it waits for
  // is usually done already: the device is running the next one).
  template <class E>
  static auto wait_for(E& e) -> decltype(e.synchronize(), void()) {
    e.synchronize();
  }
  template <class E, class... Older>
  static void wait_for(E& e, Older...) {
    while (!e.query()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  torch::Tensor host_;
  std::optional<c10::Event> done_;
};

}  // namespace hdssl::train
