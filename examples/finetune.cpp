// hdssl-finetune: fine-tuning a pre-trained backbone with a linear head (the paper's schedule: backbone
// frozen for the first third of the steps, then trained at a lr rising from 0.1x to 1x of the head's), or
// training the same network from scratch (--from-scratch), the baseline of the few-label comparison.
// Outputs as hdssl-linear-eval.
#include "cli_common.hpp"
#include "distributed_flags.hpp"
#include "downstream_flags.hpp"

#include <hdssl/train/segmentation_trainer.hpp>

int main(int argc, char** argv) {
  CLI::App app{"Fine-tuning a pre-trained backbone + linear head on a labelled datalist, or the same network from\n"
               "scratch (method.md 7). Keeps the best model by validation Dice, segments and scores the test list\n"
               "(or every fold with --folds). Re-running with the same --out resumes.",
               "hdssl-finetune"};
  hdssl::train::DownstreamConfig defaults;
  defaults.setup = "finetune";
  hdssl::cli::ConfigFlags flags(app, nlohmann::json(defaults));
  hdssl::cli::add_downstream_flags(flags);
  flags.add("--schedule", "schedule", "intended (frozen 1/3 of the steps, then backbone lr 0.1x doubling every steps/150 to 1x) | reference (the published code: BN trains while frozen, then everything at 0.2x lr)");
  bool from_scratch = false;
  app.add_flag("--from-scratch", from_scratch, "train backbone and head from a random initialisation at the full lr (the baseline; no --weights)");
  hdssl::cli::DistributedFlags distributed(app, flags);
  std::string config_file;
  app.add_option("--config", config_file, "JSON file of options (keys as in OUT/config.json); flags override it")
      ->check(CLI::ExistingFile);
  return hdssl::cli::run(app, argc, argv, [&] {
    if (const auto status = distributed.launch(argv)) return *status;
    nlohmann::json j = flags.merged(config_file);
    if (from_scratch) {
      if (j.contains("weights") && j["weights"] != "" && j["weights"] != "none")
        throw hdssl::ConfigError("--from-scratch trains from a random initialisation: leave out --weights");
      j["setup"] = "scratch";
    } else {
      j["setup"] = "finetune";
      if (!j.contains("weights") || j["weights"] == "" || j["weights"] == "none")
        throw hdssl::ConfigError("option --weights: fine-tuning needs pre-trained weights (or --from-scratch for the baseline)");
    }
    j["head"] = "linear";
    hdssl::train::install_stop_handlers();
    hdssl::train::SegmentationTrainer(j.get<hdssl::train::DownstreamConfig>()).run();
    return hdssl::cli::kExitOk;
  });
}
