#pragma once
// Everything a pre-training run is told, as one struct with one strict JSON form: what `--config FILE`
// holds, what the command line overrides, what DIR/config.json records and what a resumed run is
// compared with. Defaults are the paper's (method.md 4, 5, 7).
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/ops/gather_functor.hpp"
#include "hdssl/train/distributed_options.hpp"

namespace hdssl::train {

struct PretrainConfig {
  // ---- data
  std::string data;                      ///< folder of NIfTI files or a MONAI datalist JSON ("training" list)
  std::string modality = "ct";           ///< preprocessing preset: ct | mri
  nlohmann::json preprocess = nlohmann::json::object();  ///< overrides of the modality's PreprocessOptions
  std::string cache;                     ///< preprocessing cache folder; empty = DIR/cache
  double memory_budget_gb = 16.0;        ///< preprocessed volumes held in memory; the rest reloaded from the cache
  // ---- method
  std::string preset = "hdssl";          ///< vox2vec | hdssl | hdssl_reference | ablation_architecture | ablation_loss
  std::string augment = "hdssl";         ///< hdssl | vox2vec
  nlohmann::json augment_options = nlohmann::json::object();  ///< per-policy options of the augmentation set
  int64_t base_channels = 0;             ///< 0 = the preset's
  int64_t levels = 0;                    ///< 0 = the preset's
  double temperature = 0.1;
  std::optional<double> reconstruction_weight;  ///< null = the preset's (10 with a reconstruction term)
  // ---- batches
  std::array<int64_t, 3> patch{{128, 128, 32}};
  int64_t pairs = 10;
  int64_t positives = 1024;
  int64_t volumes_per_batch = 1;
  // ---- optimisation
  int64_t steps = 50000;
  uint64_t seed = 0;
  double lr = 3e-4;
  double grad_clip = 1.0;
  int64_t max_nonfinite = 10;            ///< stop after this many non-finite steps in a row
  int64_t accumulate = 1;                ///< micro-batches of `pairs` per rank whose gradients make one step
  // ---- run
  std::string out;                       ///< output folder DIR
  int64_t checkpoint_every = 1000;
  int64_t keep_checkpoints = 3;
  int64_t log_every = 50;
  std::string device = "auto";           ///< auto | cpu | cuda
  std::string augment_device = "cpu";    ///< cpu (the loader's threads) | cuda (the step's GPU, after upload)
  std::string crop_device = "cpu";       ///< cpu (the loader cuts the views) | cuda (cut on the GPU from volumes kept there)
  double device_volumes_gb = 32;         ///< with crop_device cuda: GPU memory for the volumes kept there
  bool bf16 = true;                      ///< bf16 autocast on CUDA (ignored on the CPU)
  bool channels_last = true;             ///< channels-last-3d on CUDA (ignored on the CPU)
  int threads = 0;                       ///< thread budget, 0 = every core
  int loader_threads = -1;               ///< -1 = auto (0 on the CPU, a quarter of the budget on CUDA)
  int64_t prefetch = 4;                  ///< batches the loader may prepare ahead
  DistributedOptions distributed;        ///< backend, timeout, bucket size (ranks: from the environment)

