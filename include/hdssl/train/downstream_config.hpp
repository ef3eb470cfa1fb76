#pragma once
// Everything a downstream run (linear / non-linear probing, fine-tuning, training from scratch) is told,
// as one struct with one strict JSON form, like PretrainConfig: what --config FILE holds, what flags
// override, what DIR/config.json records and what a resumed run is compared with. Defaults are the
// paper's (method.md 7, 8).
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include "hdssl/core/json_options.hpp"
#include "hdssl/eval/sliding_window.hpp"
#include "hdssl/train/distributed_options.hpp"

namespace hdssl::train {

struct DownstreamConfig {
  // ---- data
  std::string data;        ///< MONAI datalist JSON with labelled "training" (and optional "validation", "test")
  std::string classes;     ///< class name -> label values, inline JSON or a file; empty = every label value
  int64_t folds = 0;       ///< K-fold cross-validation over the training list (0 = use the lists as given)
  int64_t fold = -1;       ///< with folds: run only this fold (-1 = every fold)
  std::string modality = "ct";
  nlohmann::json preprocess = nlohmann::json::object();
  std::string cache;       ///< preprocessing cache; empty = DIR/cache
  // ---- model
  std::string setup = "probe";      ///< probe (frozen backbone) | finetune | scratch
  std::string head = "linear";      ///< linear | nonlinear
  std::string weights;              ///< backbone weights (file or pre-training folder); "" or "none" = random init
  int64_t base_channels = 0;        ///< without weights: 0 = 32 (the hdssl preset); with weights: 0 = the file's
  int64_t levels = 0;               ///< likewise, 0 = 5 / the file's
  std::string schedule = "intended";  ///< finetune: intended | reference (method.md 7)
  /// probe: standardise each pyramid channel with its mean / std on training patches before the head
  /// (nn/feature_standardisation.hpp; [ours], false = the reference's raw features). Ignored when the backbone trains.
  bool standardise_features = true;
  // ---- optimisation
  std::array<int64_t, 3> patch{{128, 128, 32}};
  int64_t batch = 8;
  double foreground_fraction = 0.5;
  int64_t steps = 45000;
  double lr = 3e-4;
  uint64_t seed = 0;
  int64_t max_nonfinite = 10;
  // ---- validation and inference
  int64_t val_every = 1000;         ///< steps between validations (and at the end); best checkpoint by mean Dice
  std::array<int64_t, 3> window{{128, 128, 32}};
  std::array<int64_t, 3> stride{{64, 64, 16}};
  std::string blend = "gaussian";   ///< gaussian | constant | overwrite
  int64_t window_batch = 4;
  bool pngs = true;                 ///< a slice picture per test volume
  // ---- run
  std::string out;
  int64_t checkpoint_every = 1000;
  int64_t keep_checkpoints = 2;
  int64_t log_every = 50;
  std::string device = "auto";
  bool bf16 = true;
  bool channels_last = true;
  int threads = 0;
  DistributedOptions distributed;   ///< data parallel: backend, timeout, bucket size (ranks: the environment)

  /// The keys a resumed run may change: how it reports and where it runs. Not `steps`: the fine-tuning
  /// schedule scales with it, so more steps make another run.
  static const std::set<std::string>& resumable_keys() {
    static const std::set<std::string> keys = {"out", "checkpoint_every", "keep_checkpoints", "log_every",
                                               "threads", "cache", "device", "pngs", "window_batch", "fold"};
    static const std::set<std::string> all = [] {
      auto k = keys;
      k.insert(DistributedOptions::keys().begin(), DistributedOptions::keys().end());
      return k;
    }();
    return all;
  }

