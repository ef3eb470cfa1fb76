// Microbenchmarks of hdssl's CUDA kernels against the memory-bandwidth limit and against naive tensor-op
// versions of the same work, in one binary on one card:
//   BM_DeviceCopy                 a 1 GiB device-to-device copy: the bandwidth this card actually reaches
//   BM_Shuffle{Kernel,TensorOps}  local pixel shuffle of 20 views of 128x128x32 (one training batch)
//   BM_Gather{Fused,Indexing}     positive-pair gather of 10240 voxels from the pyramid of 10 patches,
//                                 hdssl (32 x 5 levels) and vox2vec (16 x 6), NCDHW and channels-last-3d,
//                                 float32 and bf16, forward and forward+backward
//   BM_ShuffleCpu                 the CPU path of the shuffle (runs everywhere)
//   BM_Augment{Hdssl,Vox2vec}     a whole augmentation set on one training batch (20 views of 128x128x32)
//                                 on the GPU (every stage's kernels and host draws), and on the CPU
//                                 (one view per thread) for comparison
// Counters: GB/s = the bytes each call must move at least (see each benchmark) / time per call;
// of_peak = GB/s / the card's spec bandwidth (memory clock x bus width, or --hdssl_peak_GBps=...).
// Without a GPU (or without CUDA ops) every CUDA benchmark reports "skipped".
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "hdssl/augment/presets.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/ops/gather_pyramid.hpp"
#include "hdssl/ops/local_shuffle.hpp"
#include "hdssl/ops/torch_compat.hpp"

#if HDSSL_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

double g_peak_gbps = 0.0;  // spec bandwidth of the card (0: unknown)


void sync() {
#if HDSSL_WITH_CUDA
  if (hdssl::ops::compat::cuda_ops_available()) torch::cuda::synchronize();
#endif
}

/// Runs `call` `reps` times per benchmark iteration between two device synchronisations and reports the
/// time per call (manual time), GB/s for `bytes` per call, and the fraction of the spec bandwidth.
template <typename F>
void time_calls(benchmark::State& state, double bytes, int reps, F&& call) {
  call();  // warm-up: allocator, first launch
  sync();
  double total = 0;
  int64_t calls = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) call();
    sync();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(dt / reps);
    total += dt;
    calls += reps;
  }
  const double gbps = bytes * static_cast<double>(calls) / total / 1e9;
  state.counters["GB/s"] = gbps;
  state.counters["bytes"] = bytes;
  state.counters["of_peak"] = g_peak_gbps > 0 ? gbps / g_peak_gbps : 0.0;
}

bool skip_without_gpu(benchmark::State& state) {
  if (hdssl::ops::compat::cuda_ops_available()) return false;
  state.SkipWithError("skipped: no CUDA device (or hdssl built without CUDA ops)");
  for (auto _ : state) {
  }
  return true;
}

// ------------------------------------------------------------------------------------------ bandwidth
void BM_DeviceCopy(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int64_t n = int64_t{1} << 28;  // 2^28 floats = 1 GiB
  torch::Tensor a = torch::rand({n}, torch::kCUDA), b = torch::empty_like(a);
  time_calls(state, 2.0 * 4 * n, 5, [&] { b.copy_(a); });  // read + write
}
BENCHMARK(BM_DeviceCopy)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------------------ shuffle
constexpr int64_t kViews = 20, kX = 128, kY = 128, kZ = 32;

hdssl::ops::LocalShuffleParams shuffle_params(double p) {
  hdssl::ops::LocalShuffleParams q;
  q.p = p;
  return q;
}

