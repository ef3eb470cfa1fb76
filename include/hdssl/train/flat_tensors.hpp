#pragma once
// Many small tensors re-seated as views of one buffer per dtype, so that one kernel touches all of them:
// what a multi-tensor optimiser does with a model's parameters (clip, Adam, zero_grad in a handful of
// launches instead of a few per parameter) and what lets the trainer snapshot and restore every BatchNorm
// statistic with one copy.
//
// Tensor::set_data swaps the storage under each tensor object in place (PyTorch's `p.data = view`), so the
// modules, autograd and any hooks keep seeing the same tensors; their shapes and memory formats
// (channels-last weights) are kept. Every view starts on a 64-element boundary (256 bytes for float32), as
// vectorised kernels and cuDNN prefer; the gaps stay zero.
//
// Anything that later replaces a tensor's storage (module.to(), to_channels_last, loading a checkpoint
// into the model) undoes the re-seating: build a FlatTensors after those.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace hdssl::train {

class FlatTensors {
 public:
  static constexpr int64_t kAlignElements = 64;

  FlatTensors() = default;

  /// Re-seats `tensors` (any dtypes, one device) into one zero-padded buffer per dtype, values kept.
  explicit FlatTensors(std::vector<torch::Tensor> tensors) : tensors_(std::move(tensors)) {
    torch::NoGradGuard no_grad;
    std::map<torch::ScalarType, size_t> group_of;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const torch::Tensor& t = tensors_[i];
      if (!t.defined()) throw std::invalid_argument("FlatTensors: tensor " + std::to_string(i) + " is undefined");
      if (t.device() != tensors_[0].device())
        throw std::invalid_argument("FlatTensors: tensors on " + tensors_[0].device().str() + " and " + t.device().str());
      for (size_t k = 0; k < i; ++k)  // a tied tensor would get two slots, and only one would stay its storage
        if (tensors_[k].is_same(t))
          throw std::invalid_argument("FlatTensors: tensor " + std::to_string(i) + " is tensor " + std::to_string(k) +
                                      " again (tied weights)");
      auto [it, fresh] = group_of.emplace(t.scalar_type(), groups_.size());
      if (fresh) groups_.push_back(Group{t.scalar_type(), 0, {}, torch::Tensor()});
      Group& g = groups_[it->second];
      Slot s;
      s.tensor = i;
      s.sizes = t.sizes().vec();
      // A dense layout is kept as it is (channels-last included); anything else becomes contiguous.
      s.strides = t.is_non_overlapping_and_dense() ? t.strides().vec() : t.contiguous().strides().vec();
      s.offset = g.numel;
      g.numel += (t.numel() + kAlignElements - 1) / kAlignElements * kAlignElements;
      g.slots.push_back(std::move(s));
    }
    for (Group& g : groups_) {
      g.buffer = torch::zeros({g.numel}, torch::TensorOptions().dtype(g.dtype).device(tensors_[0].device()));
      for (const Slot& s : g.slots) {
        torch::Tensor& t = tensors_[s.tensor];
        torch::Tensor view = g.buffer.as_strided(s.sizes, s.strides, s.offset);
        view.copy_(t);
        t.set_data(view);
      }
    }
  }

  const std::vector<torch::Tensor>& tensors() const { return tensors_; }
  size_t groups() const { return groups_.size(); }
  /// The buffer of group k (1-D, holding every tensor of its dtype and the zero gaps).
  const torch::Tensor& buffer(size_t k = 0) const { return groups_.at(k).buffer; }

  /// For a one-dtype FlatTensors: a zeroed buffer laid out like buffer(0), and views of it shaped like each
  /// tensor (gradients, optimiser moments).
  std::pair<torch::Tensor, std::vector<torch::Tensor>> twin() const {
    if (groups_.size() != 1) throw std::logic_error("FlatTensors::twin: needs tensors of one dtype");
    const Group& g = groups_[0];
    torch::Tensor buf = torch::zeros_like(g.buffer);
    std::vector<torch::Tensor> views(tensors_.size());
    for (const Slot& s : g.slots) views[s.tensor] = buf.as_strided(s.sizes, s.strides, s.offset);
    return {buf, views};
  }

  /// Whether each tensor still lives in its buffer (nothing has replaced its storage since).
  bool intact() const {
    for (const Group& g : groups_)
      for (const Slot& s : g.slots) {
        const torch::Tensor& t = tensors_[s.tensor];
        if (!t.is_alias_of(g.buffer) || t.storage_offset() != s.offset) return false;
      }
    return true;
  }

  /// A copy of every buffer (one copy per dtype).
  std::vector<torch::Tensor> snapshot() const {
    std::vector<torch::Tensor> s;
    for (const Group& g : groups_) s.push_back(g.buffer.clone());
    return s;
  }
  /// Puts `snapshot` back where `keep` (a 0-dim bool, on any device) is false, decided on the device.
  void restore_unless(const torch::Tensor& keep, const std::vector<torch::Tensor>& snapshot) {
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < groups_.size(); ++k) groups_[k].buffer.copy_(torch::where(keep, groups_[k].buffer, snapshot.at(k)));
  }

 private:
  struct Slot {
    size_t tensor = 0;
    std::vector<int64_t> sizes, strides;
    int64_t offset = 0;
  };
  struct Group {
    torch::ScalarType dtype;
    int64_t numel = 0;
    std::vector<Slot> slots;
    torch::Tensor buffer;
  };
  std::vector<torch::Tensor> tensors_;
  std::vector<Group> groups_;
};

}  // namespace hdssl::train
