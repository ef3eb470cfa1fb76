#pragma once
// `--nproc N`: N ranks of the same program on this machine, each with the environment torchrun would give
// it (train/distributed.hpp reads it). The launcher itself trains nothing: it picks a free port for the
// rendezvous, starts the ranks, forwards SIGINT/SIGTERM to them (each then writes its checkpoint and
// stops), and when a rank fails it gives the others `grace` to stop on their own (their collectives fail
// within --dist-timeout-s) before ending them. Its exit status is the first failing rank's, else 0.
//
// Several machines: start one hdssl process per GPU with torchrun (`torchrun --nnodes 2 --nproc-per-node 8
// --rdzv-endpoint HOST:PORT $(which hdssl-pretrain) ...`), or set the variables by hand (docs/distributed.md).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "hdssl/core/environment.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/train/distributed.hpp"

namespace hdssl::train {

namespace detail {
inline volatile sig_atomic_t launcher_signal = 0;
inline void launcher_on_signal(int s) { launcher_signal = s; }

/// A TCP port free on the loopback interface now (the kernel's choice).
inline int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IoError(std::string("--nproc: cannot open a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  if (!ok) throw IoError(std::string("--nproc: cannot find a free local port: ") + std::strerror(errno));
  return ntohs(a.sin_port);
}
}  // namespace detail

/// True when this process was started as a rank (by torchrun or by launch_local_ranks).
inline bool started_as_rank() { return std::getenv("RANK") != nullptr && std::getenv("WORLD_SIZE") != nullptr; }

/// Runs `argv` (this program, unchanged: a rank sees RANK and does not launch again) as `nproc` local
/// ranks and returns the exit status to end with.
inline int launch_local_ranks(int nproc, char** argv, std::ostream& console = std::cerr,
                              std::chrono::seconds grace = std::chrono::seconds(60)) {
  if (nproc < 1) throw ConfigError("--nproc: expected at least 1, got " + std::to_string(nproc));
  const int port = detail::free_local_port();
  console << "launching " << nproc << " ranks on this machine (gloo/nccl rendezvous at 127.0.0.1:" << port << ")"
          << std::endl;
  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = detail::launcher_on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env_strings = environment_with(dist::LaunchEnvironment::for_local_rank(r, nproc, port));
    const std::vector<char*> envp = c_strings(env_strings);
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (const pid_t p : pids) ::kill(p, SIGKILL);
      throw IoError(std::string("--nproc: cannot start rank ") + std::to_string(r) + ": " + std::strerror(errno));
    }
    if (pid == 0) {
      ::execve("/proc/self/exe", argv, envp.data());
      std::fprintf(stderr, "--nproc: cannot start rank %d: %s\n", r, std::strerror(errno));
      std::_Exit(127);
    }
    pids.push_back(pid);
  }

  int status_to_return = 0, running = nproc, forwarded = 0;
  std::chrono::steady_clock::time_point first_failure{};
  bool failed = false, killed = false;
  while (running > 0) {
    if (detail::launcher_signal && !forwarded) {
      forwarded = detail::launcher_signal;
      for (const pid_t p : pids) if (p > 0) ::kill(p, forwarded);
    }
    int st = 0;
    const pid_t done = ::waitpid(-1, &st, WNOHANG);
    if (done > 0) {
      for (auto& p : pids) if (p == done) p = -1, --running;
      const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      if (code != 0 && !failed) {
        failed = true;
        status_to_return = code;
        first_failure = std::chrono::steady_clock::now();
        console << "a rank ended with status " << code << "; the others stop when their next collective fails"
                << std::endl;
      }
      continue;
    }
    if (failed && !killed && std::chrono::steady_clock::now() - first_failure > grace) {
      killed = true;
      console << "ranks still running " << grace.count() << " s after a failure: ending them" << std::endl;
      for (const pid_t p : pids) if (p > 0) ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return status_to_return;
}

}  // namespace hdssl::train
