#pragma once
// Downstream training and evaluation end to end (method.md 7, 8), as library code:
//
//   hdssl::train::DownstreamConfig c;  c.data = "dataset.json";  c.weights = "run/";  c.out = "probe/";
//   hdssl::train::SegmentationTrainer(c).run();
//
// The data path: datalist (or K folds of it) -> preprocess with labels (cache) -> class-index maps ->
// SegmentationPatchSampler -> SegmentationModel (backbone frozen / fine-tuned / from scratch, FinetuneSchedule)
// -> BCE + soft Dice -> Adam; soft validation Dice every `val_every` steps keeps the best weights; then
// every test volume is segmented on its own grid (eval::Segmenter), written, scored (hard Dice) and drawn.
// Outputs in DIR (per fold in DIR/fold-<f> with cross-validation): model.safetensors (what hdssl-predict
// reads), results.json / results.md, predictions/*.nii.gz, predictions/*.png, metrics.jsonl, curve.png,
// checkpoints/, config.json. The same pieces as pre-training: strict config, ProgressLog, CheckpointStore
// (exact resume: batch b = f(seed, b)), stop signals, non-finite steps skipped.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/threads.hpp"
#include "hdssl/data/datalist.hpp"
#include "hdssl/eval/classes.hpp"
#include "hdssl/eval/dice.hpp"
#include "hdssl/eval/folds.hpp"
#include "hdssl/eval/overlay_png.hpp"
#include "hdssl/eval/segmenter.hpp"
#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/nifti.hpp"
#include "hdssl/loss/segmentation.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/nn/segmentation_model.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/preprocess/nifti_files.hpp"
#include "hdssl/sampling/segmentation_patches.hpp"
#include "hdssl/train/checkpoint_store.hpp"
#include "hdssl/train/curve.hpp"
#include "hdssl/train/distributed.hpp"
#include "hdssl/train/downstream_config.hpp"
#include "hdssl/train/finetune_schedule.hpp"
#include "hdssl/train/gradient_reducer.hpp"
#include "hdssl/train/pretrain_config.hpp"
#include "hdssl/train/progress.hpp"
#include "hdssl/train/stop_signal.hpp"

namespace hdssl::train {

/// How a downstream run ended; `results` is what DIR/results.json holds.
struct DownstreamResult {
  bool stopped = false;  ///< by a signal (a checkpoint was written; re-run to resume)
  nlohmann::ordered_json results;
};

/// The file name a prediction of `image` gets: its name without .nii / .nii.gz.
inline std::string volume_stem(const std::filesystem::path& image) {
  std::string n = image.filename().string();
  for (const char* ext : {".nii.gz", ".nii"}) {
    const std::string e(ext);
    if (n.size() > e.size() && n.compare(n.size() - e.size(), e.size(), e) == 0) return n.substr(0, n.size() - e.size());
  }
  return n;
}

/// Hard Dice per class of a predicted class-index map against a label map (both (X, Y, Z), one grid).
inline std::vector<double> label_dice(const eval::ClassMap& classes, const torch::Tensor& predicted_classes,
                                      const torch::Tensor& labels) {
  return eval::dice_per_class(classes.one_hot_prediction(predicted_classes), classes.targets(labels));
}

/// results.md: per-volume Dice per class and the means, as a Markdown table.
inline std::string results_markdown(const nlohmann::ordered_json& r) {
  std::string md = "# " + r.value("title", std::string("Dice")) + "\n\n";
  const auto names = r.at("classes").get<std::vector<std::string>>();
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", v);
    return std::string(b);
  };
  auto table = [&](const nlohmann::ordered_json& volumes) {
    std::string t = "| volume |";
    for (const auto& n : names) t += " " + n + " |";
    t += " mean |\n|---|";
    for (size_t i = 0; i <= names.size(); ++i) t += "---:|";
    t += "\n";
    for (const auto& v : volumes) {
      if (!v.contains("dice")) continue;
      t += "| " + v.at("volume").get<std::string>() + " |";
      for (const auto& n : names) t += " " + num(v.at("dice").at(n).get<double>()) + " |";
      t += " " + num(v.at("mean_dice").get<double>()) + " |\n";
    }
    return t;
  };
  if (r.contains("folds")) {
    for (const auto& f : r.at("folds")) {
      md += "## fold " + std::to_string(f.at("fold").get<int64_t>()) + "\n\n" + table(f.at("volumes"));
      if (f.contains("mean_dice")) md += "\nmean Dice: " + num(f.at("mean_dice").get<double>()) + "\n\n";
    }
    if (r.contains("mean_dice"))
      md += "**mean Dice over folds: " + num(r.at("mean_dice").get<double>()) + " +- " + num(r.at("std_dice").get<double>()) + "**\n";
  } else {
    md += table(r.at("volumes"));
    if (r.contains("mean_dice")) md += "\n**mean Dice: " + num(r.at("mean_dice").get<double>()) + "**\n";
  }
  return md;
}

