#pragma once
// The checkpoints of one run: DIR/checkpoints/step-<9 digits>.ckpt, written atomically, the newest K kept.
// Resuming takes the newest that reads back: a damaged newest one (a disk error, a copy cut short) is
// reported and the previous one is used, so one bad file never costs more than one interval of work.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/checkpoint.hpp"

namespace hdssl::train {

class CheckpointStore {
 public:
  CheckpointStore(std::filesystem::path folder, int64_t keep) : folder_(std::move(folder)), keep_(std::max<int64_t>(1, keep)) {}

  const std::filesystem::path& folder() const { return folder_; }

  std::filesystem::path path_for(int64_t step) const {
    char name[64];
    std::snprintf(name, sizeof name, "step-%09lld.ckpt", static_cast<long long>(step));
    return folder_ / name;
  }

  /// (step, path) of every checkpoint file in the folder, oldest first. Temporaries are not listed.
  std::vector<std::pair<int64_t, std::filesystem::path>> list() const {
    std::vector<std::pair<int64_t, std::filesystem::path>> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(folder_, ec)) return out;
    for (const auto& e : std::filesystem::directory_iterator(folder_, ec)) {
      const std::string n = e.path().filename().string();
      long long step = -1;
      char tail[8] = {0};
      if (n.size() == 19 && std::sscanf(n.c_str(), "step-%9lld.%4s", &step, tail) == 2 && std::string(tail) == "ckpt")
        out.emplace_back(static_cast<int64_t>(step), e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Saves `record.step`'s checkpoint, then removes all but the newest `keep` ones. A failed write leaves
  /// every earlier checkpoint as it was and throws an IoError naming the file.
  void save(const torch::nn::Module& model, const torch::optim::Optimizer& optimizer, const io::CheckpointRecord& record) {
    std::error_code ec;
    std::filesystem::create_directories(folder_, ec);
    if (ec) throw IoError("checkpoint folder '" + folder_.string() + "': cannot create (" + ec.message() + ")");
    io::save_checkpoint(path_for(record.step), model, optimizer, record);
    auto all = list();
    for (size_t i = 0; i + static_cast<size_t>(keep_) < all.size(); ++i) std::filesystem::remove(all[i].second, ec);
  }

  /// Tries `load` on the checkpoints newest first; returns the path of the first that succeeds, or nullopt
  /// when there is none. Each IoError (a file that does not read back) goes to `warn` with the file and
  /// the reason and the previous checkpoint is tried; any other error propagates at once.
  std::optional<std::filesystem::path> load_newest(const std::function<void(const std::filesystem::path&)>& load,
                                                   const std::function<void(const std::string&)>& warn) const {
    auto all = list();
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      try {
        load(it->second);
        return it->second;
      } catch (const IoError& e) {  // a damaged file; a refused configuration (ConfigError) ends the search
        warn(std::string(e.what()) + (std::next(it) != all.rend() ? "; trying the previous checkpoint" : ""));
      }
    }
    return std::nullopt;
  }

 private:
  std::filesystem::path folder_;
  int64_t keep_;
};

}  // namespace hdssl::train
