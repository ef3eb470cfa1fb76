#pragma once
// Content hashes for cache keys and integrity checks: 64-bit FNV-1a (Fowler-Noll-Vo), streamed.
//
// FNV-1a is NOT cryptographic: it detects accidental change (a different input file, a damaged cache
// entry) with a 2^-64 chance of a miss, but anyone can craft collisions on purpose. The cache stores the
// full key material beside each entry and compares it on load, so a key collision cannot return the
// wrong volume; the checksum guards against damage, not against an attacker with write access.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::preprocess {

constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnv1a64Prime = 0x100000001b3ull;

/// FNV-1a 64 of `n` bytes, continuing from `h` (pass a previous result to hash in pieces).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Offset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1a64Prime;
  }
  return h;
}

inline uint64_t fnv1a64(const std::string& s, uint64_t h = kFnv1a64Offset) { return fnv1a64(s.data(), s.size(), h); }

/// 16 lower-case hex digits.
inline std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

/// FNV-1a 64 of a file's bytes, read in 1 MiB pieces. Throws IoError naming the file.
inline uint64_t hash_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("content hash of '" + path.string() + "': cannot open for reading");
  std::vector<char> buf(1 << 20);
  uint64_t h = kFnv1a64Offset;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = fnv1a64(buf.data(), static_cast<size_t>(in.gcount()), h);
  }
  if (in.bad()) throw IoError("content hash of '" + path.string() + "': read error");
  return h;
}

}  // namespace hdssl::preprocess
