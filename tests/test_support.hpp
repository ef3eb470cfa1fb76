#pragma once
// Helpers shared by the test executables: paths to real data, temporary folders.
#include "hdssl/core/environment.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

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

/// Runs `command` through the shell; returns its exit status and (in `output`) stdout and stderr together.
inline int run_shell(const std::string& command, std::string* output = nullptr) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  const int status = pclose(pipe);
  if (output) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// A child process started without a shell (so signals reach it directly), output to `log`.
struct Child {
  pid_t pid = -1;
  /// `env`: variables set (or replaced) for the child on top of this process's environment.
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log,
        const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> env_strings = environment_with(env);
    const std::vector<char*> envp = c_strings(env_strings);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), envp.data()) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  void signal(int sig) const { ::kill(pid, sig); }
  /// Exit status, or 128 + signal number.
  int wait() {
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
  /// Exit status as wait(), or -1 (the child still running, and killed) after `seconds`.
  int wait_for(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

}  // namespace hdssl::test
