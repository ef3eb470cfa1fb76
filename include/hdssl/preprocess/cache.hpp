#pragma once
// A folder of preprocessed volumes, so training never redoes preprocessing.
//
// Key: FNV-1a 64 (content_hash.hpp; not cryptographic) of the key material, which is
//   the cache format version + the options as JSON (every field, so equal options give equal keys)
//   + for each source file (image, then labels, ...): the FNV-1a 64 of its bytes and its size.
// Entry: <folder>/<16 hex digits>.safetensors holding tensors image (float32 X,Y,Z), body_mask (bool),
//   affine (float64 4x4), optionally labels and labels_affine, and metadata: format, the full key
//   material, the pipeline's PreprocessInfo, the Volume header fields, and a checksum (FNV-1a 64 of
//   every tensor's bytes in order).
//
// Writing is atomic (io/atomic_file.hpp): the entry is written to a temporary file with a unique name in
// the same folder, fsync'ed, renamed over the final name (atomic on POSIX file systems), and the folder
// is fsync'ed.
// Two processes filling the same key at once both compute, both rename; the last rename wins and
// readers only ever see a complete file. Nothing is locked, so a reader never waits on a writer.
//
// Loading trusts nothing: an unreadable file, a missing or mistyped tensor, a shape mismatch, another
// format version, different key material or a checksum mismatch is reported through the warning handler
// and treated as a miss, and the entry is rebuilt and replaced.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/volume.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/preprocess/content_hash.hpp"
#include "hdssl/preprocess/pipeline.hpp"

namespace hdssl::preprocess {

/// Bump when the entry layout or the pipeline's numerical behaviour changes: old entries become misses.
constexpr const char* kPreprocessCacheFormat = "hdssl-preprocessed-v1";

namespace detail {

inline nlohmann::json meta_to_json(const Volume& v) {
  const NiftiMeta& m = v.meta;
  nlohmann::json a = nlohmann::json::array();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a.push_back(m.source_affine(r, c));
  return {{"source", v.source},
          {"nifti_version", m.nifti_version},
          {"datatype", m.datatype},
          {"scl_slope", m.scl_slope},
          {"scl_inter", m.scl_inter},
          {"qform_code", m.qform_code},
          {"sform_code", m.sform_code},
          {"xyz_units", m.xyz_units},
          {"time_units", m.time_units},
          {"intent_code", m.intent_code},
          {"description", m.description},
          {"source_shape", m.source_shape},
          {"source_affine", a},
          {"num_volumes", m.num_volumes},
          {"volume_index", m.volume_index},
          {"non_finite_count", m.non_finite_count}};
}

inline void meta_from_json(const nlohmann::json& j, Volume& v) {
  NiftiMeta& m = v.meta;
  j.at("source").get_to(v.source);
  j.at("nifti_version").get_to(m.nifti_version);
  j.at("datatype").get_to(m.datatype);
  j.at("scl_slope").get_to(m.scl_slope);
  j.at("scl_inter").get_to(m.scl_inter);
  j.at("qform_code").get_to(m.qform_code);
  j.at("sform_code").get_to(m.sform_code);
  j.at("xyz_units").get_to(m.xyz_units);
  j.at("time_units").get_to(m.time_units);
  j.at("intent_code").get_to(m.intent_code);
  j.at("description").get_to(m.description);
  j.at("source_shape").get_to(m.source_shape);
  const auto& a = j.at("source_affine");
  if (!a.is_array() || a.size() != 16)
    throw IoError("metadata 'source_affine': expected an array of 16 numbers, got " + a.dump());
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m.source_affine(r, c) = a[r * 4 + c].get<double>();
  j.at("num_volumes").get_to(m.num_volumes);
  j.at("volume_index").get_to(m.volume_index);
  j.at("non_finite_count").get_to(m.non_finite_count);
}

inline torch::Tensor affine_tensor(const Eigen::Matrix4d& a) {
  auto t = torch::empty({4, 4}, torch::kFloat64);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) t[r][c] = a(r, c);
  return t;
}

inline Eigen::Matrix4d affine_matrix(const torch::Tensor& t) {
  const auto c = t.contiguous();
  const double* p = c.data_ptr<double>();
  Eigen::Matrix4d a;
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 4; ++k) a(r, k) = p[r * 4 + k];
  return a;
}