  eval::SlidingWindowOptions sliding_window() const {
    eval::SlidingWindowOptions o;
    o.window = window;
    o.stride = stride;
    for (const auto& [name, b] : eval::kBlendNames)
      if (blend == name) o.blend = b;
    o.batch = window_batch;
    return o;
  }
};

inline void to_json(nlohmann::json& j, const DownstreamConfig& c) {
  j = nlohmann::json{{"data", c.data},         {"classes", c.classes},
                     {"folds", c.folds},       {"fold", c.fold},
                     {"modality", c.modality}, {"preprocess", c.preprocess},
                     {"cache", c.cache},       {"setup", c.setup},
                     {"head", c.head},         {"weights", c.weights},
                     {"base_channels", c.base_channels}, {"levels", c.levels},
                     {"schedule", c.schedule}, {"standardise_features", c.standardise_features},
                     {"patch", c.patch},
                     {"batch", c.batch},       {"foreground_fraction", c.foreground_fraction},
                     {"steps", c.steps},       {"lr", c.lr},
                     {"seed", c.seed},         {"max_nonfinite", c.max_nonfinite},
                     {"val_every", c.val_every}, {"window", c.window},
                     {"stride", c.stride},     {"blend", c.blend},
                     {"window_batch", c.window_batch}, {"pngs", c.pngs},
                     {"out", c.out},           {"checkpoint_every", c.checkpoint_every},
                     {"keep_checkpoints", c.keep_checkpoints}, {"log_every", c.log_every},
                     {"device", c.device},     {"bf16", c.bf16},
                     {"channels_last", c.channels_last}, {"threads", c.threads}};
  add_to_json(j, c.distributed);
}

/// Strict: an unknown key, a wrong type or an out-of-range value is a ConfigError naming the key.
inline void from_json(const nlohmann::json& j, DownstreamConfig& c) {
  constexpr int64_t big = std::numeric_limits<int64_t>::max();
  OptionReader r(j, "downstream");
  r.read("data", c.data).read("classes", c.classes).read("cache", c.cache).read("out", c.out).read("weights", c.weights);
  if (j.contains("preprocess")) {
    if (!j.at("preprocess").is_object()) r.fail("preprocess", "expected a JSON object, got " + j.at("preprocess").dump());
    c.preprocess = j.at("preprocess");
    r.known("preprocess");
  }
  r.read<int64_t>("folds", c.folds, 0, 1 << 20).read<int64_t>("fold", c.fold, -1, 1 << 20);
  r.choice<std::string>("modality", c.modality, {{"ct", "ct"}, {"mri", "mri"}});
  r.choice<std::string>("setup", c.setup, {{"probe", "probe"}, {"finetune", "finetune"}, {"scratch", "scratch"}});
  r.choice<std::string>("head", c.head, {{"linear", "linear"}, {"nonlinear", "nonlinear"}});
  r.choice<std::string>("schedule", c.schedule, {{"intended", "intended"}, {"reference", "reference"}});
  r.choice<std::string>("blend", c.blend, {{"gaussian", "gaussian"}, {"constant", "constant"}, {"overwrite", "overwrite"}});
  r.choice<std::string>("device", c.device, {{"auto", "auto"}, {"cpu", "cpu"}, {"cuda", "cuda"}});
  r.read<int64_t>("base_channels", c.base_channels, 0, 1 << 16)
      .read<int64_t>("levels", c.levels, 0, 12)
      .read<int64_t, 3>("patch", c.patch, 1, int64_t{1} << 20)
      .read<int64_t>("batch", c.batch, 1, 1 << 20)
      .probability("foreground_fraction", c.foreground_fraction)
      .read<int64_t>("steps", c.steps, 0, big)
      .read<double>("lr", c.lr, 0.0, std::numeric_limits<double>::max())
      .read<uint64_t>("seed", c.seed, 0, static_cast<uint64_t>(big))
      .read<int64_t>("max_nonfinite", c.max_nonfinite, 1, big)
      .read<int64_t>("val_every", c.val_every, 0, big)
      .read<int64_t, 3>("window", c.window, 1, int64_t{1} << 20)
      .read<int64_t, 3>("stride", c.stride, 1, int64_t{1} << 20)
      .read<int64_t>("window_batch", c.window_batch, 1, 1 << 16)
      .read("pngs", c.pngs)
      .read("standardise_features", c.standardise_features)
      .read<int64_t>("checkpoint_every", c.checkpoint_every, 1, big)
      .read<int64_t>("keep_checkpoints", c.keep_checkpoints, 1, 1 << 20)
      .read<int64_t>("log_every", c.log_every, 1, big)
      .read("bf16", c.bf16)
      .read("channels_last", c.channels_last)
      .read<int>("threads", c.threads, 0, 1 << 16);
  read_options(r, c.distributed);
  if (!(c.lr > 0)) r.fail("lr", "must be > 0");
  if (c.levels == 1) r.fail("levels", "a pyramid needs at least 2 levels (0 = default)");
  if (c.folds == 1) r.fail("folds", "cross-validation needs at least 2 folds (0 = no cross-validation)");
  if (c.fold >= 0 && c.fold >= c.folds) r.fail("fold", "must be below folds (" + std::to_string(c.folds) + ")");
  for (int a = 0; a < 3; ++a)
    if (c.stride[a] > c.window[a]) r.fail("stride", "every stride must be <= the window (a larger one leaves voxels unseen)");
  r.finish();
}

}  // namespace hdssl::train
