#pragma once
// SIGINT / SIGTERM as a request to stop cleanly: the handler only sets a flag; the trainer looks at it
// between steps, writes a checkpoint and returns, so Ctrl-C or a scheduler's TERM never costs work.
// A second signal while stopping restores the default action, so a second Ctrl-C still ends a stuck run.
#include <atomic>
#include <csignal>

namespace hdssl::train {

namespace detail {
inline std::atomic<int>& stop_signal_number() {
  static std::atomic<int> n{0};
  return n;
}
inline void stop_handler(int sig) {
  if (stop_signal_number().exchange(sig) != 0) std::signal(sig, SIG_DFL);
}
}  // namespace detail

/// Routes SIGINT and SIGTERM to the stop flag (a driver calls it once at start).
inline void install_stop_handlers() {
  std::signal(SIGINT, detail::stop_handler);
  std::signal(SIGTERM, detail::stop_handler);
}
/// The signal that asked to stop, or 0.
inline int stop_requested() { return detail::stop_signal_number().load(); }
/// Clears the flag (tests that run several trainers in one process).
inline void clear_stop_request() { detail::stop_signal_number().store(0); }
/// Asks to stop as a signal would (e.g. from a test, or an embedding application's own UI).
inline void request_stop(int sig = SIGTERM) { detail::stop_signal_number().store(sig); }

}  // namespace hdssl::train
