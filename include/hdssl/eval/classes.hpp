#pragma once
// Segmentation classes: which label values of the label maps make up each structure.
//
// `--classes` is a JSON object (inline or in a file) of class name -> label value or list of values,
// e.g. {"frontal": [3, 4, 5, 6], "cerebellum": [91, 92]}: several atlas regions merge into one structure,
// and every value named by no class is background. Classes keep the order of the object. A network
// predicts one sigmoid channel per class (no background channel, method.md 8); a predicted label map
// holds 0 for background and c + 1 for class c (the most probable class above the threshold).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::eval {

struct SegmentationClass {
  std::string name;
  std::vector<int64_t> values;  ///< label values that belong to the class
};

class ClassMap {
 public:
  ClassMap() = default;
  explicit ClassMap(std::vector<SegmentationClass> classes) : classes_(std::move(classes)) { validate(); }

  /// Every distinct non-zero value of `labels` (any integer tensor) as its own class, named by its value.
  static ClassMap from_values(const std::set<int64_t>& values) {
    std::vector<SegmentationClass> c;
    for (int64_t v : values)
      if (v != 0) c.push_back({std::to_string(v), {v}});
    return ClassMap(std::move(c));
  }

  size_t size() const { return classes_.size(); }
  bool empty() const { return classes_.empty(); }
  const std::vector<SegmentationClass>& classes() const { return classes_; }
  const SegmentationClass& operator[](size_t i) const { return classes_.at(i); }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& c : classes_) n.push_back(c.name);
    return n;
  }

  /// Label map (X, Y, Z), any integer type -> float (K, X, Y, Z) of 0/1 per class.
  torch::Tensor targets(const torch::Tensor& labels) const {
    auto out = torch::zeros({static_cast<int64_t>(size()), labels.size(0), labels.size(1), labels.size(2)},
                            labels.options().dtype(torch::kFloat32));
    for (size_t k = 0; k < size(); ++k) {
      auto m = torch::zeros(labels.sizes(), labels.options().dtype(torch::kBool));
      for (int64_t v : classes_[k].values) m.logical_or_(labels == v);
      out[static_cast<int64_t>(k)].copy_(m);
    }
    return out;
  }

  /// Class probabilities (K, X, Y, Z) -> label map (X, Y, Z) uint8 (int16 past 255 classes): the most
  /// probable class where its probability is >= threshold, else 0.
  static torch::Tensor label_map(const torch::Tensor& probabilities, double threshold = 0.5) {
    const auto best = probabilities.max(0);
    const auto value = std::get<0>(best), index = std::get<1>(best);
    const auto dtype = probabilities.size(0) < 256 ? torch::kUInt8 : torch::kInt16;
    return torch::where(value >= threshold, index + 1, torch::zeros_like(index)).to(dtype);
  }

  /// The one-hot form (K, X, Y, Z) of a predicted label map from label_map().
  torch::Tensor one_hot_prediction(const torch::Tensor& label_map) const {
    auto out = torch::empty({static_cast<int64_t>(size()), label_map.size(0), label_map.size(1), label_map.size(2)},
                            label_map.options().dtype(torch::kFloat32));
    for (size_t k = 0; k < size(); ++k) out[static_cast<int64_t>(k)].copy_(label_map == static_cast<int64_t>(k + 1));
    return out;
  }

 private:
  void validate() const {
    std::set<std::string> names;
    std::set<int64_t> used;
    for (const auto& c : classes_) {
      if (c.name.empty()) throw ConfigError("classes: a class has an empty name");
      if (!names.insert(c.name).second) throw ConfigError("classes: class '" + c.name + "' is named twice");
      if (c.values.empty()) throw ConfigError("classes: class '" + c.name + "' lists no label value");
      for (int64_t v : c.values) {
        if (v == 0) throw ConfigError("classes: class '" + c.name + "' lists label value 0, which is background");
        if (!used.insert(v).second)
          throw ConfigError("classes: label value " + std::to_string(v) + " belongs to two classes (one is '" + c.name + "')");
      }
    }
  }
  std::vector<SegmentationClass> classes_;
};

inline void to_json(nlohmann::ordered_json& j, const ClassMap& m) {
  j = nlohmann::ordered_json::object();
  for (const auto& c : m.classes()) j[c.name] = c.values;
}

/// Parses a classes object (see the top of this file). `where` names its origin in errors.
inline ClassMap classes_from_json(const nlohmann::ordered_json& j, const std::string& where) {
  if (!j.is_object() || j.empty())
    throw ConfigError(where + ": expected a non-empty JSON object of class name -> label value(s)");
  std::vector<SegmentationClass> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    SegmentationClass c{it.key(), {}};
    auto add = [&](const nlohmann::ordered_json& v) {
      if (!v.is_number_integer())
        throw ConfigError(where + ": class '" + c.name + "': label values must be integers, got " + v.dump());
      c.values.push_back(v.get<int64_t>());
    };
    if (it.value().is_array())
      for (const auto& v : it.value()) add(v);
    else
      add(it.value());
    out.push_back(std::move(c));
  }
  try {
    return ClassMap(std::move(out));
  } catch (const ConfigError& e) {
    throw ConfigError(where + ": " + e.what());
  }
}

namespace detail {
/// Parses a classes object, refusing a class name given twice (a JSON parser would keep only the last one,
/// and the other's label values would silently become background).
inline nlohmann::ordered_json parse_without_duplicates(const std::string& text, const std::string& where) {
  std::set<std::string> seen;
  return nlohmann::ordered_json::parse(text, [&](int depth, nlohmann::ordered_json::parse_event_t event,
                                                 nlohmann::ordered_json& parsed) {
    if (depth == 1 && event == nlohmann::ordered_json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second)
      throw ConfigError(where + ": class '" + parsed.get<std::string>() + "' is named twice");
    return true;
  });
}
}  // namespace detail

/// `text` is inline JSON (starts with '{') or the path of a JSON file.
inline ClassMap read_classes(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    try {
      return classes_from_json(detail::parse_without_duplicates(text, "classes"), "classes");
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(std::string("classes: not valid JSON: ") + e.what());
    }
  }
  std::ifstream in(text);
  if (!in) throw IoError("classes file '" + text + "': cannot open");
  const std::string where = "classes file '" + text + "'";
  const std::string body((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return classes_from_json(detail::parse_without_duplicates(body, where), where);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(where + ": not valid JSON: " + e.what());
  }
}

}  // namespace hdssl::eval
