// hdssl-pretrain: self-supervised pre-training of a 3-D FPN backbone on unlabelled CT/MRI (the paper's
// method and its vox2vec baseline). Options come from --config FILE (JSON, strict) and the command line,
// which overrides it; the effective configuration is written to OUT/config.json. Running the same command
// again with the same --out resumes from the newest checkpoint. See docs/train.md.
#include "cli_common.hpp"
#include "config_flags.hpp"
#include "distributed_flags.hpp"

#include <hdssl/train/run_pretraining.hpp>
#include <hdssl/train/stop_signal.hpp>

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{
      "Self-supervised pre-training of a 3-D feature-pyramid U-Net on unlabelled CT/MRI volumes.\n"
      "Writes to OUT: backbone.safetensors (PyTorch FPN key names), pretrain.safetensors, checkpoints/,\n"
      "config.json, metrics.jsonl and curve.png. Re-running with the same --out resumes from the newest\n"
      "checkpoint; SIGINT/SIGTERM write a checkpoint and exit 0.",
      "hdssl-pretrain"};
  const nlohmann::json defaults = hdssl::train::PretrainConfig{};
  hdssl::cli::ConfigFlags flags(app, defaults);
  flags.add("--data", "data", "folder of .nii/.nii.gz files, or a MONAI datalist JSON ({\"training\": [{\"image\": ...}]}, paths relative to it)");
  flags.add("--out", "out", "output folder (created; an existing run there is resumed)");
  flags.add("--modality", "modality", "preprocessing preset: ct (1x1x2 mm, window [-1350, 1000] HU) or mri (1.5 mm, percentiles 0.01/99.9)");
  flags.add("--preprocess", "preprocess", "JSON object overriding preprocessing options, e.g. '{\"spacing\": null}' (docs/preprocess.md)");
  flags.add("--cache", "cache", "preprocessing cache folder (default OUT/cache)");
  flags.add("--memory-budget-gb", "memory_budget_gb", "preprocessed volumes kept in memory; the rest are read from the cache when needed");
  flags.add("--preset", "preset", "model: vox2vec | hdssl | hdssl_reference | ablation_architecture | ablation_loss");
  flags.add("--augment", "augment", "augmentations: hdssl (shuffle, Bezier, in-painting) | vox2vec (blur/sharpen, noise, window; CT only)");
  flags.add("--augment-options", "augment_options", "JSON object of per-augmentation options, e.g. '{\"bezier\": {\"p\": 0.5}}' (docs/augment.md)");
  flags.add("--base-channels", "base_channels", "channels of the finest level, doubling per level (0 = the preset's: 32 hdssl, 16 vox2vec)");
  flags.add("--levels", "levels", "pyramid levels, 2..8 (0 = the preset's: 5 hdssl, 6 vox2vec)");
  flags.add("--temperature", "temperature", "InfoNCE temperature");
  flags.add("--reconstruction-weight", "reconstruction_weight", "lambda of L = L_nce + lambda L_mse (default: the preset's, 10)");
  flags.add("--patch", "patch", "patch size X,Y,Z in voxels");
  flags.add("--pairs", "pairs", "pairs of overlapping crops per batch (2x as many patches)");
  flags.add("--positives", "positives", "positive voxels per pair (fewer where the overlap has fewer)");
  flags.add("--volumes-per-batch", "volumes_per_batch", "distinct volumes the pairs of one batch come from (the reference: 1)");
  flags.add("--steps", "steps", "optimiser steps in all (raising it on resume continues the run)");
  flags.add("--seed", "seed", "seed of every random stream (initialisation, batches, augmentations)");
  flags.add("--lr", "lr", "Adam learning rate (betas 0.9/0.999, no weight decay, constant)");
  flags.add("--grad-clip", "grad_clip", "global gradient-norm clip (0 = off)");
  flags.add("--accumulate", "accumulate", "micro-batches of --pairs per rank whose averaged gradients make one step (global batch: ranks x accumulate x pairs)");
  flags.add("--max-nonfinite", "max_nonfinite", "stop after this many non-finite steps in a row (each is skipped)");
  flags.add("--checkpoint-every", "checkpoint_every", "steps between checkpoints (also at the end and on SIGINT/SIGTERM)");
  flags.add("--keep-checkpoints", "keep_checkpoints", "newest checkpoints kept");
  flags.add("--log-every", "log_every", "steps between progress lines and metrics.jsonl records");
  flags.add("--device", "device", "auto | cpu | cuda");
  flags.add("--augment-device", "augment_device", "cpu | cuda: augment on the loader's CPU threads, or on the GPU after upload (needs --device cuda; the same views, noise within a float ulp)");
  flags.add("--crop-device", "crop_device", "cpu | cuda: cut the views on the loader's threads, or on the GPU from volumes uploaded once (needs --augment-device cuda; the same views)");
  flags.add("--device-volumes-gb", "device_volumes_gb", "with --crop-device cuda: GPU memory for the volumes kept there (least recently used evicted)");
  flags.add("--bf16", "bf16", "bf16 autocast on CUDA (true/false)");
  flags.add("--channels-last", "channels_last", "channels-last-3d layout on CUDA (true/false)");
  flags.add("--threads", "threads", "thread budget for compute and loader together (0 = every core)");
  flags.add("--loader-threads", "loader_threads", "background batch workers taken from the budget (-1 = auto: 0 on CPU, a quarter on CUDA)");
  flags.add("--prefetch", "prefetch", "batches the loader may prepare ahead");
  hdssl::cli::DistributedFlags distributed(app, flags);
  std::string config_file;
  app.add_option("--config", config_file, "JSON file of options (keys as in OUT/config.json); flags override it")
      ->check(CLI::ExistingFile);

  return hdssl::cli::run(app, argc, argv, [&] {
    if (const auto status = distributed.launch(argv)) return *status;
    const nlohmann::json effective = flags.merged(config_file);
    const auto config = effective.get<hdssl::train::PretrainConfig>();
    hdssl::train::install_stop_handlers();
    const auto result = hdssl::train::run_pretraining(config);
    if (hdssl::train::dist::LaunchEnvironment::from_environment().rank != 0) return hdssl::cli::kExitOk;  // rank 0 reports
    std::cout << "steps " << result.step << ", " << result.volumes_used << " volumes used, " << result.volumes_skipped
              << " skipped, " << result.skipped_nonfinite << " non-finite steps skipped, data wait "
              << static_cast<int>(100 * result.data_wait_share + 0.5) << "% of " << result.seconds << " s" << std::endl;
    return hdssl::cli::kExitOk;
  });
}
