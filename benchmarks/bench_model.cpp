// Time of one pre-training step (forward + backward of both views, gather, projection, loss) per preset.
//
// CPU: 2 pairs of 32x32x16 patches, 256 positive voxels per pair (a size the tests can afford).
// CUDA (registered only when a GPU is visible): the paper's step, 10 pairs of 128x128x32 patches and
// 1024 positives per pair, fp32 weights (cuDNN convolutions may use TF32, PyTorch's default), plus
// an Adam step, synchronised before the clock stops.
#include <benchmark/benchmark.h>

#include <torch/torch.h>

#include <string>

#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/pretrain_model.hpp"
#include "hdssl/presets.hpp"

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

template <class Preset>
void step(benchmark::State& state, StepSize size, torch::Device device, bool with_adam) {
  torch::manual_seed(0);
  hdssl::nn::PretrainModel<Preset> model;
  model->to(device);
  model->train();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(3e-4));
  const auto batch = make_batch(size, device);
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  for (auto _ : state) {
    adam.zero_grad();
    auto losses = model->forward(batch);
    losses.total.backward();
    if (with_adam) adam.step();
    sync();
    benchmark::DoNotOptimize(losses.total.data_ptr());
  }
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
  benchmark::RegisterBenchmark("step_cpu/vox2vec/2x32x32x16", step<hdssl::presets::vox2vec>, kSmall, cpu, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("step_cpu/hdssl/2x32x32x16", step<hdssl::presets::hdssl>, kSmall, cpu, false)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("gather_cpu/4x64x64x32", gather, cpu)->Unit(benchmark::kMillisecond)->UseRealTime();
  if (torch::cuda::is_available()) {
    const torch::Device gpu(torch::kCUDA);
    benchmark::RegisterBenchmark("step_cuda_adam/vox2vec/10x128x128x32", step<hdssl::presets::vox2vec>, kPaper, gpu, true)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
    benchmark::RegisterBenchmark("step_cuda_adam/hdssl/10x128x128x32", step<hdssl::presets::hdssl>, kPaper, gpu, true)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
    benchmark::RegisterBenchmark("gather_cuda/20x128x128x32", gather, gpu)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
