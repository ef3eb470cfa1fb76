// Time of one pre-training step (forward + backward of both views, gather, projection, loss) per preset.
//
// CPU: 2 pairs of 32x32x16 patches, 256 positive voxels per pair (a size the tests can afford), with the
// trainer's clip + Adam.
// CUDA (registered only when a GPU is visible): the paper's step, 10 pairs of 128x128x32 patches and
// 1024 positives per pair, forward + backward + grad-norm clip + Adam, synchronised before the clock
// stops, in the trainer's two modes: fp32 (fp32 weights, TF32 convolutions: PyTorch's default and the
// reference's) and bf16cl (bf16 autocast + channels-last-3d: hdssl-pretrain's default on CUDA), cuDNN
// autotuning on; clip + Adam as the trainer runs them, over flat buffers with the skip decided on the
// device (train/flat_adam.hpp), and for comparison once with LibTorch's clip_grad_norm_ + torch::optim::Adam
// (mode bf16cl_libtorch_adam). Counters: peak_GiB (the step's peak allocated memory) and the time of each phase
// (fwd_ms, bwd_ms, opt_ms: clip + Adam), measured in extra steps with a synchronisation between phases.
// The PyTorch baseline of the same step: benchmarks/pytorch/torch_step_bench.py (scripts/gpu_check.sh runs both).
#include <benchmark/benchmark.h>

#include <torch/torch.h>

#include <string>

#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/nn/pretrain_model.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/presets.hpp"
#include "hdssl/train/flat_adam.hpp"
#include "hdssl/train/flat_tensors.hpp"

#if HDSSL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <chrono>
#include <optional>
#include <vector>

namespace {

struct StepSize {
  int64_t pairs, x, y, z, positives_per_pair;
};

hdssl::nn::PretrainBatch make_batch(const StepSize& s, torch::Device device) {
  auto opts = torch::TensorOptions().device(device);
  hdssl::nn::PretrainBatch b;
  b.view1 = torch::rand({s.pairs, 1, s.x, s.y, s.z}, opts);
  b.view2 = torch::rand({s.pairs, 1, s.x, s.y, s.z}, opts);
  b.target1 = torch::rand({s.pairs, 1, s.x, s.y, s.z}, opts);
  b.target2 = torch::rand({s.pairs, 1, s.x, s.y, s.z}, opts);
  const int64_t n = s.pairs * s.positives_per_pair;
  const auto patch = torch::arange(s.pairs).repeat_interleave(s.positives_per_pair);
  auto voxels = [&] {
    return torch::stack({patch, torch::randint(0, s.x, {n}), torch::randint(0, s.y, {n}), torch::randint(0, s.z, {n})}, 1)
        .to(device);
  };
  b.voxels1 = voxels();
  b.voxels2 = voxels();
  return b;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

enum class Optimiser { flat, libtorch };

/// One training step as hdssl-pretrain runs it; `bf16cl` = bf16 autocast and channels-last-3d (CUDA only).
template <class Preset>
void step(benchmark::State& state, StepSize size, torch::Device device, Optimiser optimiser, bool bf16cl) {
  torch::manual_seed(0);
  const bool cuda = device.is_cuda();
  if (cuda) hdssl::ops::compat::use_training_step_cuda_settings();  // as hdssl-pretrain
  hdssl::nn::PretrainModel<Preset> model;
  model->to(device);
  if (bf16cl) hdssl::nn::to_channels_last(*model);
  model->train();
  const auto params = model->parameters();
  torch::optim::Adam adam(params, torch::optim::AdamOptions(3e-4));
  std::optional<hdssl::train::FlatAdam> flat;
  std::optional<hdssl::train::FlatTensors> buffers;
  if (optimiser == Optimiser::flat) flat.emplace(adam), buffers.emplace(model->buffers());
  auto batch = make_batch(size, device);
  if (bf16cl)
    for (auto* t : {&batch.view1, &batch.view2, &batch.target1, &batch.target2})
      *t = t->contiguous(at::MemoryFormat::ChannelsLast3d);
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  // phase: 0 = whole step, 1..3 = time forward, backward, clip + Adam separately (adds two syncs).
  double phase_s[3] = {0, 0, 0};
  auto one_step = [&](bool phases) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> saved;
    if (flat) saved = buffers->snapshot(), flat->zero_grad();
    else adam.zero_grad();
    hdssl::nn::PretrainLosses losses;
    {
      hdssl::ops::compat::CudaBf16Autocast autocast(bf16cl);
      losses = model->forward(batch);
    }
    if (phases) sync(), phase_s[0] += seconds_since(t0), t0 = std::chrono::steady_clock::now();
    if (flat) flat->poison_unless_finite(losses.total);  // as the trainer does
    losses.total.backward();
    if (phases) sync(), phase_s[1] += seconds_since(t0), t0 = std::chrono::steady_clock::now();
    if (optimiser == Optimiser::flat) {
      flat->step(1.0);
      buffers->restore_unless(flat->applied(), saved);
    } else if (optimiser == Optimiser::libtorch) {
      hdssl::ops::compat::clip_grad_norm(params, 1.0);  // a host read of the norm
      adam.step();
    }
    sync();
    if (phases) phase_s[2] += seconds_since(t0);
    benchmark::DoNotOptimize(losses.total.data_ptr());
  };
  one_step(false);  // warm-up: cuDNN autotuning, allocator
#if HDSSL_WITH_CUDA
  if (cuda) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  for (auto _ : state) one_step(false);
#if HDSSL_WITH_CUDA
  if (cuda) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    state.counters["peak_GiB"] = static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024 * 1024);
  }