inline uint64_t tensors_checksum(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  uint64_t h = kFnv1a64Offset;
  for (const auto& kv : tensors) {
    h = fnv1a64(kv.first, h);
    const auto t = kv.second.contiguous();
    h = fnv1a64(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), h);
  }
  return h;
}


}  // namespace detail

/// The identity of one cache entry: the file name stem and the material it was hashed from.
struct CacheKey {
  std::string id;        ///< 16 hex digits
  std::string material;  ///< stored in the entry and compared on load
};

class PreprocessCache {
 public:
  using WarningHandler = std::function<void(const std::string&)>;

  /// Opens (creating if needed) the cache folder. Throws IoError if it cannot be created.
  explicit PreprocessCache(std::filesystem::path folder) : folder_(std::move(folder)) {
    std::error_code ec;
    std::filesystem::create_directories(folder_, ec);
    if (ec || !std::filesystem::is_directory(folder_))
      throw IoError("preprocess cache folder '" + folder_.string() + "': cannot create (" + ec.message() + ")");
    warn_ = [](const std::string& msg) { std::cerr << "hdssl warning: " << msg << std::endl; };
  }

  const std::filesystem::path& folder() const { return folder_; }
  /// Where damaged-entry warnings go (default: standard error).
  void set_warning_handler(WarningHandler h) { warn_ = std::move(h); }

