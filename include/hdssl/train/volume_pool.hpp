#pragma once
// The training volumes of a pre-training run, preprocessed once (through the cache) and ready for the pair
// sampler. Volumes are kept in memory in list order until `memory_budget_bytes` is used up; the others are
// read back from the preprocessing cache when a batch needs them (a cache hit: no resampling again).
//
// Bad input never stops the run by itself: a volume that cannot be read or preprocessed (a damaged file,
// an empty body mask, one smaller than the patch, non-finite voxels) is reported with its path and reason
// and left out. Only a pool with no usable volume at all is an error, raised before training starts.
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/data/datalist.hpp"
#include "hdssl/preprocess/nifti_files.hpp"
#include "hdssl/sampling/pair_sampler.hpp"

namespace hdssl::train {

class VolumePool {
 public:
  struct Skipped {
    std::filesystem::path path;
    std::string reason;
  };
  using Report = std::function<void(const std::string&)>;

  /// Preprocesses every sample (reporting each through `report`); throws DataError when none is usable.
  VolumePool(const std::vector<data::Sample>& samples, preprocess::PreprocessOptions options,
             preprocess::PreprocessCache& cache, const sampling::PairSampler& sampler, double memory_budget_bytes,
             const Report& report)
      : options_(std::move(options)), cache_(cache), sampler_(sampler) {
    double used = 0;
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto& path = samples[i].image;
      try {
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t hits = cache_.hits();
        auto source = load(path);
        Entry e;
        e.path = path;
        e.intensity_range = source.second;
        e.shape = source.first->shape();
        const double bytes = resident_bytes(*source.first);
        if (used + bytes <= memory_budget_bytes) {
          e.resident = std::move(source.first);
          used += bytes;
        }
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        report("volume " + std::to_string(i + 1) + "/" + std::to_string(samples.size()) + " " + path.string() +
               ": " + shape_text(e.shape) + (cache_.hits() > hits ? " (cached)" : " (preprocessed)") + " in " +
               std::to_string(secs).substr(0, 4) + " s" + (e.resident ? "" : ", read from the cache when needed"));
        entries_.push_back(std::move(e));
      } catch (const Error& err) {
        skipped_.push_back({path, err.what()});
        report("skipping volume " + path.string() + ": " + err.what());
      }
    }
    resident_bytes_ = used;
    if (entries_.empty())
      throw DataError("no usable training volume: all " + std::to_string(samples.size()) +
                      " were refused (see the reasons above)");
  }

  size_t size() const { return entries_.size(); }
  const std::vector<Skipped>& skipped() const { return skipped_; }
  double resident_bytes() const { return resident_bytes_; }
  const std::filesystem::path& path(size_t i) const { return entries_.at(i).path; }
  /// Input values mapped to 0 and 1 by preprocessing (the CT window, or the MRI percentiles).
  std::array<double, 2> intensity_range(size_t i) const { return entries_.at(i).intensity_range; }

  /// The sources of the given pool indices, in a vector indexed like the pool (null elsewhere); volumes
  /// outside the memory budget are read from the cache for the caller, who holds them as long as it needs.
  std::vector<std::shared_ptr<const sampling::SampleSource>> acquire(const std::vector<int64_t>& indices) const {
    std::vector<std::shared_ptr<const sampling::SampleSource>> out(entries_.size());
    for (const int64_t i : indices) {
      const Entry& e = entries_.at(static_cast<size_t>(i));
      out[static_cast<size_t>(i)] = e.resident ? e.resident : load(e.path).first;
    }
    return out;
  }

 private:
  struct Entry {
    std::filesystem::path path;
    std::array<int64_t, 3> shape{};
    std::array<double, 2> intensity_range{{0, 1}};
    std::shared_ptr<const sampling::SampleSource> resident;
  };

  static double resident_bytes(const sampling::SampleSource& s) {
    return static_cast<double>(s.image.numel()) * 5.0 + static_cast<double>(s.body_voxels.size()) * 8.0;
  }
  static std::string shape_text(const std::array<int64_t, 3>& s) {
    return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
  }

  std::pair<std::shared_ptr<const sampling::SampleSource>, std::array<double, 2>> load(
      const std::filesystem::path& path) const {
    auto p = preprocess::preprocess_nifti(path, std::nullopt, options_, &cache_);
    auto source = std::make_shared<sampling::SampleSource>(
        sampler_.prepare(p.image.data, p.body_mask, path.string()));
    return {std::move(source), p.info.intensity_range};
  }

  preprocess::PreprocessOptions options_;
  preprocess::PreprocessCache& cache_;
  const sampling::PairSampler& sampler_;
  std::vector<Entry> entries_;
  std::vector<Skipped> skipped_;
  double resident_bytes_ = 0;
};

}  // namespace hdssl::train
