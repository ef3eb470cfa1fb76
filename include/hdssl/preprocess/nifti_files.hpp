#pragma once
// From NIfTI files to a preprocessed volume, through the cache when one is given: the one call a data
// loader makes per training volume.
#include <filesystem>
#include <optional>
#include <vector>

#include "hdssl/io/nifti.hpp"
#include "hdssl/preprocess/cache.hpp"
#include "hdssl/preprocess/pipeline.hpp"

namespace hdssl::preprocess {

/// Reads `image` (float32, reoriented to RAS) and optionally its label map `labels` (int64, RAS; must
/// share the image grid), preprocesses them with `opt`, and returns the result. With a cache, the result
/// is looked up by the files' content and the options first and stored after computing.
/// Throws IoError for unreadable files, DataError for unusable data, ConfigError for bad options.
inline Preprocessed preprocess_nifti(const std::filesystem::path& image,
                                     const std::optional<std::filesystem::path>& labels,
                                     const PreprocessOptions& opt, PreprocessCache* cache = nullptr) {
  opt.validate();
  auto compute = [&] {
    const Volume img = io::read_nifti(image);
    std::optional<Volume> lab;
    if (labels) {
      io::NiftiReadOptions lo;
      lo.load_as = io::LoadType::Int64;
      lab = io::read_nifti(*labels, lo);
    }
    return preprocess(img, opt, lab);
  };
  if (!cache) return compute();
  std::vector<std::filesystem::path> sources = {image};
  if (labels) sources.push_back(*labels);
  return cache->get_or_compute(sources, opt, compute);
}

}  // namespace hdssl::preprocess