/// range(0): 100 x p (80 = the reference's p = 0.8; 100 = every view shuffled).
void BM_ShuffleKernel(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const auto params = shuffle_params(state.range(0) / 100.0);
  const torch::Tensor views = torch::rand({kViews, 1, kX, kY, kZ}, torch::kCUDA);
  uint64_t batch = 0;
  // Floor: read every voxel once, write it once (the plan is a few hundred KB).
  time_calls(state, 2.0 * views.numel() * 4, 20,
             [&] { benchmark::DoNotOptimize(hdssl::ops::local_pixel_shuffle(views, 1, batch++, params)); });
}
BENCHMARK(BM_ShuffleKernel)->Arg(80)->Arg(100)->UseManualTime()->Unit(benchmark::kMicrosecond);

/// The same shuffle from stock tensor ops: scatter_reduce(amax) for the owner of each voxel, then one
/// index_put of the winning blocks' voxels. Plan drawn on the host (not timed); checked against hdssl's
/// shuffle first. On the GPU when there is one, else on the CPU (then it is compared with the CPU path).
void BM_ShuffleTensorOps(benchmark::State& state) {
  const torch::Device device = hdssl::ops::compat::cuda_ops_available() ? torch::kCUDA : torch::kCPU;
  const auto params = shuffle_params(1.0);
  const torch::Tensor views = torch::rand({kViews, 1, kX, kY, kZ}, device);
  const auto g = hdssl::ops::ShuffleGeometry::of(kX, kY, kZ, params.divisor);
  hdssl::ops::cpu::HostShufflePlan host(kViews, params, g);
  hdssl::ops::ShuffleKeys keys;
  keys.seed = 1;
  hdssl::ops::cpu::build_shuffle_plan(hdssl::ops::ShufflePlanFunctor{host.plan, keys, params, g}, kViews);
  const int64_t K = params.blocks, n = g.n, XYZ = kX * kY * kZ;
  std::vector<int64_t> ox(kViews * K), oy(kViews * K), oz(kViews * K);
  for (int64_t i = 0; i < kViews * K; ++i) {
    int32_t x, y, z;
    hdssl::ops::unpack_origin(host.origins[i], x, y, z);
    ox[i] = x;
    oy[i] = y;
    oz[i] = z;
  }
  const auto dev = [&](std::vector<int64_t>& v, std::vector<int64_t> shape) {
    return torch::from_blob(v.data(), shape, torch::kLong).to(device);
  };
  const torch::Tensor OX = dev(ox, {kViews, K, 1}), OY = dev(oy, {kViews, K, 1}), OZ = dev(oz, {kViews, K, 1});
  std::vector<int64_t> perm;  // flat source offsets (the plan stores them unpacked per axis)
  for (int32_t s : host.perms) {
    int32_t x, y, z;
    hdssl::ops::unpack_offset(s, x, y, z);
    perm.push_back((int64_t{x} * g.by + y) * g.bz + z);
  }
  const torch::Tensor P = dev(perm, {kViews, 1, n});
  const torch::Tensor q = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(device));
  const auto qz = [&](const torch::Tensor& f) { return f.remainder(g.bz); };
  const auto qy = [&](const torch::Tensor& f) { return f.div(g.bz, "floor").remainder(g.by); };
  const auto qx = [&](const torch::Tensor& f) { return f.div(g.bz * g.by, "floor"); };
  const torch::Tensor vbase =
      torch::arange(kViews, q.options()).view({kViews, 1, 1}) * XYZ;
  const torch::Tensor kk = torch::arange(K, q.options()).view({1, K, 1}).expand({kViews, K, n}).flatten();
  auto run = [&] {
    const torch::Tensor target = (vbase + (OX + qx(q)) * (kY * kZ) + (OY + qy(q)) * kZ + (OZ + qz(q))).flatten();
    const torch::Tensor source = (vbase + (OX + qx(P)) * (kY * kZ) + (OY + qy(P)) * kZ + (OZ + qz(P))).flatten();
    const torch::Tensor owner =
        torch::full({kViews * XYZ}, -1, q.options()).scatter_reduce(0, target, kk, "amax", /*include_self=*/true);
    const torch::Tensor win = owner.index({target}).eq(kk);
    const torch::Tensor flat = views.flatten();
    torch::Tensor out = flat.clone();
    out.index_put_({target.index({win})}, flat.index({source.index({win})}));
    return out.view_as(views);
  };
  if (!torch::equal(run(), hdssl::ops::local_pixel_shuffle(views, 1, 0, params))) {
    state.SkipWithError("tensor-op shuffle and kernel disagree");
    for (auto _ : state) {
    }
    return;
  }
  time_calls(state, 2.0 * views.numel() * 4, hdssl::ops::compat::cuda_ops_available() ? 5 : 1, [&] { benchmark::DoNotOptimize(run()); });
  state.SetLabel(device.str());
}
BENCHMARK(BM_ShuffleTensorOps)->UseManualTime()->Unit(benchmark::kMicrosecond);

