// hdssl-linear-eval: linear (or non-linear) probing of a pre-trained backbone. The backbone is frozen (eval
// mode, no gradients); only the head trains. `--weights none` probes a random-initialised backbone, the
// baseline a pre-trained one must beat. Writes OUT/results.json / results.md (Dice per class and volume),
// OUT/predictions/ (label maps in each input's geometry + PNGs) and OUT/model.safetensors for hdssl-predict.
#include "cli_common.hpp"
#include "distributed_flags.hpp"
#include "downstream_flags.hpp"

#include <hdssl/train/segmentation_trainer.hpp>

int main(int argc, char** argv) {
  CLI::App app{"Linear / non-linear probing of a frozen pre-trained backbone on a labelled datalist (method.md 7, 8).\n"
               "Trains the head on the training list, keeps the best by validation Dice, segments and scores the\n"
               "test list (or every fold with --folds). Re-running with the same --out resumes.",
               "hdssl-linear-eval"};
  hdssl::train::DownstreamConfig defaults;
  defaults.setup = "probe";
  hdssl::cli::ConfigFlags flags(app, nlohmann::json(defaults));
  hdssl::cli::add_downstream_flags(flags);
  flags.add("--head", "head", "linear (per-level 1x1x1 convs, summed) | nonlinear (a 1x1x1 FPN decoder)");
  flags.add("--standardise-features", "standardise_features",
            "standardise each backbone channel by its mean / std on training patches before the head (true/false; "
            "false = the reference's raw features, which leaves an untrained backbone's tiny features unlearnable)");
  hdssl::cli::DistributedFlags distributed(app, flags);
  std::string config_file;
  app.add_option("--config", config_file, "JSON file of options (keys as in OUT/config.json); flags override it")
      ->check(CLI::ExistingFile);
  return hdssl::cli::run(app, argc, argv, [&] {
    if (const auto status = distributed.launch(argv)) return *status;
    nlohmann::json j = flags.merged(config_file);
    j["setup"] = "probe";
    hdssl::train::install_stop_handlers();
    // Finished, or stopped by a signal with a checkpoint written: both exit 0.
    hdssl::train::SegmentationTrainer(j.get<hdssl::train::DownstreamConfig>()).run();
    return hdssl::cli::kExitOk;
  });
}
