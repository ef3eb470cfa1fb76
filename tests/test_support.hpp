#pragma once
// Helpers shared by the test executables: paths to real data, temporary folders.
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace hdssl::test {

inline std::filesystem::path mricron(const std::string& name) { return std::filesystem::path(HDSSL_MRICRON_DIR) / name; }
inline std::filesystem::path nibabel_data(const std::string& name) { return std::filesystem::path(HDSSL_NIBABEL_DATA_DIR) / name; }
inline std::filesystem::path fixtures_dir() { return std::filesystem::path(HDSSL_FIXTURES_DIR); }
inline std::filesystem::path bin_dir() { return std::filesystem::path(HDSSL_BIN_DIR); }

/// A fresh, unique temporary folder removed when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("hdssl-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

}  // namespace hdssl::test