/// Into a reused output: a fresh 42 MB tensor per call would time the kernel's page faults instead.
void BM_ShuffleCpu(benchmark::State& state) {
  const auto params = shuffle_params(state.range(0) / 100.0);
  const torch::Tensor views = torch::rand({kViews, 1, kX, kY, kZ});
  torch::Tensor out = torch::zeros_like(views);
  uint64_t batch = 0;
  for (auto _ : state) {
    hdssl::ops::local_pixel_shuffle_out(views, out, 1, batch++, params);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * 2 * views.numel() * 4);
  state.counters["views/s"] = benchmark::Counter(static_cast<double>(state.iterations() * kViews),
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShuffleCpu)->Arg(80)->Unit(benchmark::kMillisecond)->UseRealTime();

// ------------------------------------------------------------------------------------------ gather
constexpr int64_t kPatches = 10, kVoxels = 10240;

struct Pyramid {
  std::vector<torch::Tensor> levels;
  torch::Tensor index, grad_out;
  int64_t total = 0;
};

/// range(0): 0 = hdssl (32 x 5), 1 = vox2vec (16 x 6); range(1): channels-last-3d; range(2): bf16.
Pyramid make_pyramid(const benchmark::State& state, bool requires_grad) {
  const bool vox2vec = state.range(0) == 1, cl = state.range(1) == 1, bf16 = state.range(2) == 1;
  const int64_t base = vox2vec ? 16 : 32, count = vox2vec ? 6 : 5;
  Pyramid p;
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t d = int64_t{1} << i;
    torch::Tensor t = torch::randn({kPatches, base << i, (kX + d - 1) / d, (kY + d - 1) / d, (kZ + d - 1) / d}, opts);
    if (cl) t = t.contiguous(torch::MemoryFormat::ChannelsLast3d);
    p.levels.push_back(t.requires_grad_(requires_grad));
    p.total += base << i;
  }
  const auto lopts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
  p.index = torch::stack({torch::randint(0, kPatches, {kVoxels}, lopts), torch::randint(0, kX, {kVoxels}, lopts),
                          torch::randint(0, kY, {kVoxels}, lopts), torch::randint(0, kZ, {kVoxels}, lopts)},
                         1);
  p.grad_out = torch::randn({kVoxels, p.total}, opts);
  return p;
}

double level_bytes(const Pyramid& p) {
  double b = 0;
  for (const auto& l : p.levels) b += static_cast<double>(l.numel()) * l.element_size();
  return b;
}

/// range(3): 0 = fused kernel, 1 = one indexing op per level + cat (hdssl::nn::gather_pyramid).
void BM_GatherForward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const Pyramid p = make_pyramid(state, false);
  const bool fused = state.range(3) == 0;
  const double elem = p.levels[0].element_size();
  // Floor: read each gathered element once, write it once (index: 32 B per row).
  const double bytes = 2.0 * kVoxels * p.total * elem + 32.0 * kVoxels;
  time_calls(state, bytes, 20, [&] {
    benchmark::DoNotOptimize(fused ? hdssl::ops::detail::gather_pyramid_forward(p.levels, p.index)
                                   : hdssl::nn::gather_pyramid(p.levels, p.index));
  });
}

