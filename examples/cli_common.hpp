#pragma once
// Command-line pieces shared by the hdssl-* drivers: the --threads option and one mapping from
// exceptions to exit statuses, so every driver reports failures the same way.
//
// Exit statuses: 0 success; 2 an input (file, option value, data) was refused with an hdssl error;
// 1 any other failure (a failed data-parallel peer included); CLI11's own codes for malformed command lines (--help exits 0).
#include <hdssl/core/error.hpp>
#include <hdssl/core/threads.hpp>

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

namespace hdssl::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

/// Adds --threads N (LibTorch intra-op threads; 0 or absent = every core of the machine).
inline CLI::Option* add_threads_option(CLI::App& app, int& threads) {
  return app.add_option("--threads", threads, "worker threads for LibTorch (default 0: every core)")
      ->check(CLI::NonNegativeNumber);
}

/// Applies the --threads value (hdssl::set_threads); returns the number now in use.
inline int apply_threads(int threads) { return hdssl::set_threads(threads); }

/// One-line error on stderr: "<program>: error: <message>" ("<program> [rank R]: ..." in a data-parallel run).
inline void print_error(const std::string& program, const std::string& message) {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  const bool ranked = rank && world && std::string(world) != "1";
  std::cerr << program << (ranked ? " [rank " + std::string(rank) + "]" : std::string()) << ": error: " << message << std::endl;
}

/// Exit status for an exception escaping a driver, after printing it as one line.
inline int exit_status_for(const std::string& program, const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const hdssl::DistributedError& err) {  // a peer or the network failed: not this input's fault
    print_error(program, err.what());
    return kExitFailure;
  } catch (const hdssl::Error& err) {
    print_error(program, err.what());
    return kExitBadInput;
  } catch (const std::exception& err) {
    print_error(program, err.what());
    return kExitFailure;
  } catch (...) {
    print_error(program, "unknown failure");
    return kExitFailure;
  }
}

/// Parses the command line and runs body(), mapping every exception to an exit status.
/// body returns the driver's exit status.
template <class Body>
int run(CLI::App& app, int argc, char** argv, Body&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return body();
  } catch (...) {
    return exit_status_for(app.get_name(), std::current_exception());
  }
}

}  // namespace hdssl::cli