  /// The keys a resumed run may change: how long it runs and how it reports, not what it computes.
  static const std::set<std::string>& resumable_keys() {
    static const std::set<std::string> keys = {"steps", "out", "checkpoint_every", "keep_checkpoints",
                                               "log_every", "threads", "loader_threads", "prefetch",
                                               "cache", "memory_budget_gb", "device",
                                               "augment_device", "crop_device", "device_volumes_gb"};
    static const std::set<std::string> all = [] {
      auto k = keys;
      k.insert(DistributedOptions::keys().begin(), DistributedOptions::keys().end());
      return k;
    }();
    return all;
  }
};

inline void to_json(nlohmann::json& j, const PretrainConfig& c) {
  j = nlohmann::json{{"data", c.data},
                     {"modality", c.modality},
                     {"preprocess", c.preprocess},
                     {"cache", c.cache},
                     {"memory_budget_gb", c.memory_budget_gb},
                     {"preset", c.preset},
                     {"augment", c.augment},
                     {"augment_options", c.augment_options},
                     {"base_channels", c.base_channels},
                     {"levels", c.levels},
                     {"temperature", c.temperature},
                     {"reconstruction_weight", c.reconstruction_weight ? nlohmann::json(*c.reconstruction_weight) : nullptr},
                     {"patch", c.patch},
                     {"pairs", c.pairs},
                     {"positives", c.positives},
                     {"volumes_per_batch", c.volumes_per_batch},
                     {"steps", c.steps},
                     {"seed", c.seed},
                     {"lr", c.lr},
                     {"grad_clip", c.grad_clip},
                     {"max_nonfinite", c.max_nonfinite},
                     {"accumulate", c.accumulate},
                     {"out", c.out},
                     {"checkpoint_every", c.checkpoint_every},
                     {"keep_checkpoints", c.keep_checkpoints},
                     {"log_every", c.log_every},
                     {"device", c.device},
                     {"augment_device", c.augment_device},
                     {"crop_device", c.crop_device},
                     {"device_volumes_gb", c.device_volumes_gb},
                     {"bf16", c.bf16},
                     {"channels_last", c.channels_last},
                     {"threads", c.threads},
                     {"loader_threads", c.loader_threads},
                     {"prefetch", c.prefetch}};
  add_to_json(j, c.distributed);
}

/// Strict: an unknown key, a wrong type or an out-of-range value is a ConfigError naming the key.
inline void from_json(const nlohmann::json& j, PretrainConfig& c) {
  constexpr int64_t big = std::numeric_limits<int64_t>::max();
  constexpr double any = std::numeric_limits<double>::max();
  OptionReader r(j, "pretraining");
  r.read("data", c.data).read("cache", c.cache).read("out", c.out);
  r.read<double>("memory_budget_gb", c.memory_budget_gb, 0.0, any);
  for (const char* key : {"preprocess", "augment_options"}) {
    if (!j.contains(key)) continue;
    if (!j.at(key).is_object()) r.fail(key, "expected a JSON object, got " + j.at(key).dump());
    (std::string(key) == "preprocess" ? c.preprocess : c.augment_options) = j.at(key);
    r.known(key);
  }
  r.choice<std::string>("modality", c.modality, {{"ct", "ct"}, {"mri", "mri"}});
  r.choice<std::string>("preset", c.preset,
                        {{"vox2vec", "vox2vec"},
                         {"hdssl", "hdssl"},
                         {"hdssl_reference", "hdssl_reference"},
                         {"ablation_architecture", "ablation_architecture"},
                         {"ablation_loss", "ablation_loss"}});
  r.choice<std::string>("augment", c.augment, {{"hdssl", "hdssl"}, {"vox2vec", "vox2vec"}});
  r.choice<std::string>("device", c.device, {{"auto", "auto"}, {"cpu", "cpu"}, {"cuda", "cuda"}});
  r.choice<std::string>("augment_device", c.augment_device, {{"cpu", "cpu"}, {"cuda", "cuda"}});
  r.choice<std::string>("crop_device", c.crop_device, {{"cpu", "cpu"}, {"cuda", "cuda"}});
  r.read<double>("device_volumes_gb", c.device_volumes_gb, 0.0, any);
  r.read<int64_t>("base_channels", c.base_channels, 0, 1 << 16)
      .read<int64_t>("levels", c.levels, 0, ops::kMaxGatherLevels)
      .read<double>("temperature", c.temperature, 0.0, any)
      .read<double>("reconstruction_weight", c.reconstruction_weight, 0.0, any)
      .read<int64_t, 3>("patch", c.patch, 1, int64_t{1} << 20);
  r.read<int64_t>("pairs", c.pairs, 1, 1 << 20)
      .read<int64_t>("positives", c.positives, 1, 1 << 24)
      .read<int64_t>("volumes_per_batch", c.volumes_per_batch, 1, 1 << 20)
      .read<int64_t>("steps", c.steps, 0, big)
      .read<uint64_t>("seed", c.seed, 0, static_cast<uint64_t>(big))
      .read<double>("lr", c.lr, 0.0, any)
      .read<double>("grad_clip", c.grad_clip, 0.0, any)
      .read<int64_t>("max_nonfinite", c.max_nonfinite, 1, big)
      .read<int64_t>("accumulate", c.accumulate, 1, 1 << 16)
      .read<int64_t>("checkpoint_every", c.checkpoint_every, 1, big)
      .read<int64_t>("keep_checkpoints", c.keep_checkpoints, 1, 1 << 20)
      .read<int64_t>("log_every", c.log_every, 1, big)
      .read("bf16", c.bf16)
      .read("channels_last", c.channels_last)
      .read<int>("threads", c.threads, 0, 1 << 16)
      .read<int>("loader_threads", c.loader_threads, -1, 1 << 16)
      .read<int64_t>("prefetch", c.prefetch, 1, 1 << 16);
  read_options(r, c.distributed);
  if (!(c.temperature > 0)) r.fail("temperature", "must be > 0");
  if (!(c.lr > 0)) r.fail("lr", "must be > 0");
  if (c.levels == 1) r.fail("levels", "a pyramid needs at least 2 levels (0 = the preset's)");
  r.finish();
}

/// The keys whose values differ between two configurations (as JSON), sorted; `ignore` lists keys not compared.
inline std::vector<std::string> differing_keys(const nlohmann::json& a, const nlohmann::json& b,
                                               const std::set<std::string>& ignore = {}) {
  std::set<std::string> keys;
  for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
  for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
  std::vector<std::string> out;
  for (const auto& k : keys) {
    if (ignore.count(k)) continue;
    const bool in_a = a.contains(k), in_b = b.contains(k);
    if (in_a != in_b || (in_a && a.at(k) != b.at(k))) out.push_back(k);
  }
  return out;
}

/// "key (was X, now Y), ..." for `keys` (from differing_keys) of a stored and a new configuration; a key
/// missing on one side reads "absent". What a refused resume tells the user.
inline std::string describe_changes(const nlohmann::json& was, const nlohmann::json& now, const std::vector<std::string>& keys) {
  auto value = [](const nlohmann::json& j, const std::string& k) { return j.contains(k) ? j.at(k).dump() : std::string("absent"); };
  std::string list;
  for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k + " (was " + value(was, k) + ", now " + value(now, k) + ")";
  return list;
}

}  // namespace hdssl::train
