#pragma once
// safetensors: the weight format shared with the PyTorch ecosystem.
//
// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of JSON ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}), then
// the raw little-endian tensor bytes; offsets are relative to the start of that data block.
//
// The reader trusts nothing: header length, JSON, dtypes, shapes, offsets and sizes are all checked
// against the file before a byte is copied, so a damaged file is an IoError, never a crash or a huge
// allocation. The writer is atomic (io/atomic_file.hpp).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/io/atomic_file.hpp"

namespace hdssl::io {

/// The tensors of a safetensors file in file order (ordered by data offset), plus its metadata.
struct SafeTensors {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const {
    for (const auto& kv : tensors)
      if (kv.first == name) return true;
    return false;
  }
  const torch::Tensor& at(const std::string& name) const {
    for (const auto& kv : tensors)
      if (kv.first == name) return kv.second;
    throw IoError("safetensors: no tensor named '" + name + "'");
  }
};

namespace detail {

struct SafeDtype {
  const char* name;
  torch::ScalarType type;
  size_t size;
};

inline const std::vector<SafeDtype>& safetensors_dtypes() {
  static const std::vector<SafeDtype> table = {
      {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
      {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
      {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
      {"BOOL", torch::kBool, 1}};
  return table;
}

inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// Largest header accepted: the format's own reference implementation refuses more than 100 MB.
constexpr uint64_t kMaxSafetensorsHeader = 100ull * 1000 * 1000;

}  // namespace detail

/// Reads a whole safetensors file. Throws IoError naming the file and the reason on any damage.
inline SafeTensors read_safetensors(const std::filesystem::path& path) {
  const std::string where = "safetensors file '" + path.string() + "': ";
  if (!detail::host_is_little_endian()) throw IoError(where + "big-endian hosts are not supported");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw IoError(where + "not found or not a regular file");
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(where + "cannot stat: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(where + "cannot open for reading");
  if (file_size < 8) throw IoError(where + "too short (" + std::to_string(file_size) + " bytes) to hold a header length");

  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len == 0 || header_len > detail::kMaxSafetensorsHeader || header_len > file_size - 8)
    throw IoError(where + "header length " + std::to_string(header_len) + " is impossible for a file of " +
                  std::to_string(file_size) + " bytes");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw IoError(where + "cannot read the JSON header");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    throw IoError(where + "header is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw IoError(where + "header is not a JSON object");

  const uint64_t data_size = file_size - 8 - header_len;
  SafeTensors out;
  struct Entry {
    std::string name;
    torch::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw IoError(where + "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw IoError(where + "__metadata__ entry '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = where + "tensor '" + name + "': ";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw IoError(what + "entry needs dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) throw IoError(what + "dtype is not a string");
    const std::string dtype = v["dtype"].get<std::string>();
    const detail::SafeDtype* dt = nullptr;
    for (const auto& d : detail::safetensors_dtypes())
      if (dtype == d.name) dt = &d;
    if (!dt) throw IoError(what + "unsupported dtype '" + dtype + "'");
    if (!v["shape"].is_array()) throw IoError(what + "shape is not an array");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw IoError(what + "shape holds a value that is not a non-negative integer");
      const uint64_t n = d.get<uint64_t>();
      if (n > data_size || (n > 0 && numel > data_size / n))
        throw IoError(what + "shape is larger than the file's data");
      numel *= n;
      shape.push_back(static_cast<int64_t>(n));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw IoError(what + "data_offsets must be two non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      throw IoError(what + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                    ") fall outside the " + std::to_string(data_size) + "-byte data block (file truncated?)");
    if (end - begin != numel * dt->size)
      throw IoError(what + "holds " + std::to_string(end - begin) + " bytes but dtype " + dtype + " and its shape need " +
                    std::to_string(numel * dt->size));
    entries.push_back({name, dt->type, std::move(shape), begin, end});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i)
    if (entries[i].begin < entries[i - 1].end)
      throw IoError(where + "tensors '" + entries[i - 1].name + "' and '" + entries[i].name + "' overlap");

  std::vector<char> data(data_size);
  if (data_size > 0) {
    in.read(data.data(), static_cast<std::streamsize>(data_size));
    if (!in) throw IoError(where + "cannot read the data block");
  }
  for (auto& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data.data() + e.begin, e.end - e.begin);
    if (e.type == torch::kBool && t.numel() > 0) {
      // A bool byte other than 0/1 is undefined behaviour in C++: refuse it.
      const auto* raw = reinterpret_cast<const unsigned char*>(data.data() + e.begin);
      for (uint64_t k = 0; k < e.end - e.begin; ++k)
        if (raw[k] > 1) throw IoError(where + "tensor '" + e.name + "': BOOL byte " + std::to_string(raw[k]) + " is not 0 or 1");
    }
    out.tensors.emplace_back(std::move(e.name), std::move(t));
  }
  return out;
}

/// Writes tensors (any device/layout: copied to contiguous CPU) and string metadata, atomically.
inline void write_safetensors(const std::filesystem::path& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string where = "safetensors file '" + path.string() + "': ";
  if (!detail::host_is_little_endian()) throw IoError(where + "big-endian hosts are not supported");
  nlohmann::json j = nlohmann::json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  std::vector<torch::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& kv : tensors) {
    if (kv.first == "__metadata__" || j.contains(kv.first))
      throw IoError(where + "tensor name '" + kv.first + "' is reserved or repeated");
    const detail::SafeDtype* dt = nullptr;
    for (const auto& d : detail::safetensors_dtypes())
      if (kv.second.scalar_type() == d.type) dt = &d;
    if (!dt) throw IoError(where + "tensor '" + kv.first + "' has a dtype safetensors cannot hold");
    torch::Tensor t = kv.second.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dt->size;
    j[kv.first] = {{"dtype", dt->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(std::move(t));
  }
  std::string header = j.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // the format pads the header to 8 bytes with spaces

  write_atomically(
      path,
      [&](const std::filesystem::path& tmp) {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw IoError(where + "cannot open '" + tmp.string() + "' for writing");
        unsigned char len_bytes[8];
        uint64_t n = header.size();
        for (int i = 0; i < 8; ++i, n >>= 8) len_bytes[i] = static_cast<unsigned char>(n & 0xff);
        out.write(reinterpret_cast<const char*>(len_bytes), 8);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        for (const auto& t : blobs)
          out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
        out.flush();
        if (!out) throw IoError(where + "write failed (disk full?)");
      },
      where);
}

}  // namespace hdssl::io
