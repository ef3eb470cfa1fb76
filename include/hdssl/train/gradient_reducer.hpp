#pragma once
// Gradient averaging over the ranks of a data-parallel run, as DistributedDataParallel does it:
//
//   - the trained parameters are split into buckets of about `bucket_mb` (in reverse order: backward
//     produces the last layers' gradients first), each with one flat buffer;
//   - a hook on every parameter copies its gradient into its bucket's buffer as backward produces it; a
//     bucket whose gradients are all in starts its all-reduce at once, while backward goes on with the
//     earlier layers (buckets start in a fixed order, the same on every rank, as c10d requires);
//   - finish() starts what is left, waits for every bucket, and only then divides by the world size and
//     writes the averages back as the parameters' gradients.
//
// A parameter that got no gradient on this step (a frozen backbone) keeps none: its slot is all-reduced as
// zeros (every rank has the same graph, so every rank skips the same ones) and not written back, so Adam
// leaves it alone as it would in one process. A rank whose loss is not finite calls poison() instead of
// backward: its NaN slots make every rank's averaged gradient non-finite, so all ranks skip the same step.
//
// With gradient accumulation the hooks are armed for the last micro-batch only (prepare()): the slot then
// receives the gradient accumulated so far plus the last micro-batch's.
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/train/distributed.hpp"

namespace hdssl::train::dist {

class GradientReducer {
 public:
  /// Reduces the gradients of `params` over `group`; a world of one registers nothing and does nothing.
  GradientReducer(const ProcessGroup& group, std::vector<torch::Tensor> params, double bucket_mb)
      : group_(group), params_(std::move(params)) {
    if (!group_.has_backend()) return;
    const auto bucket_bytes = static_cast<int64_t>(bucket_mb * 1024 * 1024);
    slot_.resize(params_.size());
    for (size_t k = params_.size(); k-- > 0;) {
      const auto& p = params_[k];
      const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
      if (buckets_.empty() || buckets_.back().bytes + bytes > bucket_bytes ||
          buckets_.back().dtype != p.scalar_type() || buckets_.back().device != p.device()) {
        buckets_.push_back(Bucket{});
        buckets_.back().dtype = p.scalar_type();
        buckets_.back().device = p.device();
      }
      Bucket& b = buckets_.back();
      slot_[k] = {buckets_.size() - 1, b.numel};
      b.members.push_back(k);
      b.numel += p.numel();
      b.bytes += bytes;
    }
    for (auto& b : buckets_) b.flat = torch::zeros({b.numel}, torch::TensorOptions().dtype(b.dtype).device(b.device));
    fired_.assign(params_.size(), false);
    for (size_t k = 0; k < params_.size(); ++k)
      if (params_[k].requires_grad())
        hooks_.emplace_back(k, params_[k].register_hook([this, k](torch::Tensor g) { on_gradient(k, g); }));
  }

  ~GradientReducer() {
    for (const auto& [k, h] : hooks_) params_[k].remove_hook(h);
  }
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  size_t buckets() const { return buckets_.size(); }
  /// Seconds finish() spent waiting for all-reduces still in flight after backward (the communication that
  /// did not overlap), over the last step.
  double last_wait_seconds() const { return last_wait_; }

  /// Arms the hooks: the next backward's gradients are reduced. Call before the last micro-batch's backward.
  void prepare() {
    if (!group_.has_backend()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = true;
    next_launch_ = 0;
    fired_.assign(params_.size(), false);
    for (auto& b : buckets_) b.ready = 0, b.pending = {};
  }

  /// This rank has no usable gradient this step: it contributes NaN, and every rank will skip the update.
  void poison() {
    if (!group_.has_backend()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t b = next_launch_; b < buckets_.size(); ++b) {
      buckets_[b].flat.fill_(std::numeric_limits<float>::quiet_NaN());
      buckets_[b].ready = buckets_[b].members.size();
    }
    for (size_t k = 0; k < params_.size(); ++k) fired_[k] = true;
    launch_ready();
  }

  /// After backward: starts the remaining buckets, waits for all, averages and writes the gradients.
  void finish() {
    if (!group_.has_backend()) return;
    torch::NoGradGuard no_grad;
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t b = next_launch_; b < buckets_.size(); ++b) {
      for (const size_t k : buckets_[b].members) {
        if (fired_[k]) continue;
        // No gradient arrived from this backward: the accumulated one (earlier micro-batches), or zeros.
        const auto& g = params_[k].grad();
        auto s = slot_view(k);
        if (g.defined()) s.copy_(g), fired_[k] = true;
        else s.zero_();
      }
      buckets_[b].ready = buckets_[b].members.size();
    }
    launch_ready();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& b : buckets_) b.pending.wait();
    last_wait_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double inv = 1.0 / group_.size();
    for (auto& b : buckets_) b.flat.mul_(inv);  // only now: every reduction has completed
    for (size_t k = 0; k < params_.size(); ++k) {
      if (!fired_[k]) continue;
      auto& g = params_[k].mutable_grad();
      const auto s = slot_view(k);
      if (g.defined()) g.copy_(s);
      else g = s.clone();
    }
    armed_ = false;
  }

 private:
  struct Bucket {
    torch::Dtype dtype = torch::kFloat32;
    torch::Device device = torch::kCPU;
    std::vector<size_t> members;  ///< parameter indices
    int64_t numel = 0, bytes = 0;
    size_t ready = 0;             ///< members whose gradient is in the buffer
    torch::Tensor flat;
    ProcessGroup::Pending pending;
  };
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
  };

  torch::Tensor slot_view(size_t k) {
    const auto& p = params_[k];
    return buckets_[slot_[k].bucket].flat.narrow(0, slot_[k].offset, p.numel()).view(p.sizes());
  }

  void on_gradient(size_t k, const torch::Tensor& g) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!armed_) return;
    torch::NoGradGuard no_grad;
    auto s = slot_view(k);
    if (fired_[k]) {
      s.add_(g);  // a second gradient for the same parameter in one backward
      return;
    }
    // The hook runs before the gradient is accumulated into .grad: add what earlier micro-batches left.
    const auto& acc = params_[k].grad();
    if (acc.defined()) torch::add_out(s, acc, g);
    else s.copy_(g);
    fired_[k] = true;
    ++buckets_[slot_[k].bucket].ready;
    launch_ready();
  }

  /// Starts, in bucket order, every bucket whose gradients are all in.
  void launch_ready() {
    while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == buckets_[next_launch_].members.size()) {
      auto& b = buckets_[next_launch_];
      b.pending = group_.all_reduce_sum_async(b.flat, "gradient all-reduce (bucket " + std::to_string(next_launch_ + 1) +
                                                          " of " + std::to_string(buckets_.size()) + ")");
      ++next_launch_;
    }
  }

  const ProcessGroup& group_;
  std::vector<torch::Tensor> params_;
  std::vector<Slot> slot_;
  std::vector<Bucket> buckets_;
  std::vector<bool> fired_;
  std::vector<std::pair<size_t, unsigned>> hooks_;  ///< (parameter, hook handle)
  size_t next_launch_ = 0;
  bool armed_ = false;
  double last_wait_ = 0;
  std::mutex mutex_;
};

}  // namespace hdssl::train::dist