#endif
  constexpr int kPhaseSteps = 5;
  for (int i = 0; i < kPhaseSteps; ++i) one_step(true);
  state.counters["fwd_ms"] = 1e3 * phase_s[0] / kPhaseSteps;
  state.counters["bwd_ms"] = 1e3 * phase_s[1] / kPhaseSteps;
  state.counters["opt_ms"] = 1e3 * phase_s[2] / kPhaseSteps;
  state.counters["patches"] = double(2 * size.pairs);
}

void gather(benchmark::State& state, torch::Device device) {
  // The hdssl pyramid of 20 patches of 128x128x32 is too big for a CPU benchmark; gather from the
  // vox2vec-size pyramid of 4 patches of 64x64x32 instead (CPU) and the full size on a GPU.
  const bool gpu = device.is_cuda();
  const int64_t B = gpu ? 20 : 4, X = gpu ? 128 : 64, Y = gpu ? 128 : 64, Z = 32, N = B * 1024;
  std::vector<torch::Tensor> pyramid;
  for (int i = 0; i < 5; ++i)
    pyramid.push_back(torch::randn({B, int64_t(32) << i, X >> i, Y >> i, Z >> i}, torch::TensorOptions().device(device)));
  const auto index =
      torch::stack({torch::randint(0, B, {N}), torch::randint(0, X, {N}), torch::randint(0, Y, {N}), torch::randint(0, Z, {N})}, 1)
          .to(device);
  for (auto _ : state) {
    auto g = hdssl::nn::gather_pyramid(pyramid, index);
    if (gpu) torch::cuda::synchronize();
    benchmark::DoNotOptimize(g.data_ptr());
  }
}

const StepSize kSmall{2, 32, 32, 16, 256};
const StepSize kPaper{10, 128, 128, 32, 1024};

}  // namespace

int main(int argc, char** argv) {
  const torch::Device cpu(torch::kCPU);
  benchmark::RegisterBenchmark("step_cpu/vox2vec/2x32x32x16", step<hdssl::presets::vox2vec>, kSmall, cpu, Optimiser::flat, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("step_cpu/hdssl/2x32x32x16", step<hdssl::presets::hdssl>, kSmall, cpu, Optimiser::flat, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("gather_cpu/4x64x64x32", gather, cpu)->Unit(benchmark::kMillisecond)->UseRealTime();
  if (torch::cuda::is_available()) {
    const torch::Device gpu(torch::kCUDA);
    for (const bool bf16cl : {false, true}) {
      const std::string mode = bf16cl ? "bf16cl" : "fp32";
      benchmark::RegisterBenchmark(("step_cuda/" + mode + "/vox2vec/10x128x128x32").c_str(), step<hdssl::presets::vox2vec>,
                                   kPaper, gpu, Optimiser::flat, bf16cl)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
      benchmark::RegisterBenchmark(("step_cuda/" + mode + "/hdssl/10x128x128x32").c_str(), step<hdssl::presets::hdssl>,
                                   kPaper, gpu, Optimiser::flat, bf16cl)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    }
    benchmark::RegisterBenchmark("step_cuda/bf16cl_libtorch_adam/hdssl/10x128x128x32", step<hdssl::presets::hdssl>, kPaper,
                                 gpu, Optimiser::libtorch, true)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    benchmark::RegisterBenchmark("gather_cuda/20x128x128x32", gather, gpu)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