/// Forward + backward through autograd (what a training step runs); the gradients are as large as the
/// pyramid, so their zero-fill is part of the floor.
void BM_GatherForwardBackward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const Pyramid p = make_pyramid(state, true);
  const bool fused = state.range(3) == 0;
  const bool bf16 = state.range(2) == 1;
  const double elem = p.levels[0].element_size();
  // Floor: forward (read + write N x D) + backward (read N x D, add N x D into the gradients) + writing
  // every gradient element once; bf16 also writes and reads its float32 accumulators.
  const double grads = level_bytes(p) * (bf16 ? 1.0 + 2.0 * 4 / elem : 1.0);
  const double bytes = 4.0 * kVoxels * p.total * elem + grads;
  time_calls(state, bytes, 5, [&] {
    const torch::Tensor out =
        fused ? hdssl::ops::gather_pyramid(p.levels, p.index) : hdssl::nn::gather_pyramid(p.levels, p.index);
    benchmark::DoNotOptimize(torch::autograd::grad({out}, p.levels, {p.grad_out}));
  });
}

void gather_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"vox2vec", "channels_last", "bf16", "indexing"});
  for (int preset : {0, 1})
    for (int cl : {0, 1})
      for (int bf16 : {0, 1})
        for (int indexing : {0, 1}) b->Args({preset, cl, bf16, indexing});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_GatherForward)->Apply(gather_args);
BENCHMARK(BM_GatherForwardBackward)->Apply(gather_args);

// ------------------------------------------------------------------------------------------ augmentation sets
/// range(0): 1 = on the GPU, 0 = on the CPU. Floor: one read and one write of the batch (each stage
/// reads and writes it once more, the filter's passes twice).
template <typename Set>
void augment_set(benchmark::State& state, const Set& set, bool hu) {
  const bool cuda = state.range(0) == 1;
  if (cuda && skip_without_gpu(state)) return;
  torch::Tensor views = torch::rand({kViews, 1, kX, kY, kZ}, cuda ? torch::kCUDA : torch::kCPU);
  if (hu) views = views * 2400.0 - 1200.0;
  torch::Tensor out;
  uint64_t batch = 0;
  time_calls(state, 2.0 * views.numel() * 4, cuda ? 10 : 1, [&] { set.augment_into(views, out, batch++, 0); });
}
void BM_AugmentHdssl(benchmark::State& state) {
  augment_set(state, hdssl::augment::HdsslAugmentations(hdssl::augment::hdssl_options(), 1), false);
}
void BM_AugmentVox2vec(benchmark::State& state) {
  augment_set(state, hdssl::augment::Vox2vecAugmentations(hdssl::augment::vox2vec_options(), 1), true);
}
BENCHMARK(BM_AugmentHdssl)->Arg(1)->Arg(0)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AugmentVox2vec)->Arg(1)->Arg(0)->UseManualTime()->Unit(benchmark::kMillisecond);

/// Spec bandwidth: --hdssl_peak_GBps=<x>, else 2 (DDR) x memory clock x bus width of device 0.
void read_peak(int* argc, char** argv) {
  const std::string flag = "--hdssl_peak_GBps=";
  int kept = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], flag.c_str(), flag.size()) == 0)
      g_peak_gbps = std::stod(argv[i] + flag.size());
    else
      argv[kept++] = argv[i];
  }
  *argc = kept;
  std::string device = "none";
#if HDSSL_WITH_CUDA
  if (hdssl::ops::compat::cuda_ops_available()) {
    cudaDeviceProp prop{};
    int clock_khz = 0, bus_bits = 0;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) device = prop.name;
    if (g_peak_gbps <= 0 && cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess)
      g_peak_gbps = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  }
#endif
  benchmark::AddCustomContext("hdssl_device", device);
  benchmark::AddCustomContext("hdssl_peak_GBps", std::to_string(g_peak_gbps));
}

}  // namespace

int main(int argc, char** argv) {
  read_peak(&argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
