#pragma once
// Pre-training end to end (method.md 4, 5, 7), as library code:
//
//   hdssl::train::PretrainConfig config;  config.data = "scans/";  config.out = "run/";
//   hdssl::train::Pretrainer<hdssl::presets::hdssl, hdssl::augment::HdsslAugmentations> trainer(config, "hdssl");
//   trainer.run();
//
// The data path reads top to bottom like the method:
//   datalist -> preprocess (cache) -> VolumePool -> PairSampler -> AugmentationSet   (Prefetcher workers)
//   -> PretrainModel (backbone twice, fused gather, heads, hybrid loss) -> backward -> clip -> Adam.
// The step never waits for the device: clip and Adam run over flat buffers and skip a non-finite step by
// a mask (train/flat_adam.hpp), and the host reads a step's losses while the device runs the next one
// (train/step_readback.hpp); only checkpoints, the last step and a stop wait for the step just queued.
// Batch b is a function of (seed, b) alone, so a run resumed from a checkpoint at step s sees exactly the
// batches the uninterrupted run saw from s on; with the same thread count its losses are bit-identical.
//
// Data parallel (train/distributed.hpp; launched by torchrun or --nproc): every rank holds the whole model,
// takes its own micro-batches (stream index ((step * world + rank) * accumulate + j), so a run is still a
// function of the seed and resumes exactly), and the gradients are averaged over the ranks before the
// update (train/gradient_reducer.hpp); the global batch is world x accumulate x pairs. Parameters are
// broadcast from rank 0 at the start and after a resume, and compared (a digest) at every checkpoint.
// BatchNorm statistics stay per rank: rank 0's are the ones saved. Only rank 0 prints, logs and writes.
//
// Never losing work: checkpoints (model, optimiser, generators, counters, configuration) every
// `checkpoint_every` steps and at the end, written atomically, the newest `keep_checkpoints` kept; a re-run
// with the same DIR resumes from the newest one that reads back; SIGINT/SIGTERM (train/stop_signal.hpp)
// end the current step, write a checkpoint and return; a non-finite loss or gradient skips the update
// (parameters, optimiser state and BatchNorm statistics unchanged) and `max_nonfinite` of them in a row
// stop the run with the last good checkpoint kept.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hdssl/augment/presets.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/threads.hpp"
#include "hdssl/data/datalist.hpp"
#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/nn/pretrain_model.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/preprocess/cache.hpp"
#include "hdssl/sampling/pair_sampler.hpp"
#include "hdssl/train/checkpoint_store.hpp"
#include "hdssl/train/curve.hpp"
#include "hdssl/train/device_volumes.hpp"
#include "hdssl/train/distributed.hpp"
#include "hdssl/train/flat_adam.hpp"
#include "hdssl/train/flat_tensors.hpp"
#include "hdssl/train/gradient_reducer.hpp"
#include "hdssl/train/prefetcher.hpp"
#include "hdssl/train/pretrain_config.hpp"
#include "hdssl/train/progress.hpp"
#include "hdssl/train/step_readback.hpp"
#include "hdssl/train/stop_signal.hpp"
#include "hdssl/train/volume_pool.hpp"

namespace hdssl::train {

/// Augmentation sets whose policies work in the scanner's units (HU) rather than on [0, 1]: the trainer
/// maps each crop back through its volume's intensity window before augmenting (vox2vec's noise and random
/// window are in HU). Specialise it for a custom set of that kind.
template <class Augmentations>
inline constexpr bool augments_in_input_units_v = false;
template <>
inline constexpr bool augments_in_input_units_v<augment::Vox2vecAugmentations> = true;

/// How a run ended.
struct PretrainResult {
  enum class Outcome { completed, stopped } outcome = Outcome::completed;
  int64_t step = 0;                              ///< steps done
  std::filesystem::path checkpoint;              ///< the newest checkpoint written
  int64_t skipped_nonfinite = 0;
  int64_t volumes_used = 0, volumes_skipped = 0;
  double seconds = 0;                            ///< wall time of this invocation's training loop
  double data_wait_share = 0;                    ///< of that time, the share spent waiting for batches
};

/// The resolved numbers of a run: thread split and device.
struct RunResources {
  torch::Device device = torch::kCPU;
  int intra_op_threads = 1;
  int loader_threads = 0;
};

/// --device auto|cpu|cuda and the thread budget: the loader's workers are taken from --threads, the rest
/// is LibTorch's intra-op pool. Auto loader threads: 0 on the CPU (the step, not the data, is the
/// bottleneck there; batches are built between steps with the whole pool), a quarter of the budget
/// (at least 2) on CUDA, where the data must keep up with a fast step. With several ranks on one machine
/// (`env`), each rank's default budget is its share of the cores, and rank r uses GPU LOCAL_RANK.
inline RunResources resolve_resources(const PretrainConfig& c, const dist::LaunchEnvironment& env = {}) {
  RunResources r;
  r.device = dist::resolve_device(c.device, env, "pretraining option 'device'");
  const int local_ranks = std::max(1, env.local_world_size());
  const int budget = c.threads > 0 ? c.threads
                                   : std::max(1, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) / local_ranks);
  r.loader_threads = c.loader_threads >= 0 ? c.loader_threads : (r.device.is_cuda() ? std::max(2, budget / 4) : 0);
  r.intra_op_threads = std::max(1, budget - r.loader_threads);
  return r;
}

