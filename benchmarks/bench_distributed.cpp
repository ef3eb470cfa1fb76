// The cost of data parallelism per step: the gradient all-reduce of the `hdssl` pre-training model
// (backbone and heads, about 47.6 M float32 parameters) through the trainers' own GradientReducer, in its
// buckets, over c10d (Gloo on the CPU, NCCL on CUDA where built in).
//
//   bench_distributed --nproc 2                 two local ranks (Gloo on loopback)
//   bench_distributed --device cuda --alone     one rank with a real NCCL process group (world size 1)
//   torchrun --nproc-per-node 8 bench_distributed --device cuda
//
// Prints, on rank 0: parameters, buckets, the median all-reduce time per step over --iters steps (after
// two warm-up steps) and the algorithm bandwidth (bytes / time) and ring bus bandwidth (2 (n-1)/n x that).
// The driver's own benchmarks/distributed.sh adds the 1-rank vs 2-rank training throughput.
#include <hdssl/nn/pretrain_model.hpp>
#include <hdssl/presets.hpp>
#include <hdssl/train/distributed.hpp>
#include <hdssl/train/gradient_reducer.hpp>
#include <hdssl/train/launch.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"All-reduce time per step of the hdssl model's gradients (GradientReducer over c10d)", "bench_distributed"};
  int nproc = 1, iters = 10;
  double bucket_mb = hdssl::train::DistributedOptions{}.bucket_mb;
  std::string device = "cpu", backend = "auto";
  bool alone = false;
  app.add_option("--nproc", nproc, "local ranks to start (1 = this process only)")->check(CLI::Range(1, 1024));
  app.add_option("--iters", iters, "timed steps")->check(CLI::Range(1, 100000));
  app.add_option("--bucket-mb", bucket_mb, "gradient bucket size");
  app.add_option("--device", device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--backend", backend, "auto | gloo | nccl")->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  app.add_flag("--alone", alone, "with one rank, still create the process group and all-reduce (the path's own cost)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (nproc > 1 && !hdssl::train::started_as_rank()) return hdssl::train::launch_local_ranks(nproc, argv);
    const auto env = hdssl::train::dist::LaunchEnvironment::from_environment();
    const torch::Device dev = device == "cuda" ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank))
                                               : torch::Device(torch::kCPU);
    hdssl::train::DistributedOptions o;
    o.backend = backend;
    o.bucket_mb = bucket_mb;
    o.timeout_s = 300;
    const auto group = hdssl::train::dist::ProcessGroup::join(env, o, dev, alone);
    hdssl::nn::PretrainModel<hdssl::presets::hdssl> model;
    model->to(dev);
    const auto params = model->parameters();
    int64_t n = 0;
    for (const auto& p : params) n += p.numel();
    hdssl::train::dist::GradientReducer reducer(group, params, bucket_mb);
    std::vector<double> ms;
    for (int it = 0; it < iters + 2; ++it) {
      for (const auto& p : params) p.mutable_grad() = torch::randn_like(p);
      if (dev.is_cuda()) torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      reducer.prepare();
      reducer.finish();  // no backward: every bucket starts here, so this is the whole reduction
      if (dev.is_cuda()) torch::cuda::synchronize();
      if (it >= 2) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2], bytes = 4.0 * static_cast<double>(n);
    if (group.is_main()) {
      std::printf("ranks %d, backend %s, device %s: %.2f M parameters (%.1f MB) in %zu buckets of <= %.1f MB\n",
                  group.size(), group.backend_name().c_str(), dev.str().c_str(), n / 1e6, bytes / 1e6, reducer.buckets(),
                  bucket_mb);
      std::printf("all-reduce per step: median %.2f ms (min %.2f, max %.2f over %d steps)", med, ms.front(), ms.back(), iters);
      if (group.size() > 1 || alone)
        std::printf(", algorithm bandwidth %.2f GB/s, ring bus bandwidth %.2f GB/s\n", bytes / med / 1e6,
                    2.0 * (group.size() - 1) / group.size() * bytes / med / 1e6);
      else
        std::printf(" (a world of one: nothing is reduced)\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_distributed: error: " << e.what() << std::endl;
    return 1;
  }
}
