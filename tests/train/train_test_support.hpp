#pragma once
// What the pre-training tests share: a data folder holding the real Colin27 T1.
#include <filesystem>

#include "../test_support.hpp"

namespace hdssl::test {

/// tmp/data with a copy of mricron-data's ch2.nii.gz (the Colin27 T1), the tests' real training volume.
inline std::filesystem::path colin_folder(const TempDir& tmp) {
  const std::filesystem::path d = tmp / "data";
  std::filesystem::create_directories(d);
  std::filesystem::copy_file(mricron("ch2.nii.gz"), d / "ch2.nii.gz");
  return d;
}

}  // namespace hdssl::test
