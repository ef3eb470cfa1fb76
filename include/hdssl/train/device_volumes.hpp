#pragma once
// Preprocessed volumes kept on the step's device, so that a batch's views are cut there from the
// sampler's crop origins instead of being cut on the CPU and uploaded (`--crop-device cuda`): a volume is
// uploaded on its first use and stays until the byte budget needs its room (least recently used first).
// At the paper's batch that replaces 42 MB of crops per step by nothing once the data set is resident.
// The budget is the user's (--device-volumes-gb): too large for the card, an upload that finds no memory
// lets every volume the batch does not need go and tries again before giving up with a DataError.
//
// The crops are the sampler's (PairSampler::copy_crop) exactly: the same float32 voxels, copied.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/sampling/pair_sampler.hpp"

namespace hdssl::train {

class DeviceVolumes {
 public:
  DeviceVolumes(torch::Device device, double budget_bytes) : device_(device), budget_(budget_bytes) {}

  /// The un-augmented views of `pairs` (sampled with crop = false), [B, 1, PX, PY, PZ] float32 on the
  /// device; `images[i]` is the pool's volume i (X, Y, Z) on the host, defined for the batch's volumes.
  std::pair<torch::Tensor, torch::Tensor> crop(const sampling::PairBatch& pairs, const std::vector<torch::Tensor>& images,
                                               const std::array<int64_t, 3>& patch) {
    const int64_t B = pairs.volume_index.numel();
    const int64_t* vi = pairs.volume_index.data_ptr<int64_t>();
    const int64_t* s1 = pairs.starts1.data_ptr<int64_t>();
    const int64_t* s2 = pairs.starts2.data_ptr<int64_t>();
    const std::vector<int64_t> wanted(vi, vi + B);
    std::vector<torch::Tensor> v1, v2;
    for (int64_t b = 0; b < B; ++b) {
      const auto i = static_cast<size_t>(vi[b]);
      if (i >= images.size() || !images[i].defined())
        throw DataError("device crop: volume " + std::to_string(i) + " of pair " + std::to_string(b) + " was not provided");
      const torch::Tensor& volume = resident(vi[b], images[i], wanted);
      auto cut = [&](const int64_t* s) {
        for (int a = 0; a < 3; ++a)
          if (s[a] < 0 || s[a] + patch[a] > volume.size(a))
            throw DataError("device crop: the crop of pair " + std::to_string(b) + " leaves volume " + std::to_string(i));
        return volume.narrow(0, s[0], patch[0]).narrow(1, s[1], patch[1]).narrow(2, s[2], patch[2]);
      };
      v1.push_back(cut(s1 + 3 * b));
      v2.push_back(cut(s2 + 3 * b));
    }
    return {torch::stack(v1).unsqueeze(1), torch::stack(v2).unsqueeze(1)};
  }

  int64_t uploads() const { return uploads_; }
  int64_t evictions() const { return evictions_; }
  double resident_bytes() const { return bytes_; }
  size_t size() const { return held_.size(); }

 private:
  struct Held {
    torch::Tensor image;
    std::list<int64_t>::iterator age;  ///< position in lru_ (front = most recent)
  };

  static double bytes_of(const torch::Tensor& t) {
    return static_cast<double>(t.numel()) * static_cast<double>(t.element_size());
  }

  /// Evicts least recently used volumes this batch does not need until `need` more bytes fit the budget
  /// (or nothing else can go: the batch's own volumes stay even beyond it).
  void make_room(double need, const std::vector<int64_t>& wanted, bool everything_evictable = false) {
    for (auto victim = lru_.end(); (everything_evictable || bytes_ + need > budget_) && victim != lru_.begin();) {
      --victim;
      if (std::find(wanted.begin(), wanted.end(), *victim) != wanted.end()) continue;
      auto h = held_.find(*victim);
      bytes_ -= bytes_of(h->second.image);
      held_.erase(h);
      victim = lru_.erase(victim);
      ++evictions_;
    }
  }

  /// Volume `index` on the device, uploaded now if it is not there. The upload goes through page-locked
  /// memory without waiting for the device (a copy from pageable memory would wait for the whole queued
  /// step). Out of device memory, everything the batch does not need is let go and the upload tried once more.
  const torch::Tensor& resident(int64_t index, const torch::Tensor& image, const std::vector<int64_t>& wanted) {
    auto it = held_.find(index);
    if (it != held_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.age);
      return it->second.image;
    }
    make_room(bytes_of(image), wanted);
    auto upload = [&] {
      return device_.is_cuda() ? image.pin_memory().to(device_, /*non_blocking=*/true) : image.to(device_);
    };
    torch::Tensor on_device;
    try {
      on_device = upload();
    } catch (const c10::OutOfMemoryError&) {
      make_room(0, wanted, /*everything_evictable=*/true);
      try {
        on_device = upload();
      } catch (const c10::OutOfMemoryError& e) {
        throw DataError("device crop: no room on " + device_.str() + " for volume " + std::to_string(index) + " (" +
                        std::to_string(static_cast<int64_t>(bytes_of(image) / 1e6)) + " MB) beside the step; lower "
                        "--device-volumes-gb or use --crop-device cpu (" + e.what_without_backtrace() + ")");
      }
    }
    lru_.push_front(index);
    bytes_ += bytes_of(on_device);
    ++uploads_;
    return held_.emplace(index, Held{std::move(on_device), lru_.begin()}).first->second.image;
  }

  torch::Device device_;
  double budget_;
  double bytes_ = 0;
  int64_t uploads_ = 0, evictions_ = 0;
  std::unordered_map<int64_t, Held> held_;
  std::list<int64_t> lru_;
};

}  // namespace hdssl::train
