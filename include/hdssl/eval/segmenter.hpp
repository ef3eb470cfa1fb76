#pragma once
// A trained segmentation model as one file, and the object that segments new scans with it.
//
// model.safetensors holds the weights (`backbone.*`, `head.*`) and, in its metadata under "hdssl_model",
// the record of everything needed to use them: the model's size and head, the classes, the preprocessing
// options of training time and the sliding-window options. hdssl-predict needs nothing else.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "hdssl/core/error.hpp"
#include "hdssl/core/volume.hpp"
#include "hdssl/eval/classes.hpp"
#include "hdssl/eval/inference.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/segmentation_model.hpp"
#include "hdssl/preprocess/pipeline.hpp"

namespace hdssl::eval {

inline constexpr const char* kSegmentationModelFormat = "hdssl-segmentation-model/1";

struct ModelRecord {
  nn::SegmentationModelOptions model;
  ClassMap classes;
  preprocess::PreprocessOptions preprocess;
  SlidingWindowOptions window;
  std::string setup;  ///< how it was trained (probe / finetune / scratch), for the record

  nlohmann::ordered_json to_json() const {
    nlohmann::ordered_json j;
    j["format"] = kSegmentationModelFormat;
    j["setup"] = setup;
    j["head"] = option_name(nn::kHeadNames, model.head);
    j["in_channels"] = model.in_channels;
    j["base_channels"] = model.base_channels;
    j["levels"] = model.levels;
    nlohmann::ordered_json cls;
    eval::to_json(cls, classes);
    j["classes"] = cls;
    nlohmann::json pre;
    preprocess::to_json(pre, preprocess);
    j["preprocess"] = pre;
    j["window"] = window.window;
    j["stride"] = window.stride;
    j["blend"] = option_name(kBlendNames, window.blend);
    return j;
  }

  static ModelRecord from_json(const nlohmann::ordered_json& j, const std::string& where) {
    try {
      if (j.value("format", std::string()) != kSegmentationModelFormat)
        throw IoError(where + ": not an hdssl segmentation model (format '" + j.value("format", std::string()) + "')");
      ModelRecord r;
      r.setup = j.at("setup").get<std::string>();
      const auto head = j.at("head").get<std::string>();
      if (head != "linear" && head != "nonlinear") throw IoError(where + ": unknown head '" + head + "'");
      r.model.head = head == "linear" ? nn::HeadKind::linear : nn::HeadKind::nonlinear;
      r.model.in_channels = j.at("in_channels").get<int64_t>();
      r.model.base_channels = j.at("base_channels").get<int64_t>();
      r.model.levels = j.at("levels").get<int64_t>();
      r.classes = classes_from_json(j.at("classes"), where + " classes");
      r.model.classes = static_cast<int64_t>(r.classes.size());
      r.preprocess = preprocess::options_from_json(nlohmann::json::parse(j.at("preprocess").dump()));
      r.window.window = j.at("window").get<std::array<int64_t, 3>>();
      r.window.stride = j.at("stride").get<std::array<int64_t, 3>>();
      const auto blend = j.at("blend").get<std::string>();
      for (const auto& [name, b] : kBlendNames)
        if (blend == name) r.window.blend = b;
      return r;
    } catch (const nlohmann::json::exception& e) {
      throw IoError(where + ": damaged model record (" + std::string(e.what()) + ")");
    } catch (const ConfigError& e) {
      throw IoError(where + ": damaged model record (" + std::string(e.what()) + ")");
    }
  }
};

/// Writes the model and its record to `path` (atomically).
inline void save_segmentation_model(const std::filesystem::path& path, const nn::SegmentationModel& model,
                                    const ModelRecord& record) {
  io::save_weights(path, *model, "", {{"format", kSegmentationModelFormat}, {"hdssl_model", record.to_json().dump()}});
}

/// Reads a model written by save_segmentation_model: `path` is the file or a folder holding model.safetensors.
inline std::pair<nn::SegmentationModel, ModelRecord> load_segmentation_model(const std::filesystem::path& path,
                                                                              const torch::Device& device) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "model.safetensors";
  const auto st = io::read_safetensors(file);
  const std::string where = "model '" + file.string() + "'";
  const auto it = st.metadata.find("hdssl_model");
  if (it == st.metadata.end())
    throw IoError(where + ": no hdssl_model record in its metadata (is it a backbone file? segmentation models come "
                          "from hdssl-linear-eval or hdssl-finetune)");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(where + ": damaged model record (" + std::string(e.what()) + ")");
  }
  ModelRecord record = ModelRecord::from_json(j, where);
  nn::SegmentationModel model(record.model);
  io::load_state(*model, st.tensors, "", true, where);
  model->to(device);
  model->eval();
  return {model, record};
}

/// What segmenting one scan gives, on the scan's own (RAS) grid.
struct Segmentation {
  Volume labels;               ///< class indices (0 background, c + 1 class c), the input's geometry
  torch::Tensor probabilities; ///< (K, X, Y, Z) float32 when asked for, else undefined
  preprocess::Preprocessed preprocessed;
};

/// Segments scans with a model: preprocessing as recorded, sliding windows on the device, sigmoid, label
/// map (most probable class >= 0.5) on the preprocessed grid mapped back by nearest neighbour, and, when
/// asked, the probabilities mapped back linearly.
class Segmenter {
 public:
  Segmenter(nn::SegmentationModel model, ModelRecord record, DeviceOptions device)
      : model_(std::move(model)), record_(std::move(record)), device_(device) {
    model_->to(device_.device);
    model_->eval();
  }

  const ModelRecord& record() const { return record_; }
  nn::SegmentationModel& model() { return model_; }

  /// Probabilities (K, X, Y, Z) on the preprocessed grid.
  torch::Tensor probabilities(const preprocess::Preprocessed& pre) {
    model_->eval();
    auto predictor = device_predictor([this](const torch::Tensor& x) { return model_->forward(x); }, device_);
    return infer_preprocessed(pre, predictor, record_.window, [](const torch::Tensor& t) { return torch::sigmoid(t); });
  }

  Segmentation segment(const Volume& input, bool with_probabilities = false) {
    Segmentation s;
    s.preprocessed = preprocess::preprocess(input, record_.preprocess);
    const auto p = probabilities(s.preprocessed);
    const auto labels = ClassMap::label_map(p);
    const auto back = onto_input_grid(labels, s.preprocessed, input, preprocess::Interpolation::nearest, 0);
    s.labels = like_input(input, back, back.scalar_type() == torch::kUInt8 ? 2 /*uint8*/ : 4 /*int16*/);
    if (with_probabilities) s.probabilities = onto_input_grid(p, s.preprocessed, input, preprocess::Interpolation::linear, 0);
    return s;
  }

 private:
  nn::SegmentationModel model_;
  ModelRecord record_;
  DeviceOptions device_;
};

}  // namespace hdssl::eval