class SegmentationTrainer {
 public:
  explicit SegmentationTrainer(DownstreamConfig config, std::ostream& console = std::cout)
      : c_(std::move(config)), console_(&console) {}

  /// Trains and evaluates (every fold with cross-validation); writes DIR/results.json and results.md.
  DownstreamResult run() {
    if (c_.data.empty()) throw ConfigError("downstream option 'data': required (a MONAI datalist JSON with labels)");
    if (c_.out.empty()) throw ConfigError("downstream option 'out': required (the output folder)");
    // Data parallel (train/distributed.hpp) as in pre-training: rank r takes the patches of stream
    // step * world + r, gradients are averaged over the ranks, and rank 0 alone validates, logs, writes
    // checkpoints and models and scores the test list (the other ranks wait at the next step, or stop).
    env_ = dist::LaunchEnvironment::from_environment();
    group_ = dist::ProcessGroup::join(env_, c_.distributed, device());
    if (!group_.is_main()) console_ = &null_console_;
    if (c_.setup == "probe" && weights_none() )
      say("note: probing a random-initialised backbone (--weights none): the baseline a pre-trained one must beat");
    const data::Datalist list = data::read_datalist(c_.data);
    if (list.training.empty()) throw DataError("data '" + c_.data + "': the training list is empty");
    const std::filesystem::path out(c_.out);
    make_folder(out);
    DownstreamResult result;
    if (c_.folds >= 2) {
      const auto splits = eval::write_fold_datalists(list, static_cast<size_t>(c_.folds), c_.seed, out / "splits");
      say(std::to_string(c_.folds) + "-fold cross-validation over " + std::to_string(list.training.size()) +
          " training volumes; splits in " + (out / "splits").string());
      nlohmann::ordered_json folds = nlohmann::ordered_json::array();
      std::vector<double> means;
      for (int64_t f = 0; f < c_.folds; ++f) {
        if (c_.fold >= 0 && f != c_.fold) continue;
        say("---- fold " + std::to_string(f) + "/" + std::to_string(c_.folds));
        auto r = run_split(data::read_datalist(splits[static_cast<size_t>(f)]), out / ("fold-" + std::to_string(f)));
        if (r.stopped) return r;
        r.results["fold"] = f;
        if (r.results.contains("mean_dice")) means.push_back(r.results.at("mean_dice").get<double>());
        folds.push_back(r.results);
      }
      result.results["title"] = title();
      result.results["classes"] = folds.empty() ? nlohmann::ordered_json::array() : folds[0].at("classes");
      result.results["folds"] = folds;
      if (!means.empty()) {
        result.results["mean_dice"] = eval::mean(means);
        result.results["std_dice"] = eval::stddev(means);
      }
    } else {
      result = run_split(list, out);
      if (result.stopped) return result;
    }
    if (!group_.is_main()) return result;
    io::write_text_atomically(out / "results.json", result.results.dump(2) + "\n");
    io::write_text_atomically(out / "results.md", results_markdown(result.results));
    if (result.results.contains("mean_dice")) {
      char b[160];
      if (result.results.contains("std_dice"))
        std::snprintf(b, sizeof b, "mean test Dice %.4f +- %.4f over %zu folds", result.results.at("mean_dice").get<double>(),
                      result.results.at("std_dice").get<double>(), result.results.at("folds").size());
      else
        std::snprintf(b, sizeof b, "mean test Dice %.4f", result.results.at("mean_dice").get<double>());
      say(std::string(b) + "; results in " + (out / "results.md").string());
    }
    return result;
  }