template <class Preset, class Augmentations = augment::HdsslAugmentations>
class Pretrainer {
 public:
  using Model = nn::PretrainModel<Preset>;

  /// Test and embedding hooks: `on_losses` sees (and may change) each step's losses before backward;
  /// `on_finished` sees the trained model on every rank when the loop has ended (finished or stopped).
  struct Hooks {
    std::function<void(int64_t step, nn::PretrainLosses&)> on_losses;
    std::function<void(const torch::nn::Module&)> on_finished;
  };

  Pretrainer(PretrainConfig config, std::string preset_name, std::ostream& console = std::cout, Hooks hooks = {})
      : c_(std::move(config)), preset_name_(std::move(preset_name)), console_(&console), hooks_(std::move(hooks)) {}

  /// The options the model is built from (the configuration's numbers, 0 = the preset's).
  nn::PretrainOptions model_options() const {
    nn::PretrainOptions o;
    o.base_channels = c_.base_channels;
    o.levels = c_.levels;
    o.temperature = c_.temperature;
    if (c_.reconstruction_weight) o.reconstruction_weight = *c_.reconstruction_weight;
    return o;
  }

  PretrainResult run() {
    check_config();
    const dist::LaunchEnvironment env = dist::LaunchEnvironment::from_environment();
    const RunResources res = resolve_resources(c_, env);
    if (c_.augment_device == "cuda" && !res.device.is_cuda())
      throw ConfigError("pretraining option 'augment_device': cuda augments on the step's GPU, but this run's device is " +
                        res.device.str() + " (use --device cuda, or --augment-device cpu)");
    if (c_.crop_device == "cuda" && c_.augment_device != "cuda")
      throw ConfigError("pretraining option 'crop_device': cuda cuts the views on the GPU, where they must then be "
                        "augmented: add --augment-device cuda (or use --crop-device cpu)");
    hdssl::set_threads(res.intra_op_threads);
    const dist::ProcessGroup group = dist::ProcessGroup::join(env, c_.distributed, res.device);
    const bool main_rank = group.is_main();
    if (!main_rank) console_ = &null_console_;  // one voice: rank 0's
    const std::filesystem::path out(c_.out);
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (ec) throw IoError("output folder '" + out.string() + "': cannot create (" + ec.message() + ")");
    const nlohmann::json config_json = c_;
    CheckpointStore store(out / "checkpoints", c_.keep_checkpoints);
    say("hdssl-pretrain: preset " + preset_name_ + ", augmentations " + c_.augment + ", " +
        std::to_string(c_.pairs) + " pairs of " + std::to_string(c_.patch[0]) + "x" + std::to_string(c_.patch[1]) +
        "x" + std::to_string(c_.patch[2]) + ", " + std::to_string(c_.steps) + " steps, device " + res.device.str() +
        ", " + std::to_string(res.intra_op_threads) + " compute + " + std::to_string(res.loader_threads) +
        " loader threads" +
        (group.distributed() ? ", " + std::to_string(group.size()) + " ranks (" + group.backend_name() + "), global batch " +
                                   std::to_string(group.size() * c_.accumulate * c_.pairs) + " pairs"
                             : c_.accumulate > 1 ? ", " + std::to_string(c_.accumulate * c_.pairs) + " pairs per step" : ""));

    // ---- data
    const data::Datalist list = data::read_datalist(c_.data);
    if (list.training.empty()) throw DataError("data '" + c_.data + "': the training list is empty");
    preprocess::PreprocessCache cache(c_.cache.empty() ? out / "cache" : std::filesystem::path(c_.cache));
    sampling::PairSamplerOptions so;
    so.patch = c_.patch;
    so.pairs = c_.pairs;
    so.max_positives = c_.positives;
    so.volumes_per_batch = c_.volumes_per_batch;
    const sampling::PairSampler sampler(so, c_.seed);
    const Augmentations augmentations(Augmentations::options_from_json(c_.augment_options), c_.seed);
    VolumePool pool(list.training, preprocess_options(), cache, sampler, c_.memory_budget_gb * 1e9,
                    [&](const std::string& s) { say(s); });
    say(std::to_string(pool.size()) + " usable volumes (" + std::to_string(pool.skipped().size()) + " skipped), " +
        std::to_string(static_cast<int64_t>(pool.resident_bytes() / 1e6)) + " MB held in memory");
    // Batch b draws volumes by index into the pool: every rank must hold the same list.
    group.require_agreement(static_cast<int64_t>(pool.size()), "the number of usable training volumes");

    // ---- model and optimiser (the same initialisation for a fresh and a resumed run)
    torch::manual_seed(c_.seed);
    Model model(model_options());
    model->to(res.device);
    const bool cuda = res.device.is_cuda();
    if (cuda && c_.channels_last) nn::to_channels_last(*model);
    if (cuda) ops::compat::use_training_step_cuda_settings();
    torch::optim::Adam optimizer(model->parameters(),
                                 torch::optim::AdamOptions(c_.lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(0));

    // ---- resume
    int64_t step = 0;
    State state;
    auto resumed = store.load_newest(
        [&](const std::filesystem::path& p) {
          const io::CheckpointRecord header = io::read_checkpoint_record(p);
          check_resumable(header, config_json, p);
          const io::CheckpointRecord r = io::load_checkpoint(p, *model, optimizer, res.device);
          step = r.step;
          state = State::from_json(r.state);
        },
        [&](const std::string& w) { say("warning: " + w); });
    if (!resumed && !store.list().empty())
      throw IoError("output folder '" + out.string() + "' holds checkpoints but none reads back (see above); "
                    "move them away to start afresh");
    if (resumed) say("resuming from " + resumed->string() + " at step " + std::to_string(step));
    if (group.distributed()) {
      group.require_agreement(step, "the step resumed from (every rank must see the same output folder)");
      std::vector<torch::Tensor> state_tensors = model->parameters();
      for (const auto& b : model->buffers()) state_tensors.push_back(b);
      group.broadcast_from_main(state_tensors, "broadcasting rank 0's parameters and buffers");
      if (resumed && state.world_size != group.size())
        say("warning: the run was at " + std::to_string(state.world_size) + " ranks, now " + std::to_string(group.size()) +
            ": from here on its batches differ from an uninterrupted run's");
    }
    state.world_size = group.size();
    std::optional<ProgressLog> log;
    if (main_rank) {
      io::write_text_atomically(out / "config.json", config_json.dump(2) + "\n");
      log.emplace(out / "metrics.jsonl", resumed ? step : -1, *console_);
    }

    // ---- the loop
    PretrainResult result;
    result.volumes_used = static_cast<int64_t>(pool.size());
    result.volumes_skipped = static_cast<int64_t>(pool.skipped().size());
    result.checkpoint = resumed.value_or(std::filesystem::path());
    const std::vector<torch::Tensor> params = model->parameters();
    // From here on nothing replaces a parameter's or buffer's storage: both are re-seated in flat buffers
    // (one kernel for clip + Adam, one copy to snapshot and restore the BatchNorm statistics).
    FlatAdam flat_adam(optimizer);
    FlatTensors buffers(model->buffers());
    auto save = [&](int64_t at) {
      // Replicas that drifted apart would each be wrong in its own way: compared before every checkpoint.
      if (group.distributed()) group.require_agreement(dist::bytes_digest(params), "the parameters (a digest of their bytes)");
      result.checkpoint = store.path_for(at);
      if (!main_rank) return;
      io::CheckpointRecord r;
      r.preset = preset_name_;
      r.options = config_json;
      r.step = at;
      r.state = state.to_json();
      flat_adam.with_state_in([&] { store.save(*model, optimizer, r); });
      write_curve_png(out / "curve.png", read_metrics(log->path()), curve_series(), "hdssl pre-training: " + preset_name_);
    };
    dist::GradientReducer reducer(group, params, c_.distributed.bucket_mb);
    std::optional<DeviceVolumes> device_volumes;
    if (c_.crop_device == "cuda") device_volumes.emplace(res.device, c_.device_volumes_gb * 1e9);
    const auto loop_start = std::chrono::steady_clock::now();
    double total_wait = 0, interval_wait = 0;
    auto interval_start = loop_start;
    int64_t interval_steps = 0;
    const double elapsed_before = state.elapsed;
    {
      // The loader counts micro-batches m = step * accumulate + j; each is drawn from this rank's stream.
      const int64_t k = c_.accumulate, world = group.size(), rank = group.rank();
      Prefetcher<Batch> loader(
          [&](int64_t m, Batch& out_batch) {
            make_batch(((m / k) * world + rank) * k + m % k, sampler, augmentations, pool, /*pin=*/cuda, out_batch);
          },
          res.loader_threads, c_.prefetch, step * k, c_.steps * k);
      // A step's figures reach the host while the device runs the next step: settle() reads and logs
      // step s once step s + 1 is queued. The host must know a step before going on only at a checkpoint,
      // the last step and a stop; those are settled at once.
      std::optional<QueuedStep> queued;
      auto settle = [&](QueuedStep& q) {
        // When the step was done: if its figures were there already when asked (always on the CPU, where
        // the step ran when it was queued), when it was queued; else when the wait for them ended. The
        // log's rates are steps settled over the time between such instants.
        const bool was_ready = q.figures.ready();
        const std::vector<double> v = q.figures.get();
        const auto done = std::max(interval_start, was_ready ? q.queued_at : std::chrono::steady_clock::now());
        ++interval_steps;
        StepOutcome o;
        o.loss = v[0], o.loss_nce = v[1], o.loss_rec = v[2], o.grad_norm = v[3], o.finite = v[4] > 0.5;
        if (v.size() > 5 && v[5] > 0) stop_votes_ = q.signal ? q.signal : SIGTERM;  // another rank's signal
        if (!o.finite) {
          o.what = std::isfinite(o.loss) ? "gradient norm" : "loss";
          ++state.skipped_nonfinite;
          ++state.consecutive_nonfinite;
          say("warning: step " + std::to_string(q.step) + ": non-finite " + o.what + "; update skipped (" +
              std::to_string(state.consecutive_nonfinite) + " in a row, " + std::to_string(c_.max_nonfinite) +
              " stop the run)");
          if (state.consecutive_nonfinite >= c_.max_nonfinite)
            throw DataError("stopping: " + std::to_string(state.consecutive_nonfinite) +
                            " non-finite steps in a row, the last at step " + std::to_string(q.step) +
                            "; the last good checkpoint is " +
                            (result.checkpoint.empty() ? std::string("(none yet)") : result.checkpoint.string()) +
                            ". Lower --lr or check the data.");
        } else {
          state.consecutive_nonfinite = 0;
        }
        if (q.step % c_.log_every == 0 || q.step == c_.steps) {
          const double secs = std::chrono::duration<double>(done - interval_start).count();
          const double rate = interval_steps / std::max(1e-9, secs);
          nlohmann::json rec = {{"step", q.step},
                                {"loss", o.loss},
                                {"loss_nce", o.loss_nce},
                                {"lr", c_.lr},
                                {"grad_norm", o.grad_norm},
                                {"time", state.elapsed},
                                {"steps_per_s", rate},
                                {"data_wait", interval_wait / std::max(1e-9, secs)},
                                {"skipped_nonfinite", state.skipped_nonfinite},
                                {"volumes_skipped", result.volumes_skipped}};
          if (Preset::reconstruction) rec["loss_rec"] = o.loss_rec;
          if (log) log->log(rec, progress_line(rec, rate));
          interval_start = done;
          interval_steps = 0;
          interval_wait = 0;
        }
      };
      while (step < c_.steps) {
        std::vector<Batch> micro;
        for (int64_t j = 0; j < k; ++j) {
          double waited = 0;
          micro.push_back(loader.next(&waited));
          total_wait += waited;
          interval_wait += waited;
        }
        QueuedStep q;
        torch::Tensor figures = train_step(*model, flat_adam, buffers, micro, augmentations, reducer,
                                           device_volumes ? &*device_volumes : nullptr, res.device, step);
        q.signal = stop_requested();
        q.step = ++step;
        if (group.distributed()) {
          // One small all-reduce, queued behind the step (with NCCL on the GPU: no host wait): the losses
          // averaged over the ranks for the log, and the stop votes, so that a signal seen by any rank
          // stops all of them after the same step.
          torch::Tensor shared =
              torch::cat({figures.narrow(0, 0, 3), torch::full({1}, q.signal ? 1.0 : 0.0, figures.options())});
          group.all_reduce_sum(shared, "step " + std::to_string(q.step) + " losses");
          figures = torch::cat({shared.narrow(0, 0, 3) / static_cast<double>(world), figures.narrow(0, 3, 2),
                                shared.narrow(0, 3, 1)});
        }
        q.figures.start(figures);
        q.queued_at = std::chrono::steady_clock::now();
        state.elapsed = elapsed_before + seconds_since(loop_start);
        if (!group.distributed() && q.signal) stop_votes_ = q.signal;
        if (queued) settle(*queued), queued.reset();
        const bool checkpoint_now = step % c_.checkpoint_every == 0 || step == c_.steps;
        if (checkpoint_now || stop_votes_) settle(q);
        else queued = std::move(q);
        if (checkpoint_now) save(step);
        if (const int sig = stop_votes_) {  // nothing is queued here: a stop settles its step at once
          if (result.checkpoint != store.path_for(step)) save(step);
          result.outcome = PretrainResult::Outcome::stopped;
          say("stopped by signal " + std::to_string(sig) + " at step " + std::to_string(step) + "; checkpoint " +
              result.checkpoint.string() + ". Run the same command again to resume.");
          break;
        }
      }
    }
    if (hooks_.on_finished) hooks_.on_finished(*model);
    result.step = step;
    result.skipped_nonfinite = state.skipped_nonfinite;
    result.seconds = seconds_since(loop_start);
    result.data_wait_share = total_wait / std::max(1e-9, result.seconds);
    if (result.outcome == PretrainResult::Outcome::completed) {
      if (result.checkpoint != store.path_for(step) && step > 0) save(step);
      if (main_rank) write_outputs(*model, out);
      say("done: " + std::to_string(step) + " steps; backbone weights in " + (out / "backbone.safetensors").string());
    }
    return result;
  }

 private:
  /// The trainer's own counters, kept in every checkpoint.
  struct State {
    int64_t skipped_nonfinite = 0, consecutive_nonfinite = 0;
    double elapsed = 0;  ///< training seconds over every invocation of the run
    int world_size = 1;  ///< ranks of the invocation that wrote the checkpoint
    nlohmann::json to_json() const {
      return {{"skipped_nonfinite", skipped_nonfinite}, {"consecutive_nonfinite", consecutive_nonfinite}, {"elapsed", elapsed},
              {"world_size", world_size}};
    }
    static State from_json(const nlohmann::json& j) {
      State s;
      s.world_size = j.value("world_size", 1);
      s.skipped_nonfinite = j.value("skipped_nonfinite", int64_t{0});
      s.consecutive_nonfinite = j.value("consecutive_nonfinite", int64_t{0});
      s.elapsed = j.value("elapsed", 0.0);
      return s;
    }
  };

  /// One prepared batch: the sampler's pairs and both augmented view batches, on the CPU. With
  /// augment_device cuda the views are augmented in the step instead: views1/2 stay undefined and
  /// inputs1/2 hold the views before augmentation (in the augmentations' units), `index` their batch number.
  /// With crop_device cuda the step also cuts the views: pairs.view1/2 stay undefined too and `images`
  /// keeps the batch's volume images (index = pool index; only the images, not their masks and voxel
  /// lists). `lo`/`span`: the pairs' intensity windows for augmentations in input units ([B, 1, 1, 1, 1]).
  struct Batch {
    sampling::PairBatch pairs;
    torch::Tensor views1, views2;
    torch::Tensor inputs1, inputs2;
    std::vector<torch::Tensor> images;  ///< crop_device cuda: image i of the pool, defined for the batch's volumes
    torch::Tensor lo, span;
    int64_t index = 0;
  };

  /// A step's figures as the host reads them.
  struct StepOutcome {
    bool finite = true;
    std::string what;  ///< "loss" / "gradient norm" when not finite
    double loss = 0, loss_nce = 0, loss_rec = 0, grad_norm = 0;
  };

  /// A step queued on the device whose figures are on their way to the host.
  struct QueuedStep {
    int64_t step = 0;  ///< its number (1-based)
    StepReadback figures;
    int signal = 0;    ///< the stop signal this rank had seen when it was queued
    std::chrono::steady_clock::time_point queued_at;
  };

  void say(const std::string& s) { *console_ << s << std::endl; }

  void check_config() const {
    if (c_.data.empty()) throw ConfigError("pretraining option 'data': required (a folder of NIfTI files or a datalist JSON)");
    if (c_.out.empty()) throw ConfigError("pretraining option 'out': required (the output folder)");
    if (augments_in_input_units_v<Augmentations> && c_.modality != "ct")
      throw ConfigError("pretraining option 'augment': the vox2vec augmentations work in Hounsfield units and need "
                        "--modality ct");
  }

  preprocess::PreprocessOptions preprocess_options() const {
    nlohmann::json j = c_.preprocess;
    if (!j.contains("preset")) j["preset"] = c_.modality;
    if (!j.contains("patch_size")) j["patch_size"] = c_.patch;
    return preprocess::options_from_json(j);
  }

  /// A checkpoint of another preset, or made with options that change what the run computes, is refused
  /// with the keys that differ (raising --steps and the other resumable keys is allowed).
  void check_resumable(const io::CheckpointRecord& r, const nlohmann::json& now, const std::filesystem::path& p) const {
    if (r.preset != preset_name_)
      throw ConfigError("checkpoint '" + p.string() + "' is of preset " + r.preset + ", this run is " + preset_name_ +
                        "; use another --out or the same --preset");
    const auto keys = differing_keys(r.options, now, PretrainConfig::resumable_keys());
    if (keys.empty()) return;
    throw ConfigError("output folder '" + c_.out + "' holds a run with another configuration: " +
                      describe_changes(r.options, now, keys) +
                      ". Use the same options to resume, or another --out to start a new run");
  }

  /// Crops on [0, 1] back through each pair's volume window (lo, span: [B, 1, 1, 1, 1]), for augmentations
  /// in input units: the same two operations wherever the crops are, so the CPU and the GPU agree bit for bit.
  static torch::Tensor to_input_units(const torch::Tensor& x, const torch::Tensor& lo, const torch::Tensor& span) {
    return x * span + lo;
  }

  /// Batch b; `pin` (a CUDA step) puts what the step uploads in page-locked memory.
  void make_batch(int64_t b, const sampling::PairSampler& sampler, const Augmentations& augmentations,
                  const VolumePool& pool, bool pin, Batch& out) const {
    const auto indices = sampler.volumes_for_batch(pool.size(), static_cast<uint64_t>(b));
    const auto held = pool.acquire(indices);
    std::vector<const sampling::SampleSource*> ptrs(held.size(), nullptr);
    for (size_t i = 0; i < held.size(); ++i) ptrs[i] = held[i].get();
    const bool crop_on_device = c_.crop_device == "cuda";
    sampler.sample_into(out.pairs, ptrs, static_cast<uint64_t>(b), /*crop=*/!crop_on_device);
    // For a CUDA step, whatever the step uploads is put in page-locked memory here, on the loader's
    // thread, so that the step's non_blocking copies are asynchronous (from pageable memory they wait).
    const auto pinned = [&](const torch::Tensor& t) { return pin && !t.is_pinned() ? t.pin_memory() : t; };
    if constexpr (Preset::reconstruction) {
      if (!crop_on_device) {
        out.pairs.view1 = pinned(out.pairs.view1);
        out.pairs.view2 = pinned(out.pairs.view2);
      }
    }
    out.pairs.positives1 = pinned(out.pairs.positives1);
    out.pairs.positives2 = pinned(out.pairs.positives2);
    out.index = b;
    // views1/2 are kept for reuse as the augmentation's output (pinned on CUDA); the rest is per batch.
    out.inputs1 = out.inputs2 = out.lo = out.span = torch::Tensor();
    out.images.clear();
    torch::Tensor in1 = out.pairs.view1, in2 = out.pairs.view2;
    if constexpr (augments_in_input_units_v<Augmentations>) {
      // Back through each pair's volume window: x in [0, 1] -> lo + x (hi - lo).
      const int64_t* vi = out.pairs.volume_index.template data_ptr<int64_t>();
      const int64_t n = out.pairs.volume_index.numel();
      std::vector<float> lo, span;
      for (int64_t p = 0; p < n; ++p) {
        const auto r = pool.intensity_range(static_cast<size_t>(vi[p]));
        lo.push_back(static_cast<float>(r[0]));
        span.push_back(static_cast<float>(r[1] - r[0]));
      }
      const std::vector<int64_t> shape{n, 1, 1, 1, 1};
      out.lo = torch::tensor(lo).view(shape);
      out.span = torch::tensor(span).view(shape);
      if (crop_on_device) {  // the step maps its crops the same way
        out.lo = pinned(out.lo);
        out.span = pinned(out.span);
      } else {
        in1 = to_input_units(in1, out.lo, out.span);
        in2 = to_input_units(in2, out.lo, out.span);
      }
    }
    if (crop_on_device || c_.augment_device == "cuda") {  // the step augments (and maybe crops) on the GPU
      out.views1 = out.views2 = torch::Tensor();
      if (crop_on_device) {  // the step cuts the views from these volumes (uploaded on first use)
        out.images.assign(held.size(), torch::Tensor());
        for (size_t i = 0; i < held.size(); ++i)
          if (held[i]) out.images[i] = held[i]->image;
      } else {
        out.inputs1 = pinned(in1);
        out.inputs2 = pinned(in2);
      }
      return;
    }
    if (pin)  // the set augments straight into these (it keeps an output of the right shape)
      for (torch::Tensor* v : {&out.views1, &out.views2})
        if (!v->defined() || !v->is_pinned() || v->sizes() != in1.sizes())
          *v = torch::empty(in1.sizes(), torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(true));
    augmentations.augment_pair_into(in1, in2, out.views1, out.views2, static_cast<uint64_t>(b));
  }

  /// One optimiser step over this rank's micro-batches, queued on the device without waiting for it:
  /// forward and backward of each (its loss divided by their number), gradients averaged over the ranks,
  /// clip, Adam. Returns the step's figures on the device: loss, InfoNCE, reconstruction, gradient norm,
  /// and 1 if the update was taken. A non-finite loss on any micro-batch of any rank, or a non-finite
  /// averaged gradient, skips the update on every rank alike, decided on the device: before the last
  /// backward the gradient gets loss - loss added (0, or NaN for a non-finite loss), so it is NaN on every
  /// rank once averaged, and the flat Adam's finite check leaves parameters, moments and BatchNorm
  /// statistics as they were.
  torch::Tensor train_step(typename Model::Impl& model, FlatAdam& adam, FlatTensors& buffers,
                           const std::vector<Batch>& micro, const Augmentations& augmentations,
                           dist::GradientReducer& reducer, DeviceVolumes* volumes, const torch::Device& device,
                           int64_t step) {
    const bool cuda = device.is_cuda();
    const auto memory_format = cuda && c_.channels_last ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous;
    // Each host tensor is uploaded once: with the hdssl augmentations on the GPU the views before
    // augmentation are the reconstruction targets themselves (the same pinned tensor).
    std::vector<std::pair<const void*, torch::Tensor>> uploaded;
    auto upload = [&](const torch::Tensor& t, bool image) {
      if (!cuda) return t;
      torch::Tensor d;
      for (const auto& [host, dev] : uploaded)
        if (host == t.unsafeGetTensorImpl()) d = dev;
      if (!d.defined()) {
        d = t.to(device, /*non_blocking=*/true);
        uploaded.emplace_back(t.unsafeGetTensorImpl(), d);
      }
      return image ? d.contiguous(memory_format) : d;
    };
    // BatchNorm statistics change in forward: a copy kept aside so that a skipped step leaves no trace.
    const std::vector<torch::Tensor> saved = buffers.snapshot();
    model.train();
    adam.zero_grad();
    const auto n = static_cast<double>(micro.size());
    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device);
    torch::Tensor loss = torch::zeros({}, f64), loss_nce = torch::zeros({}, f64), loss_rec = torch::zeros({}, f64);
    for (size_t j = 0; j < micro.size(); ++j) {
      const Batch& batch = micro[j];
      uploaded.clear();  // an earlier micro-batch's tensors may be freed once its graph is
      nn::PretrainBatch pb;
      if (batch.views1.defined()) {
        pb.view1 = upload(batch.views1, true);
        pb.view2 = upload(batch.views2, true);
      } else {  // augment_device cuda: the same streams as the loader's CPU path, on the GPU
        torch::Tensor in1, in2;
        if (!batch.images.empty()) {  // crop_device cuda: the sampler's crops, cut from the resident volumes
          std::tie(in1, in2) = volumes->crop(batch.pairs, batch.images, c_.patch);
          if constexpr (Preset::reconstruction) {
            pb.target1 = in1.contiguous(memory_format);
            pb.target2 = in2.contiguous(memory_format);
          }
          if (batch.span.defined()) {
            const torch::Tensor lo = upload(batch.lo, false), span = upload(batch.span, false);
            in1 = to_input_units(in1, lo, span);
            in2 = to_input_units(in2, lo, span);
          }
        } else {
          in1 = upload(batch.inputs1, false);
          in2 = upload(batch.inputs2, false);
        }
        augmentations.augment_pair_into(in1, in2, pb.view1, pb.view2, static_cast<uint64_t>(batch.index));
        pb.view1 = pb.view1.contiguous(memory_format);
        pb.view2 = pb.view2.contiguous(memory_format);
      }
      pb.voxels1 = upload(batch.pairs.positives1, false);
      pb.voxels2 = upload(batch.pairs.positives2, false);
      if constexpr (Preset::reconstruction) {
        if (!pb.target1.defined()) {
          pb.target1 = upload(batch.pairs.view1, true);
          pb.target2 = upload(batch.pairs.view2, true);
        }
      }
      // The sampler's rows lie inside the patch by construction: no device read to check them again.
      pb.index_check = nn::IndexCheck::shapes;
      nn::PretrainLosses losses;
      {
        ops::compat::CudaBf16Autocast autocast(cuda && c_.bf16);
        losses = model.forward(pb);
      }
      if (hooks_.on_losses) hooks_.on_losses(step, losses);
      const torch::Tensor total = losses.total.detach();
      loss.add_(total.to(torch::kFloat64) / n);
      loss_nce.add_(losses.info_nce.detach().to(torch::kFloat64) / n);
      if (losses.reconstruction.defined()) loss_rec.add_(losses.reconstruction.detach().to(torch::kFloat64) / n);
      if (j + 1 == micro.size()) {
        adam.poison_unless_finite(loss);  // the losses of every micro-batch so far
        reducer.prepare();                // the gradient is complete after this backward: reduce it as it comes
      }
      (n > 1 ? losses.total / n : losses.total).backward();
    }
    reducer.finish();
    const torch::Tensor norm = adam.step(c_.grad_clip > 0 ? c_.grad_clip : INFINITY);
    buffers.restore_unless(adam.applied(), saved);
    return torch::stack({loss, loss_nce, loss_rec, norm.to(torch::kFloat64), adam.applied().to(torch::kFloat64)});
  }

