#pragma once
// What the pre-training tests share: a data folder holding the real Colin27 T1, and a run small enough for CI.
#include <filesystem>

#include "hdssl/train/pretrain_config.hpp"

#include "../test_support.hpp"

namespace hdssl::test {

/// tmp/data with a copy of mricron-data's ch2.nii.gz (the Colin27 T1), the tests' real training volume.
inline std::filesystem::path colin_folder(const TempDir& tmp) {
  const std::filesystem::path d = tmp / "data";
  std::filesystem::create_directories(d);
  std::filesystem::copy_file(mricron("ch2.nii.gz"), d / "ch2.nii.gz");
  return d;
}

/// A tiny run on the Colin27 T1 that fits a 2-core machine: 4 channels x 3 levels, 2 pairs of 32x32x16.
inline train::PretrainConfig tiny_config(const std::filesystem::path& data, const std::filesystem::path& out,
                                       const std::filesystem::path& cache) {
  train::PretrainConfig c;
  c.data = data.string();
  c.out = out.string();
  c.cache = cache.string();
  c.modality = "mri";
  c.base_channels = 4;
  c.levels = 3;
  c.patch = {32, 32, 16};
  c.pairs = 2;
  c.positives = 64;
  c.steps = 8;
  c.log_every = 1;
  c.checkpoint_every = 4;
  c.threads = 2;
  c.loader_threads = 0;
  return c;
}

}  // namespace hdssl::test
