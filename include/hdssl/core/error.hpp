#pragma once
// Exception types. Every error message names the thing (file, option, tensor) and the reason.
#include <stdexcept>
#include <string>

namespace hdssl {

/// Base of every exception hdssl throws on purpose.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A file cannot be read or written, or its content is damaged (truncated, bad header, corrupt gzip...).
struct IoError : Error {
  using Error::Error;
};

/// A configuration value or key is invalid (unknown key, out-of-range number, wrong type).
struct ConfigError : Error {
  using Error::Error;
};

/// The data itself is unusable for the requested operation (non-finite voxels, empty body mask...).
struct DataError : Error {
  using Error::Error;
};

/// Data-parallel training cannot go on: a collective failed or timed out (another rank stopped, the network
/// failed) or the ranks disagree on what they hold (train/distributed.hpp).
struct DistributedError : Error {
  using Error::Error;
};

}  // namespace hdssl
