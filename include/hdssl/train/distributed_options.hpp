#pragma once
// The numbers of data-parallel training that a run is told (train/distributed.hpp does the work), shared by
// the pre-training and downstream configurations: one JSON form, one reader. Who takes part (rank, world
// size, rendezvous address) comes from the launcher's environment, not from here.
#include <nlohmann/json.hpp>

#include <set>
#include <string>

#include "hdssl/core/json_options.hpp"

namespace hdssl::train {

struct DistributedOptions {
  std::string backend = "auto";  ///< auto (nccl on CUDA where built in, else gloo) | gloo | nccl
  double timeout_s = 1800;       ///< a collective that waits longer fails the run (PyTorch's default: 30 min)
  double bucket_mb = 4;          ///< gradients are all-reduced in flattened buckets of about this size

  /// Keys of the flat configuration; all of them may change on resume (they change how, not what, is computed).
  static const std::set<std::string>& keys() {
    static const std::set<std::string> k = {"backend", "dist_timeout_s", "bucket_mb"};
    return k;
  }
};

inline void add_to_json(nlohmann::json& j, const DistributedOptions& d) {
  j["backend"] = d.backend;
  j["dist_timeout_s"] = d.timeout_s;
  j["bucket_mb"] = d.bucket_mb;
}

inline void read_options(OptionReader& r, DistributedOptions& d) {
  r.choice<std::string>("backend", d.backend, {{"auto", "auto"}, {"gloo", "gloo"}, {"nccl", "nccl"}});
  r.read<double>("dist_timeout_s", d.timeout_s, 1.0, 7 * 24 * 3600.0);
  r.read<double>("bucket_mb", d.bucket_mb, 0.01, 4096.0);
}

}  // namespace hdssl::train
