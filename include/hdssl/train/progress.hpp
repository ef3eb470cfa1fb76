#pragma once
// What a long run tells its user, one implementation for every trainer: a readable line per logging
// interval on standard output, and the same numbers as one JSON object per line in DIR/metrics.jsonl
// (what the curve, scripts and a resumed run read back).
//
// metrics.jsonl is appended and flushed line by line, so a killed process loses nothing it logged. On
// resume from step s the file is first cut back (atomically) to the records with step <= s: the steps
// after the checkpoint are computed again and must not appear twice.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/atomic_file.hpp"

namespace hdssl::train {

/// A stream that drops what it is given: the console of every rank but rank 0 in data-parallel training.
struct NullStream : std::ostream {
  NullStream() : std::ostream(nullptr) {}
};

/// "4.2 s", "3 min 05 s", "2 h 07 min", "3 d 04 h": what an ETA reads like.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[64];
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (seconds < 60) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lld min %02lld s", (long long)(s / 60), (long long)(s % 60));
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%lld h %02lld min", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else std::snprintf(buf, sizeof buf, "%lld d %02lld h", (long long)(s / 86400), (long long)(s % 86400 / 3600));
  return buf;
}

/// The records of a metrics.jsonl file, in order. Unreadable lines (a line cut by a crash) are dropped.
inline std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      auto j = nlohmann::json::parse(line);
      if (j.is_object()) out.push_back(std::move(j));
    } catch (const nlohmann::json::exception&) {
    }
  }
  return out;
}

class ProgressLog {
 public:
  /// Opens DIR/metrics.jsonl for appending, first keeping only the records with step <= resume_step
  /// (all of them when resume_step < 0 means "fresh run": the file is then started empty).
  ProgressLog(std::filesystem::path metrics, int64_t resume_step, std::ostream& console = std::cout)
      : path_(std::move(metrics)), console_(console) {
    std::string kept;
    if (resume_step >= 0)
      for (const auto& r : read_metrics(path_))
        if (r.value("step", int64_t{-1}) <= resume_step) kept += r.dump() + "\n";
    io::write_text_atomically(path_, kept);
    file_.open(path_, std::ios::app | std::ios::binary);
    if (!file_) throw IoError("metrics file '" + path_.string() + "': cannot open for appending");
  }

  /// One record (written and flushed) and its human line (printed).
  void log(const nlohmann::json& record, const std::string& line) {
    file_ << record.dump() << '\n';
    file_.flush();
    if (!file_) throw IoError("metrics file '" + path_.string() + "': write failed");
    say(line);
  }
  /// A line for the user only (start-up, warnings, checkpoints).
  void say(const std::string& line) { console_ << line << std::endl; }

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ostream& console_;
  std::ofstream file_;
};

}  // namespace hdssl::train
