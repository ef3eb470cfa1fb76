// CPU data path microbenchmarks: pair sampling and the local augmentations, on the paper's sizes
// (128 x 128 x 32 crops, 10 pairs = 20 views per batch, one cached 256 x 256 x 128 volume).
//   build/bin/bench_augment --benchmark_format=json
// Thread count: the `threads` argument where present, else every core (hdssl::set_threads()).
#include <benchmark/benchmark.h>

#include <hdssl/augment/presets.hpp>
#include <hdssl/core/threads.hpp>
#include <hdssl/sampling/pair_sampler.hpp>

#include <cstdint>
#include <memory>

namespace {

using namespace hdssl;

constexpr std::int64_t kViews = 20;
constexpr std::int64_t kPX = 128, kPY = 128, kPZ = 32;
constexpr std::int64_t kViewBytes = kPX * kPY * kPZ * static_cast<std::int64_t>(sizeof(float));

/// A 256 x 256 x 128 volume in [0, 1] whose body (a cylinder of radius 0.48 * 256 along z) is ~72% of it.
struct CachedVolume {
  sampling::PairSampler sampler{sampling::PairSamplerOptions{}, 1};
  sampling::SampleSource source;
  CachedVolume() {
    const std::int64_t X = 256, Y = 256, Z = 128;
    auto x = torch::arange(X, torch::kFloat32).view({X, 1, 1}) - X / 2.0;
    auto y = torch::arange(Y, torch::kFloat32).view({1, Y, 1}) - Y / 2.0;
    auto body = (x * x + y * y).le(0.48 * 0.48 * X * Y).expand({X, Y, Z}).contiguous();
    auto image = torch::rand({X, Y, Z});
    source = sampler.prepare(image, body, "bench");
  }
};
const CachedVolume& cached() {
  static const CachedVolume v;
  return v;
}

torch::Tensor random_views() {
  static const torch::Tensor v = torch::rand({kViews, 1, kPX, kPY, kPZ});
  return v;
}

void use_threads(benchmark::State& state, int arg_index) {
  const int n = state.range(arg_index);
  hdssl::set_threads(n);
  state.counters["threads"] = torch::get_num_threads();
}

template <typename Set>
void run_set(benchmark::State& state, const Set& set) {
  const auto views = random_views();
  torch::Tensor out;  // reused across iterations, as a training loop does
  std::uint64_t batch = 0;
  for (auto _ : state) {
    set.augment_into(views, out, batch++);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * kViews);
  state.SetBytesProcessed(state.iterations() * kViews * kViewBytes);
}

// 20 views, each shuffled (p = 1; 5000 blocks of 6 x 6 x 1).
void BM_LocalPixelShuffle(benchmark::State& state) {
  use_threads(state, 0);
  augment::LocalPixelShuffle::Options o;
  o.p = 1.0;
  run_set(state, augment::AugmentationSet<augment::LocalPixelShuffle>({o}, 3));
}

// 20 views, each mapped by its own Bezier curve (p = 1).
void BM_Bezier(benchmark::State& state) {
  use_threads(state, 0);
  augment::Bezier::Options o;
  o.p = 1.0;
  run_set(state, augment::AugmentationSet<augment::Bezier>({o}, 3));
}

// 20 views in-painted (reference rule: up to 30 boxes).
void BM_Inpaint(benchmark::State& state) {
  use_threads(state, 0);
  run_set(state, augment::AugmentationSet<augment::Inpaint>({}, 3));
}

// One batch of 10 pairs: anchors, crops (copied out of the volume), up to 1024 positives per pair.
void BM_PairSampling(benchmark::State& state) {
  use_threads(state, 0);
  const auto& vol = cached();
  std::uint64_t batch = 0;
  std::int64_t positives = 0;
  sampling::PairBatch b;  // buffers reused across iterations, as a training loop does
  for (auto _ : state) {
    vol.sampler.sample_into(b, vol.source, batch++);
    positives += b.positives1.size(0);
    benchmark::DoNotOptimize(b.view1.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * vol.sampler.options().pairs);
  state.SetBytesProcessed(state.iterations() * kViews * kViewBytes);
  state.counters["positives_per_pair"] =
      static_cast<double>(positives) / static_cast<double>(state.iterations() * vol.sampler.options().pairs);
}

// The whole CPU path of one batch: sample 10 pairs, augment their 20 views with the hdssl preset.
void BM_BatchPipeline(benchmark::State& state) {
  use_threads(state, 0);
  const auto& vol = cached();
  const augment::HdsslAugmentations set(augment::hdssl_options(), 7);
  std::uint64_t batch = 0;
  sampling::PairBatch b;  // the un-augmented crops (reconstruction targets)
  torch::Tensor v1, v2;   // the augmented views; all buffers reused across batches
  for (auto _ : state) {
    vol.sampler.sample_into(b, vol.source, batch);
    set.augment_pair_into(b.view1, b.view2, v1, v2, batch);  // views 0..9 and 10..19
    benchmark::DoNotOptimize(v1.data_ptr<float>());
    benchmark::DoNotOptimize(v2.data_ptr<float>());
    ++batch;
  }
  state.SetItemsProcessed(state.iterations() * kViews);
  state.SetBytesProcessed(state.iterations() * kViews * kViewBytes);
  state.counters["batches_per_second"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                            benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_LocalPixelShuffle)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Bezier)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Inpaint)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PairSampling)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BatchPipeline)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