 private:
  struct State {
    double best_dice = -1;
    int64_t best_step = -1;
    int64_t skipped_nonfinite = 0, consecutive_nonfinite = 0;
    double elapsed = 0;
    nlohmann::json to_json() const {
      return {{"best_dice", best_dice}, {"best_step", best_step}, {"skipped_nonfinite", skipped_nonfinite},
              {"consecutive_nonfinite", consecutive_nonfinite}, {"elapsed", elapsed}};
    }
    static State from_json(const nlohmann::json& j) {
      State s;
      s.best_dice = j.value("best_dice", -1.0);
      s.best_step = j.value("best_step", int64_t{-1});
      s.skipped_nonfinite = j.value("skipped_nonfinite", int64_t{0});
      s.consecutive_nonfinite = j.value("consecutive_nonfinite", int64_t{0});
      s.elapsed = j.value("elapsed", 0.0);
      return s;
    }
  };

  struct Prepared {
    std::vector<sampling::LabelledVolume> train, val;
  };

  void say(const std::string& s) { *console_ << s << std::endl; }
  bool weights_none() const { return c_.weights.empty() || c_.weights == "none"; }
  static void make_folder(const std::filesystem::path& p) {
    std::error_code ec;
    std::filesystem::create_directories(p, ec);
    if (ec) throw IoError("output folder '" + p.string() + "': cannot create (" + ec.message() + ")");
  }
  std::string title() const {
    std::string what = c_.setup == "probe" ? (c_.head == "linear" ? "linear probe" : "non-linear probe")
                                           : c_.setup == "finetune" ? "fine-tuning" : "from scratch";
    return what + " of " + (weights_none() ? std::string("a random-initialised backbone") : c_.weights) + ": test Dice";
  }

  preprocess::PreprocessOptions preprocess_options() const {
    nlohmann::json j = c_.preprocess;
    if (!j.contains("preset")) j["preset"] = c_.modality;
    if (!j.contains("patch_size")) j["patch_size"] = c_.patch;
    return preprocess::options_from_json(j);
  }

  torch::Device device() const { return dist::resolve_device(c_.device, env_, "downstream option 'device'"); }

  /// The classes: as given, or every label value found in the training label maps.
  eval::ClassMap resolve_classes(const std::vector<preprocess::Preprocessed>& train) const {
    std::set<int64_t> found;
    for (const auto& p : train) {
      const auto u = std::get<0>(torch::_unique(p.labels->data.flatten(), /*sorted=*/true));
      for (int64_t i = 0; i < u.numel(); ++i) found.insert(u[i].item<int64_t>());
    }
    if (c_.classes.empty()) {
      auto m = eval::ClassMap::from_values(found);
      if (m.empty()) throw DataError("data '" + c_.data + "': the training label maps hold no foreground (every voxel is 0)");
      return m;
    }
    return eval::read_classes(c_.classes);
  }

