#pragma once
// Module weights in and out of safetensors with PyTorch's state-dict key names.
//
// Keys are what PyTorch's `state_dict()` would produce for the same module tree (parameters and buffers
// of each module, then its children, names joined with '.'), so an exported backbone loads into the
// reference FPN3d with strict=True and published weights converted to safetensors (keys unchanged) load
// here. Loading is strict by default and all-or-nothing: every missing key, unexpected key, shape or
// dtype mismatch is collected into one IoError before any tensor is touched.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/tensor_text.hpp"
#include "hdssl/io/safetensors.hpp"

namespace hdssl::io {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

namespace detail {
inline void collect_state(const torch::nn::Module& m, const std::string& prefix, NamedTensors& out) {
  for (const auto& p : m.named_parameters(/*recurse=*/false)) out.emplace_back(prefix + p.key(), p.value());
  for (const auto& b : m.named_buffers(/*recurse=*/false)) out.emplace_back(prefix + b.key(), b.value());
  for (const auto& c : m.named_children()) collect_state(*c.value(), prefix + c.key() + ".", out);
}

inline std::string join_list(const std::vector<std::string>& items, size_t max_items = 12) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > max_items) s += ", ... (" + std::to_string(items.size()) + " in all)";
  return s;
}

}  // namespace detail

/// The module's parameters and buffers (live tensors, not copies) under PyTorch state-dict names,
/// each prefixed with `prefix` (e.g. "backbone.").
inline NamedTensors state_dict(const torch::nn::Module& module, const std::string& prefix = "") {
  NamedTensors out;
  detail::collect_state(module, prefix, out);
  return out;
}

/// Copies `tensors` (named as state_dict(module, prefix) would name them) into the module. Entries
/// whose names do not start with `prefix` are ignored, so one file can hold several modules.
/// strict: missing or unexpected keys are errors (shape and dtype-kind mismatches always are).
/// `source` names the origin in messages (usually the file).
inline void load_state(torch::nn::Module& module, const NamedTensors& tensors, const std::string& prefix = "",
                       bool strict = true, const std::string& source = "weights") {
  std::map<std::string, torch::Tensor> given;
  for (const auto& kv : tensors)
    if (kv.first.compare(0, prefix.size(), prefix) == 0) given.emplace(kv.first, kv.second);
  const auto target = state_dict(module, prefix);
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> known;
  for (const auto& kv : target) {
    known.insert(kv.first);
    auto it = given.find(kv.first);
    if (it == given.end()) {
      missing.push_back(kv.first);
      continue;
    }
    const auto& src = it->second;
    if (src.sizes() != kv.second.sizes())
      mismatched.push_back(kv.first + " (file " + shape_string(src) + ", model " +
                           shape_string(kv.second) + ")");
    else if (src.is_floating_point() != kv.second.is_floating_point() || src.scalar_type() == torch::kBool)
      mismatched.push_back(kv.first + " (file dtype " + std::string(c10::toString(src.scalar_type())) +
                           ", model dtype " + std::string(c10::toString(kv.second.scalar_type())) + ")");
  }
  for (const auto& kv : given)
    if (!known.count(kv.first)) unexpected.push_back(kv.first);
  std::string problems;
  if (!mismatched.empty()) problems += " mismatched: " + detail::join_list(mismatched) + ";";
  if (strict && !missing.empty()) problems += " missing: " + detail::join_list(missing) + ";";
  if (strict && !unexpected.empty()) problems += " unexpected: " + detail::join_list(unexpected) + ";";
  if (!problems.empty())
    throw IoError(source + ": cannot load into the model" + (prefix.empty() ? "" : " (prefix '" + prefix + "')") +
                  ":" + problems);
  torch::NoGradGuard no_grad;
  for (const auto& kv : target) {
    auto it = given.find(kv.first);
    if (it != given.end()) kv.second.copy_(it->second);
  }
}

/// Writes the module's state to a safetensors file (atomically), keys prefixed with `prefix`.
inline void save_weights(const std::filesystem::path& path, const torch::nn::Module& module,
                         const std::string& prefix = "", const std::map<std::string, std::string>& metadata = {}) {
  NamedTensors out;
  for (const auto& kv : state_dict(module, prefix)) out.emplace_back(kv.first, kv.second.detach().cpu().contiguous());
  write_safetensors(path, out, metadata);
}

/// Reads a safetensors file into the module (see load_state). Throws IoError naming the file.
inline void load_weights(const std::filesystem::path& path, torch::nn::Module& module, const std::string& prefix = "",
                         bool strict = true) {
  load_state(module, read_safetensors(path).tensors, prefix, strict, "safetensors file '" + path.string() + "'");
}

}  // namespace hdssl::io
