#pragma once
// The data-parallel flags of the training drivers (hdssl-pretrain, hdssl-linear-eval, hdssl-finetune):
// --nproc N starts N local ranks of the same command (include/hdssl/train/launch.hpp); --backend,
// --dist-timeout-s and --bucket-mb are configuration keys like any other. Under torchrun the ranks come
// from its environment and --nproc is not needed. See docs/distributed.md.
#include "config_flags.hpp"

#include <hdssl/train/launch.hpp>

#include <CLI/CLI.hpp>

#include <optional>

namespace hdssl::cli {

struct DistributedFlags {
  int nproc = 1;

  DistributedFlags(CLI::App& app, ConfigFlags& flags) {
    app.add_option("--nproc", nproc,
                   "data-parallel ranks to start on this machine (default 1; under torchrun leave it out: its "
                   "RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT are read)")
        ->check(CLI::Range(1, 1 << 16));
    flags.add("--backend", "backend", "c10d backend with several ranks: auto (nccl on CUDA where built in, else gloo) | gloo | nccl");
    flags.add("--dist-timeout-s", "dist_timeout_s", "seconds a collective may wait for the other ranks before the run fails");
    flags.add("--bucket-mb", "bucket_mb", "size of the flattened gradient buckets all-reduced while backward runs");
  }

  /// With --nproc N > 1 in a process that is not already a rank: runs the N ranks and returns the exit
  /// status to end with; otherwise nothing (this process trains).
  std::optional<int> launch(char** argv) const {
    if (nproc <= 1 || hdssl::train::started_as_rank()) return std::nullopt;
    return hdssl::train::launch_local_ranks(nproc, argv);
  }
};

}  // namespace hdssl::cli