  /// Preprocesses the labelled lists; refuses entries without labels and classes without voxels.
  Prepared prepare(const data::Datalist& list, preprocess::PreprocessCache& cache, eval::ClassMap& classes) {
    const auto opt = preprocess_options();
    auto load = [&](const std::vector<data::Sample>& samples, const char* name) {
      std::vector<preprocess::Preprocessed> out;
      for (size_t i = 0; i < samples.size(); ++i) {
        if (!samples[i].label)
          throw DataError("data '" + c_.data + "': " + name + "[" + std::to_string(i) + "] ('" + samples[i].image.string() +
                          "') has no \"label\"; every training and validation volume needs its label map");
        out.push_back(preprocess::preprocess_nifti(samples[i].image, samples[i].label, opt, &cache));
      }
      return out;
    };
    say("preprocessing " + std::to_string(list.training.size()) + " training and " + std::to_string(list.validation.size()) +
        " validation volumes");
    const auto train = load(list.training, "training");
    const auto val = load(list.validation, "validation");
    classes = resolve_classes(train);
    // Which label values occur, and how many voxels each class has in the training list.
    std::set<int64_t> present;
    for (const auto* group : {&train, &val})
      for (const auto& p : *group) {
        const auto u = std::get<0>(torch::_unique(p.labels->data.flatten(), true));
        for (int64_t i = 0; i < u.numel(); ++i) present.insert(u[i].item<int64_t>());
      }
    for (const auto& cl : classes.classes())
      for (int64_t v : cl.values)
        if (!present.count(v))
          say("warning: class '" + cl.name + "': label value " + std::to_string(v) + " occurs in no label map");
    Prepared prepared;
    auto to_volumes = [&](const std::vector<preprocess::Preprocessed>& ps, const std::vector<data::Sample>& samples) {
      std::vector<sampling::LabelledVolume> out;
      for (size_t i = 0; i < ps.size(); ++i) {
        const auto idx = class_index_map(classes, ps[i].labels->data);
        out.push_back(sampling::LabelledVolume::make(ps[i].image.data.to(torch::kFloat32), idx,
                                                     static_cast<int64_t>(classes.size()), samples[i].image.string()));
      }
      return out;
    };
    prepared.train = to_volumes(train, list.training);
    prepared.val = to_volumes(val, list.validation);
    for (size_t k = 0; k < classes.size(); ++k) {
      int64_t n = 0;
      for (const auto& v : prepared.train) n += v.class_voxels[k].numel();
      if (n == 0)
        throw DataError("classes: class '" + classes[k].name + "' has no voxel in any training label map (after preprocessing); "
                        "check its label values");
    }
    return prepared;
  }

  /// Label map -> class-index map (0 background, c + 1 class c), uint8 (int16 past 255 classes).
  static torch::Tensor class_index_map(const eval::ClassMap& classes, const torch::Tensor& labels) {
    auto idx = torch::zeros(labels.sizes(), torch::kInt16);
    for (size_t k = 0; k < classes.size(); ++k) {
      auto m = torch::zeros(labels.sizes(), torch::kBool);
      for (int64_t v : classes[k].values) m.logical_or_(labels == v);
      idx.masked_fill_(m, static_cast<int64_t>(k + 1));
    }
    return classes.size() < 256 ? idx.to(torch::kUInt8) : idx;
  }

  nn::SegmentationModelOptions model_options(const std::optional<nn::BackboneWeights>& w, size_t classes) const {
    nn::SegmentationModelOptions o;
    o.classes = static_cast<int64_t>(classes);
    o.head = c_.head == "linear" ? nn::HeadKind::linear : nn::HeadKind::nonlinear;
    if (w) {
      o.in_channels = w->in_channels;
      o.base_channels = c_.base_channels > 0 ? c_.base_channels : w->base_channels;
      o.levels = c_.levels > 0 ? c_.levels : w->levels;
    } else {
      o.base_channels = c_.base_channels > 0 ? c_.base_channels : 32;
      o.levels = c_.levels > 0 ? c_.levels : 5;
    }
    return o;
  }

