#pragma once
// Atomic file replacement, the one way hdssl writes weights, checkpoints and cache entries: the content
// goes to a hidden temporary file in the same folder, is flushed to disk, and is renamed over the
// target. Readers (and a second process writing the same file) see either the old file or the whole
// new one, never a partial write; a writer that dies leaves only a `.<name>.tmp-*` file behind.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

#include "hdssl/core/error.hpp"

namespace hdssl::io {

namespace detail {

/// Flushes a file or folder to disk; best effort where the platform has no fsync. `what` prefixes errors.
inline void fsync_path(const std::filesystem::path& p, bool directory, const std::string& what) {
#if defined(__unix__) || defined(__APPLE__)
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) {
    if (directory) return;  // some file systems refuse to open folders; the rename is still atomic
    throw IoError(what + "cannot open '" + p.string() + "' to flush it");
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0 && !directory) throw IoError(what + "fsync of '" + p.string() + "' failed");
#else
  (void)p;
  (void)directory;
  (void)what;
#endif
}

/// A suffix no other writer (process, thread or earlier call) uses at the same time.
inline std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  std::ostringstream s;
#if defined(__unix__) || defined(__APPLE__)
  s << ::getpid() << '-';
#endif
  s << std::hash<std::thread::id>{}(std::this_thread::get_id()) << '-' << counter++ << '-' << rd();
  return s.str();
}

}  // namespace detail

/// The temporary file a write of `path` goes through: `.<filename>.tmp-<unique><suffix>` beside it (a
/// suffix such as ".gz" keeps the real extension last, so nothing mistakes the file for another format).
inline std::filesystem::path temporary_beside(const std::filesystem::path& path, const std::string& suffix = "") {
  return path.parent_path() / ("." + path.filename().string() + ".tmp-" + detail::unique_suffix() + suffix);
}

/// Replaces `path` atomically: `write(tmp)` fills a temporary file beside it (throwing on failure),
/// which is then flushed, renamed over `path`, and the folder flushed. On any failure the temporary is
/// removed, `path` is left as it was, and the error propagates (IoError messages start with `what`).
/// `suffix` ends the temporary's name (see temporary_beside).
template <typename Write>
void write_atomically(const std::filesystem::path& path, Write&& write, const std::string& what,
                      const std::string& suffix = "") {
  const std::filesystem::path tmp = temporary_beside(path, suffix);
  std::error_code ec;
  try {
    write(tmp);
    detail::fsync_path(tmp, false, what);
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string reason = ec.message();
    std::filesystem::remove(tmp, ec);
    throw IoError(what + "cannot move the finished file into place: " + reason);
  }
  const std::filesystem::path folder = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  detail::fsync_path(folder, true, what);
}

/// Replaces `path` atomically with `text` (configurations, metrics files); IoError naming the file.
inline void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  const std::string what = "'" + path.string() + "': ";
  write_atomically(
      path,
      [&](const std::filesystem::path& tmp) {
        std::ofstream f(tmp, std::ios::binary);
        f << text;
        f.flush();
        if (!f) throw IoError(what + "write failed");
      },
      what);
}

}  // namespace hdssl::io