  static std::vector<CurveSeries> curve_series() {
    return {{"loss", "total loss"}, {"loss_nce", "InfoNCE"}, {"loss_rec", "reconstruction MSE"}, {"data_wait", "data-wait share"}};
  }

  std::string progress_line(const nlohmann::json& r, double rate) const {
    char buf[512];
    const int64_t step = r.at("step").get<int64_t>();
    const double eta = (c_.steps - step) / std::max(1e-9, rate);
    std::string terms = "nce " + short_value(r.at("loss_nce").get<double>());
    if (r.contains("loss_rec")) terms += ", rec " + short_value(r.at("loss_rec").get<double>());
    std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %s (%s)  lr %.2e  %.3g steps/s  data wait %.1f%%  ETA %s",
                  static_cast<long long>(step), static_cast<long long>(c_.steps),
                  short_value(r.at("loss").get<double>()).c_str(), terms.c_str(), c_.lr, rate,
                  100.0 * r.at("data_wait").get<double>(), format_duration(eta).c_str());
    return buf;
  }
  static std::string short_value(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return buf;
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  /// backbone.safetensors (the reference FPN's key names: PyTorch's FPN3d loads it with strict=True) and
  /// pretrain.safetensors (every module, for a later look at the heads).
  void write_outputs(typename Model::Impl& model, const std::filesystem::path& out) const {
    const std::map<std::string, std::string> meta = {
        {"format", "hdssl-backbone/1"},
        {"preset", preset_name_},
        {"in_channels", std::to_string(model.options.in_channels)},
        {"base_channels", std::to_string(model.options.base_channels)},
        {"levels", std::to_string(model.options.levels)}};
    io::save_weights(out / "backbone.safetensors", *model.backbone, "", meta);
    io::save_weights(out / "pretrain.safetensors", model, "", meta);
  }

  PretrainConfig c_;
  std::string preset_name_;
  std::ostream* console_;
  NullStream null_console_;
  Hooks hooks_;
  int stop_votes_ = 0;  ///< the signal that stops every rank after this step (0: go on)
};

}  // namespace hdssl::train