  /// Key of the result of preprocessing `sources` (the image file first, then e.g. its labels) with `opt`.
  CacheKey key(const std::vector<std::filesystem::path>& sources, const PreprocessOptions& opt) const {
    nlohmann::json m;
    m["format"] = kPreprocessCacheFormat;
    m["options"] = opt;
    m["sources"] = nlohmann::json::array();
    for (const auto& s : sources) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(s, ec);
      if (ec) throw IoError("preprocess cache: source '" + s.string() + "': " + ec.message());
      m["sources"].push_back({{"fnv1a64", hex64(hash_file(s))}, {"size", size}});
    }
    CacheKey k;
    k.material = m.dump();
    k.id = hex64(fnv1a64(k.material));
    return k;
  }

  std::filesystem::path entry_path(const CacheKey& k) const { return folder_ / (k.id + ".safetensors"); }

  /// The cached result, or nullopt when absent or damaged (damage is reported to the warning handler).
  std::optional<Preprocessed> load(const CacheKey& k) const {
    const auto path = entry_path(k);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return std::nullopt;
    try {
      return decode(io::read_safetensors(path), k);
    } catch (const std::exception& e) {
      warn_("preprocess cache entry '" + path.string() + "' is damaged and will be rebuilt: " + e.what());
      return std::nullopt;
    }
  }

  /// Writes `p` under `k` atomically (see the top of this file).
  void store(const CacheKey& k, const Preprocessed& p) const {
    std::vector<std::pair<std::string, torch::Tensor>> tensors = {
        {"image", p.image.data.to(torch::kCPU).contiguous()},
        {"body_mask", p.body_mask.to(torch::kCPU).to(torch::kBool).contiguous()},
        {"affine", detail::affine_tensor(p.image.affine)}};
    nlohmann::json labels_meta = nullptr;
    if (p.labels) {
      tensors.emplace_back("labels", p.labels->data.to(torch::kCPU).contiguous());
      tensors.emplace_back("labels_affine", detail::affine_tensor(p.labels->affine));
      labels_meta = detail::meta_to_json(*p.labels);
    }
    nlohmann::json info = p.info;
    const std::map<std::string, std::string> metadata = {
        {"format", kPreprocessCacheFormat},
        {"key_material", k.material},
        {"info", info.dump()},
        {"image_meta", detail::meta_to_json(p.image).dump()},
        {"labels_meta", labels_meta.dump()},
        {"checksum", hex64(detail::tensors_checksum(tensors))}};
    // Atomic (io/atomic_file.hpp): concurrent writers of the same key each rename a whole entry into place.
    io::write_safetensors(entry_path(k), tensors, metadata);
  }

  /// Cached result for (sources, opt), or compute() stored under its key. compute() must produce what
  /// preprocessing `sources` with `opt` gives: the cache cannot check that, it only keys by them.
  Preprocessed get_or_compute(const std::vector<std::filesystem::path>& sources, const PreprocessOptions& opt,
                              const std::function<Preprocessed()>& compute) {
    const CacheKey k = key(sources, opt);
    if (auto hit = load(k)) {
      ++hits_;
      return std::move(*hit);
    }
    ++misses_;
    Preprocessed p = compute();
    store(k, p);
    return p;
  }

  /// Deletes temporary files left by writers that died mid-write (`.<key>.safetensors.tmp-*`) and are older than
  /// `min_age` (younger ones may belong to a writer still at work). Returns how many were removed.
  int64_t remove_stale_temporaries(std::chrono::seconds min_age = std::chrono::hours(1)) const {
    int64_t removed = 0;
    std::error_code ec;
    const auto now = std::filesystem::file_time_type::clock::now();
    for (const auto& e : std::filesystem::directory_iterator(folder_, ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() < 2 || name[0] != '.' || name.find(".tmp-") == std::string::npos) continue;
      const auto t = std::filesystem::last_write_time(e.path(), ec);
      if (ec || now - t < min_age) continue;
      if (std::filesystem::remove(e.path(), ec)) ++removed;
    }
    return removed;
  }

  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }

 private:
  Preprocessed decode(const io::SafeTensors& st, const CacheKey& k) const {
    auto need = [&](const std::string& key) -> const std::string& {
      const auto it = st.metadata.find(key);
      if (it == st.metadata.end()) throw IoError("metadata '" + key + "' is missing");
      return it->second;
    };
    if (need("format") != kPreprocessCacheFormat)
      throw IoError("format '" + need("format") + "' is not " + kPreprocessCacheFormat);
    if (need("key_material") != k.material) throw IoError("it was made from other sources or options (key collision)");
    for (const char* name : {"image", "body_mask", "affine"})
      if (!st.contains(name)) throw IoError(std::string("tensor '") + name + "' is missing");
    const bool has_labels = st.contains("labels");
    std::vector<std::pair<std::string, torch::Tensor>> tensors = {
        {"image", st.at("image")}, {"body_mask", st.at("body_mask")}, {"affine", st.at("affine")}};
    if (has_labels) {
      if (!st.contains("labels_affine")) throw IoError("tensor 'labels_affine' is missing");
      tensors.emplace_back("labels", st.at("labels"));
      tensors.emplace_back("labels_affine", st.at("labels_affine"));
    }
    if (hex64(detail::tensors_checksum(tensors)) != need("checksum")) throw IoError("checksum mismatch");

    Preprocessed p;
    p.image.data = st.at("image");
    p.body_mask = st.at("body_mask");
    const auto& aff = st.at("affine");
    if (p.image.data.scalar_type() != torch::kFloat32 || p.image.data.dim() != 3)
      throw IoError("tensor 'image' is not a 3-D float32 tensor");
    if (p.body_mask.scalar_type() != torch::kBool || p.body_mask.sizes() != p.image.data.sizes())
      throw IoError("tensor 'body_mask' is not a bool tensor of the image's shape");
    if (aff.scalar_type() != torch::kFloat64 || aff.sizes() != torch::IntArrayRef({4, 4}))
      throw IoError("tensor 'affine' is not a float64 4x4 tensor");
    p.image.affine = detail::affine_matrix(aff);
    try {
      detail::meta_from_json(nlohmann::json::parse(need("image_meta")), p.image);
      nlohmann::json::parse(need("info")).get_to(p.info);
      if (has_labels) {
        Volume lab;
        lab.data = st.at("labels");
        const auto& laff = st.at("labels_affine");
        if (lab.data.sizes() != p.image.data.sizes()) throw IoError("tensor 'labels' does not have the image's shape");
        if (laff.scalar_type() != torch::kFloat64 || laff.sizes() != torch::IntArrayRef({4, 4}))
          throw IoError("tensor 'labels_affine' is not a float64 4x4 tensor");
        lab.affine = detail::affine_matrix(laff);
        detail::meta_from_json(nlohmann::json::parse(need("labels_meta")), lab);
        p.labels = std::move(lab);
      }
    } catch (const nlohmann::json::exception& e) {
      throw IoError(std::string("metadata is not valid: ") + e.what());
    }
    return p;
  }

  std::filesystem::path folder_;
  WarningHandler warn_;
  std::atomic<int64_t> hits_{0}, misses_{0};
};

}  // namespace hdssl::preprocess
