#pragma once
// The flags hdssl-linear-eval and hdssl-finetune share: every key of DownstreamConfig that both use,
// with its help text, on top of ConfigFlags (flags override --config FILE; one strict reader).
#include "config_flags.hpp"

#include <hdssl/train/downstream_config.hpp>

#include <CLI/CLI.hpp>

namespace hdssl::cli {

inline void add_downstream_flags(ConfigFlags& flags) {
  flags.add("--data", "data", "MONAI / Decathlon datalist JSON: {\"training\": [{\"image\": ..., \"label\": ...}], \"validation\": [...], \"test\": [...]}, paths relative to it");
  flags.add("--classes", "classes", "class name -> label value(s), inline JSON or a file, e.g. '{\"liver\": 6, \"kidneys\": [2, 3]}'; other values are background (default: every label value its own class)");
  flags.add("--folds", "folds", "K-fold cross-validation over the training list (splits written to OUT/splits; 0 = the lists as given)");
  flags.add("--fold", "fold", "with --folds: run only this fold (-1 = all)");
  flags.add("--out", "out", "output folder (created; an unfinished run there is resumed)");
  flags.add("--modality", "modality", "preprocessing preset: ct | mri (must match what the backbone was pre-trained with)");
  flags.add("--preprocess", "preprocess", "JSON object overriding preprocessing options (docs/preprocess.md)");
  flags.add("--cache", "cache", "preprocessing cache folder (default OUT/cache)");
  flags.add("--weights", "weights", "pre-trained backbone: backbone.safetensors, pretrain.safetensors or an hdssl-pretrain output folder; none = random initialisation");
  flags.add("--base-channels", "base_channels", "backbone width without --weights (0 = 32, the hdssl preset; with weights 0 = the file's)");
  flags.add("--levels", "levels", "pyramid levels without --weights (0 = 5; with weights 0 = the file's)");
  flags.add("--patch", "patch", "training patch size X,Y,Z");
  flags.add("--batch", "batch", "patches per step, all from one random training volume");
  flags.add("--foreground-fraction", "foreground_fraction", "share of patches centred on a random foreground voxel of a random class");
  flags.add("--steps", "steps", "optimiser steps");
  flags.add("--lr", "lr", "Adam learning rate of the head (and of the backbone where it trains)");
  flags.add("--seed", "seed", "seed of initialisation, folds and batches");
  flags.add("--max-nonfinite", "max_nonfinite", "stop after this many non-finite steps in a row (each is skipped)");
  flags.add("--val-every", "val_every", "steps between validations on the validation list (0 = only at the end); the best model is kept");
  flags.add("--window", "window", "sliding-window size X,Y,Z for validation and test");
  flags.add("--stride", "stride", "sliding-window stride X,Y,Z (the last window ends at the border)");
  flags.add("--blend", "blend", "window blending: gaussian (MONAI's default) | constant | overwrite (the reference's)");
  flags.add("--window-batch", "window_batch", "windows per forward pass");
  flags.add("--pngs", "pngs", "write a slice picture per test volume (true/false)");
  flags.add("--checkpoint-every", "checkpoint_every", "steps between checkpoints (also at the end and on SIGINT/SIGTERM)");
  flags.add("--keep-checkpoints", "keep_checkpoints", "newest checkpoints kept");
  flags.add("--log-every", "log_every", "steps between progress lines");
  flags.add("--device", "device", "auto | cpu | cuda");
  flags.add("--bf16", "bf16", "bf16 autocast on CUDA");
  flags.add("--channels-last", "channels_last", "channels-last-3d on CUDA");
  flags.add("--threads", "threads", "LibTorch threads (0 = every core)");
}

}  // namespace hdssl::cli