  /// Sets the probe's standardisation from the frozen backbone's pyramid (eval mode, as the probe sees it)
  /// on the first kStandardisationBatches training batches: the batches training starts with, so the
  /// statistics are those of the data the head learns from and a given seed gives the same ones.
  static constexpr int64_t kStandardisationBatches = 16;
  void measure_feature_statistics(nn::SegmentationModelImpl& model, const sampling::SegmentationPatchSampler& sampler,
                                  const std::vector<sampling::LabelledVolume>& train, size_t classes, torch::Device dev) {
    torch::NoGradGuard no_grad;
    model.backbone->eval();
    nn::PyramidMoments moments;
    for (int64_t b = 0; b < kStandardisationBatches; ++b) {
      const auto batch = sampler.sample(train, static_cast<int64_t>(classes), static_cast<uint64_t>(b));
      torch::Tensor x = batch.images.to(dev);
      if (dev.is_cuda() && c_.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast3d);
      moments.add(model.backbone->forward(x));
    }
    model.standardise->set(moments.means(), moments.stds());
    const auto s = moments.stds();
    std::string line;
    for (size_t i = 0; i < s.size(); ++i) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%s%.3g", i ? ", " : "", s[i].mean().item<double>());
      line += buf;
    }
    say("feature standardisation from " + std::to_string(kStandardisationBatches) + " training batches; mean channel std per level: " + line);
  }

  /// Mean soft Dice over the validation volumes and classes (whole volumes, sliding windows).
  double validate(eval::Segmenter& seg, const std::vector<sampling::LabelledVolume>& val, size_t classes) {
    std::vector<double> means;
    for (const auto& v : val) {
      preprocess::Preprocessed pre;
      pre.image.data = v.image;
      const auto p = seg.probabilities(pre);
      auto t = torch::empty({static_cast<int64_t>(classes), v.classes.size(0), v.classes.size(1), v.classes.size(2)});
      for (size_t k = 0; k < classes; ++k) t[static_cast<int64_t>(k)].copy_(v.classes == static_cast<int64_t>(k + 1));
      means.push_back(eval::mean(eval::dice_per_class(p, t)));
    }
    return eval::mean(means);
  }

  /// Segments every test volume with the model, writes predictions and pictures, scores the labelled ones.
  nlohmann::ordered_json evaluate(eval::Segmenter& seg, const std::vector<data::Sample>& test,
                                  const std::filesystem::path& out) {
    const auto& classes = seg.record().classes;
    nlohmann::ordered_json volumes = nlohmann::ordered_json::array();
    std::vector<double> means;
    if (!test.empty()) make_folder(out / "predictions");
    for (size_t i = 0; i < test.size(); ++i) {
      const auto& s = test[i];
      const auto t0 = std::chrono::steady_clock::now();
      const Volume input = io::read_nifti(s.image);
      std::optional<Volume> label;
      if (s.label) {
        io::NiftiReadOptions lo;
        lo.load_as = io::LoadType::Int64;
        label = io::read_nifti(*s.label, lo);
        if (label->data.sizes() != input.data.sizes() || (label->affine - input.affine).cwiseAbs().maxCoeff() > 1e-4)
          throw DataError("test[" + std::to_string(i) + "]: label map '" + s.label->string() + "' is not on the grid of '" +
                          s.image.string() + "'");
      }
      const auto seg_result = seg.segment(input);
      const std::string stem = volume_stem(s.image);
      const auto pred_path = out / "predictions" / (stem + ".nii.gz");
      io::NiftiWriteOptions wo;
      wo.datatype = seg_result.labels.meta.datatype;
      wo.to_source_orientation = true;
      wo.description = "hdssl segmentation";
      io::write_nifti(pred_path, seg_result.labels, wo);
      nlohmann::ordered_json v;
      v["volume"] = stem;
      v["image"] = s.image.string();
      v["prediction"] = pred_path.string();
      if (label) {
        const auto d = label_dice(classes, seg_result.labels.data, label->data);
        nlohmann::ordered_json per;
        for (size_t k = 0; k < classes.size(); ++k) per[classes[k].name] = d[k];
        v["label"] = s.label->string();
        v["dice"] = per;
        v["mean_dice"] = eval::mean(d);
        means.push_back(eval::mean(d));
      }
      if (c_.pngs)
        eval::write_overlay_png(out / "predictions" / (stem + ".png"), input.data,
                                label ? class_index_map(classes, label->data) : torch::Tensor(), seg_result.labels.data,
                                classes.names(), stem + (v.contains("mean_dice") ? "  mean Dice " + short_dice(v.at("mean_dice").get<double>()) : ""));
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      say("test " + std::to_string(i + 1) + "/" + std::to_string(test.size()) + ": " + stem +
          (v.contains("mean_dice") ? "  mean Dice " + short_dice(v.at("mean_dice").get<double>()) : std::string("  (no label)")) +
          "  " + format_duration(secs));
      volumes.push_back(v);
    }
    nlohmann::ordered_json r;
    r["title"] = title();
    r["classes"] = classes.names();
    r["volumes"] = volumes;
    if (!means.empty()) r["mean_dice"] = eval::mean(means);
    return r;
  }

  static std::string short_dice(double d) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", d);
    return b;
  }

  DownstreamResult run_split(const data::Datalist& list, const std::filesystem::path& out) {
    make_folder(out);
    const torch::Device dev = device();
    if (c_.threads > 0) hdssl::set_threads(c_.threads);
    else if (env_.local_world_size() > 1)  // ranks on one machine share its cores
      hdssl::set_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / env_.local_world_size()));
    const bool main_rank = group_.is_main();
    preprocess::PreprocessCache cache(c_.cache.empty() ? out / "cache" : std::filesystem::path(c_.cache));
    cache.set_warning_handler([this](const std::string& w) { say("warning: " + w); });
    eval::ClassMap classes;
    const Prepared data = prepare(list, cache, classes);
    std::string cls;
    for (const auto& n : classes.names()) cls += (cls.empty() ? "" : ", ") + n;
    say(std::to_string(data.train.size()) + " training, " + std::to_string(data.val.size()) + " validation, " +
        std::to_string(list.test.size()) + " test volumes; " + std::to_string(classes.size()) + " classes: " + cls);

    // ---- model (the same initialisation for a fresh and a resumed run)
    std::optional<nn::BackboneWeights> weights;
    if (!weights_none()) weights = nn::read_backbone_weights(c_.weights);
    torch::manual_seed(c_.seed);
    nn::SegmentationModel model(model_options(weights, classes.size()));
    if (weights) {
      io::load_state(*model->backbone, weights->tensors, "", true, "weights '" + weights->file.string() + "'");
      say("backbone from " + weights->file.string() + " (base " + std::to_string(model->options.base_channels) + ", " +
          std::to_string(model->options.levels) + " levels)");
    }
    model->to(dev);
    const bool cuda = dev.is_cuda();
    if (cuda && c_.channels_last) nn::to_channels_last(*model);
    FinetuneSchedule schedule{c_.setup, c_.schedule, c_.steps, c_.lr};
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model->head_parameters(), std::make_unique<torch::optim::AdamOptions>(c_.lr));
    if (c_.setup != "probe")
      groups.emplace_back(model->backbone->parameters(), std::make_unique<torch::optim::AdamOptions>(c_.lr));
    torch::optim::Adam optimizer(groups, torch::optim::AdamOptions(c_.lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(0));

    eval::ModelRecord record;
    record.model = model->options;
    record.classes = classes;
    record.preprocess = preprocess_options();
    record.window = c_.sliding_window();
    record.setup = c_.setup;
    eval::Segmenter segmenter(model, record, {dev, c_.bf16, c_.channels_last});

    // ---- resume
    nlohmann::json config_json = c_;
    config_json["data"] = list.source.string();
    CheckpointStore store(out / "checkpoints", c_.keep_checkpoints);
    int64_t step = 0;
    State state;
    const std::string kind = "downstream-" + c_.setup;
    auto resumed = store.load_newest(
        [&](const std::filesystem::path& p) {
          const io::CheckpointRecord h = io::read_checkpoint_record(p);
          if (h.preset != kind)
            throw ConfigError("checkpoint '" + p.string() + "' is of a " + h.preset + " run, this run is " + kind +
                              "; use another --out");
          const auto keys = differing_keys(h.options, config_json, DownstreamConfig::resumable_keys());
          if (!keys.empty()) {
            throw ConfigError("output folder '" + out.string() + "' holds a run with another configuration: " +
                              describe_changes(h.options, config_json, keys) +
                              ". Use the same options to resume, or another --out");
          }
          const auto r = io::load_checkpoint(p, *model, optimizer, dev);
          step = r.step;
          state = State::from_json(r.state);
        },
        [&](const std::string& w) { say("warning: " + w); });
    if (!resumed && !store.list().empty())
      throw IoError("output folder '" + out.string() + "' holds checkpoints but none reads back (see above)");
    if (resumed) say("resuming from " + resumed->string() + " at step " + std::to_string(step));
    std::optional<ProgressLog> log;
    if (main_rank) {
      io::write_text_atomically(out / "config.json", config_json.dump(2) + "\n");
      log.emplace(out / "metrics.jsonl", resumed ? step : -1, *console_);
    }

    const sampling::SegmentationPatchSampler sampler({c_.patch, c_.batch, c_.foreground_fraction}, c_.seed);
    // A probe's feature standardisation, measured once on the first training batches (a resumed run has it
    // in its checkpoint).
    if (c_.setup == "probe" && c_.standardise_features && !resumed)
      measure_feature_statistics(*model, sampler, data.train, classes.size(), dev);
    std::vector<torch::Tensor> trained = model->head_parameters();
    if (c_.setup != "probe")
      for (const auto& p : model->backbone->parameters()) trained.push_back(p);
    if (group_.distributed()) {
      group_.require_agreement(step, "the step resumed from (every rank must see the same output folder)");
      std::vector<torch::Tensor> all = model->parameters();
      for (const auto& b : model->buffers()) all.push_back(b);
      group_.broadcast_from_main(all, "broadcasting rank 0's parameters and buffers");
    }
    dist::GradientReducer reducer(group_, trained, c_.distributed.bucket_mb);
    const auto best_path = out / "best.safetensors";
    auto save = [&](int64_t at) {
      if (group_.distributed())
        group_.require_agreement(dist::bytes_digest(model->parameters()), "the parameters (a digest of their bytes)");
      if (!main_rank) return;
      io::CheckpointRecord r;
      r.preset = kind;
      r.options = config_json;
      r.step = at;
      r.state = state.to_json();
      store.save(*model, optimizer, r);
      write_curve_png(out / "curve.png", read_metrics(log->path()),
                      {{"loss", "BCE + soft Dice"}, {"val_dice", "validation Dice"}}, title().substr(0, title().find(':')));
    };
    auto run_validation = [&](int64_t at) {
      if (data.val.empty() || !main_rank) return;
      const double d = validate(segmenter, data.val, classes.size());
      const bool best = d > state.best_dice;
      if (best) {
        state.best_dice = d;
        state.best_step = at;
        eval::save_segmentation_model(best_path, model, record);
      }
      log->log({{"step", at}, {"val_dice", d}, {"best_val_dice", state.best_dice}},
              "step " + std::to_string(at) + "  validation Dice " + short_dice(d) + (best ? "  (best so far)" : "") );
    };

    const auto t0 = std::chrono::steady_clock::now();
    const double elapsed_before = state.elapsed;
    auto interval = t0;
    int64_t interval_steps = 0;
    const std::vector<torch::Tensor> bb_params = model->backbone->parameters();
    DownstreamResult result;
    say(title().substr(0, title().find(':')) + ": " + std::to_string(c_.steps) + " steps of " + std::to_string(c_.batch) +
        " patches " + std::to_string(c_.patch[0]) + "x" + std::to_string(c_.patch[1]) + "x" + std::to_string(c_.patch[2]) +
        ", device " + dev.str() + (c_.setup == "finetune" ? ", backbone frozen for " + std::to_string(schedule.frozen_steps()) + " steps" : ""));
    while (step < c_.steps) {
      const BackbonePhase phase = schedule.at(step);
      auto& groups_now = optimizer.param_groups();
      static_cast<torch::optim::AdamOptions&>(groups_now[0].options()).lr(phase.head_lr);
      if (groups_now.size() > 1) static_cast<torch::optim::AdamOptions&>(groups_now[1].options()).lr(phase.backbone_lr);
      const auto batch = sampler.sample(data.train, static_cast<int64_t>(classes.size()),
                                        static_cast<uint64_t>(step * group_.size() + group_.rank()));
      model->train();
      model->backbone->train(phase.batchnorm_train);
      std::vector<torch::Tensor> buffers, saved;
      for (auto& b : model->buffers()) buffers.push_back(b), saved.push_back(b.detach().clone());
      optimizer.zero_grad();
      torch::Tensor x = batch.images.to(dev), y = batch.targets.to(dev);
      if (cuda && c_.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast3d);
      torch::Tensor loss;
      {
        ops::compat::CudaBf16Autocast autocast(cuda && c_.bf16);
        const auto logits = model->forward(x, !phase.trainable);
        loss = loss::segmentation_loss(logits.to(torch::kFloat32), y);
      }
      double lv = loss.item<double>();
      bool finite = std::isfinite(lv);
      reducer.prepare();
      if (finite) loss.backward();
      else reducer.poison();  // every rank skips this step
      reducer.finish();
      // One reduction over every gradient (no clipping downstream: max norm infinite).
      if (finite) finite = std::isfinite(ops::compat::clip_grad_norm(model->parameters(), INFINITY));
      int stop_vote = stop_requested();
      if (group_.distributed()) {  // the loss averaged for the log; a signal on any rank stops all
        auto t = torch::tensor({lv, stop_vote ? 1.0 : 0.0}, torch::kFloat64);
        group_.all_reduce_sum(t, "step " + std::to_string(step + 1) + " loss");
        lv = t[0].item<double>() / group_.size();
        stop_vote = t[1].item<double>() > 0 ? (stop_vote ? stop_vote : SIGTERM) : 0;
      }
      if (finite) {
        optimizer.step();
        state.consecutive_nonfinite = 0;
      } else {
        torch::NoGradGuard ng;
        for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
        optimizer.zero_grad();
        ++state.skipped_nonfinite;
        ++state.consecutive_nonfinite;
        say("warning: step " + std::to_string(step + 1) + ": non-finite loss or gradient; update skipped");
        if (state.consecutive_nonfinite >= c_.max_nonfinite)
          throw DataError("stopping: " + std::to_string(state.consecutive_nonfinite) + " non-finite steps in a row at step " +
                          std::to_string(step + 1) + ". Lower --lr or check the data.");
      }
      ++step;
      ++interval_steps;
      state.elapsed = elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (step % c_.log_every == 0 || step == c_.steps) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval).count();
        const double rate = interval_steps / std::max(1e-9, secs);
        char line[256];
        std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr head %.2e backbone %.2e%s  %.3g steps/s  ETA %s",
                      static_cast<long long>(step), static_cast<long long>(c_.steps), lv, phase.head_lr, phase.backbone_lr,
                      phase.trainable ? "" : " (frozen)", rate, format_duration((c_.steps - step) / std::max(1e-9, rate)).c_str());
        if (log) log->log({{"step", step}, {"loss", lv}, {"lr_head", phase.head_lr}, {"lr_backbone", phase.backbone_lr},
                 {"backbone_trainable", phase.trainable}, {"steps_per_s", rate}, {"time", state.elapsed}}, line);
        interval = std::chrono::steady_clock::now();
        interval_steps = 0;
      }
      if (c_.val_every > 0 && step % c_.val_every == 0 && step != c_.steps) run_validation(step);
      if (step == c_.steps) run_validation(step);
      if (step % c_.checkpoint_every == 0 || step == c_.steps) save(step);
      if (const int sig = stop_vote) {
        if (step % c_.checkpoint_every != 0 && step != c_.steps) save(step);
        say("stopped by signal " + std::to_string(sig) + " at step " + std::to_string(step) +
            ". Run the same command again to resume.");
        result.stopped = true;
        return result;
      }
    }
    if (c_.steps == 0) run_validation(0);
    if (!main_rank) return result;  // rank 0 keeps the model and scores the test list

    // ---- the model to keep: the best by validation Dice, else the last
    std::filesystem::path kept = out / "model.safetensors";
    std::error_code ec;
    if (!data.val.empty() && std::filesystem::exists(best_path, ec)) {
      std::filesystem::copy_file(best_path, kept, std::filesystem::copy_options::overwrite_existing, ec);
      if (ec) throw IoError("model file '" + kept.string() + "': cannot write (" + ec.message() + ")");
      auto loaded = eval::load_segmentation_model(kept, dev);
      io::load_state(*model, io::state_dict(*loaded.first), "", true, kept.string());
      say("model: the best validation Dice " + short_dice(state.best_dice) + " (step " + std::to_string(state.best_step) +
          ") in " + kept.string());
    } else {
      eval::save_segmentation_model(kept, model, record);
      say("model: the last step's weights in " + kept.string() + (data.val.empty() ? " (no validation list)" : ""));
    }
    result.results = evaluate(segmenter, list.test, out);
    if (!data.val.empty()) {
      result.results["best_validation_dice"] = state.best_dice;
      result.results["best_step"] = state.best_step;
    }
    result.results["model"] = kept.string();
    result.results["steps"] = step;
    result.results["train_seconds"] = state.elapsed;
    io::write_text_atomically(out / "results.json", result.results.dump(2) + "\n");
    io::write_text_atomically(out / "results.md", results_markdown(result.results));
    return result;
  }

  DownstreamConfig c_;
  std::ostream* console_;
  NullStream null_console_;
  dist::LaunchEnvironment env_;
  dist::ProcessGroup group_;
};

}  // namespace hdssl::train
