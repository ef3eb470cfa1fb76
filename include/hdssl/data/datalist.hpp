#pragma once
// Which files a run reads: a folder of NIfTI files, or a MONAI / Medical Segmentation Decathlon datalist
//   {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
//    "validation": [...], "test": [{"image": ...} or "imagesTs/b.nii.gz", ...]}
// with relative paths resolved against the datalist's folder (MONAI's `base_dir` default). Other top-level
// keys (name, description, numTraining, ...) and other keys of an entry are ignored, as MONAI does;
// a list that is not an array, an entry without an image, or a path that is not a string is an IoError
// naming the file, the list and the entry.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"

namespace hdssl::data {

/// One image and, for labelled lists, its integer label map on the same grid.
struct Sample {
  std::filesystem::path image;
  std::optional<std::filesystem::path> label;
};

struct Datalist {
  std::vector<Sample> training, validation, test;
  std::filesystem::path source;  ///< the folder or file it was read from
};

/// True for the file names hdssl reads as NIfTI: *.nii and *.nii.gz.
inline bool is_nifti_name(const std::filesystem::path& p) {
  const std::string n = p.filename().string();
  auto ends_with = [&](const std::string& s) { return n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
  return ends_with(".nii") || ends_with(".nii.gz");
}

namespace detail {

inline std::vector<Sample> read_list(const nlohmann::json& j, const char* list, const std::filesystem::path& base,
                                     const std::string& where) {
  std::vector<Sample> out;
  if (!j.contains(list)) return out;
  const auto& arr = j.at(list);
  if (!arr.is_array()) throw IoError(where + "'" + list + "' must be a list of entries");
  auto resolve = [&](const nlohmann::json& v, size_t i, const char* key) {
    if (!v.is_string() || v.get<std::string>().empty())
      throw IoError(where + list + "[" + std::to_string(i) + "]." + key + " must be a non-empty path string");
    std::filesystem::path p(v.get<std::string>());
    return p.is_absolute() ? p : (base / p).lexically_normal();
  };
  for (size_t i = 0; i < arr.size(); ++i) {
    const auto& e = arr[i];
    Sample s;
    if (e.is_string()) {
      s.image = resolve(e, i, "image");
    } else if (e.is_object()) {
      if (!e.contains("image")) throw IoError(where + list + "[" + std::to_string(i) + "] has no \"image\"");
      s.image = resolve(e.at("image"), i, "image");
      if (e.contains("label") && !e.at("label").is_null()) s.label = resolve(e.at("label"), i, "label");
    } else {
      throw IoError(where + list + "[" + std::to_string(i) + "] must be an object {\"image\": ...} or a path");
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace detail

/// A folder: every *.nii / *.nii.gz directly inside it, sorted by name, as the training list (no labels).
/// A file: a datalist JSON as described at the top of this file.
inline Datalist read_datalist(const std::filesystem::path& path) {
  Datalist d;
  d.source = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(path, ec))
      if (e.is_regular_file() && is_nifti_name(e.path())) d.training.push_back({e.path(), std::nullopt});
    if (ec) throw IoError("data folder '" + path.string() + "': cannot list (" + ec.message() + ")");
    std::sort(d.training.begin(), d.training.end(),
              [](const Sample& a, const Sample& b) { return a.image.filename() < b.image.filename(); });
    if (d.training.empty()) throw IoError("data folder '" + path.string() + "': no .nii or .nii.gz files in it");
    return d;
  }
  const std::string where = "datalist '" + path.string() + "': ";
  std::ifstream in(path);
  if (!in) throw IoError(where + "cannot open (not a folder, and not a readable file)");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw IoError(where + "not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw IoError(where + "must be a JSON object with a \"training\" list");
  const auto base = path.parent_path();
  d.training = detail::read_list(j, "training", base, where);
  d.validation = detail::read_list(j, "validation", base, where);
  d.test = detail::read_list(j, "test", base, where);
  if (d.training.empty() && d.validation.empty() && d.test.empty())
    throw IoError(where + "has no \"training\", \"validation\" or \"test\" entries");
  return d;
}

/// The datalist as JSON ({"training": [...], "validation": [...], "test": [...]}), paths absolute so the
/// file reads the same from any folder; empty lists are left out.
inline nlohmann::json datalist_json(const Datalist& d) {
  auto list = [](const std::vector<Sample>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& s : v) {
      nlohmann::json e = {{"image", std::filesystem::absolute(s.image).lexically_normal().string()}};
      if (s.label) e["label"] = std::filesystem::absolute(*s.label).lexically_normal().string();
      a.push_back(std::move(e));
    }
    return a;
  };
  nlohmann::json j = nlohmann::json::object();
  if (!d.training.empty()) j["training"] = list(d.training);
  if (!d.validation.empty()) j["validation"] = list(d.validation);
  if (!d.test.empty()) j["test"] = list(d.test);
  return j;
}

}  // namespace hdssl::data
