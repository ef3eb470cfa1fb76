// Preprocessing throughput on a 181 x 217 x 181 volume at 1 mm (the size of the Colin27 MRI template):
// the whole ct and mri pipelines and their costly stages on phantoms, and the real Colin27 MRI
// (mricron-data's ch2.nii.gz; another file via HDSSL_BENCH_NIFTI) read, preprocessed and served by the cache.
//   build/bin/bench_preprocess --benchmark_min_time=2
// Threads: every core (hdssl::set_threads()).
#include <benchmark/benchmark.h>

#include <hdssl/core/threads.hpp>
#include <hdssl/preprocess/nifti_files.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>

namespace {

using namespace hdssl;
namespace pp = hdssl::preprocess;

/// A head-sized phantom: an ellipsoid of noisy tissue with an enclosed air pocket, outside air.
/// `ct` gives HU (air -1000, tissue ~40 +- 30), otherwise MRI-like values (background ~5, tissue ~400).
Volume phantom(bool ct) {
  const int64_t X = 181, Y = 217, Z = 181;
  torch::manual_seed(1);
  auto x = (torch::arange(X, torch::kFloat32).view({X, 1, 1}) - X / 2.0) / (0.45 * X);
  auto y = (torch::arange(Y, torch::kFloat32).view({1, Y, 1}) - Y / 2.0) / (0.45 * Y);
  auto z = (torch::arange(Z, torch::kFloat32).view({1, 1, Z}) - Z / 2.0) / (0.45 * Z);
  auto r2 = x * x + y * y + z * z;
  auto inside = r2.lt(1.0);
  auto pocket = r2.lt(0.04);
  Volume v;
  const float out = ct ? -1000.f : 5.f, in = ct ? 40.f : 400.f, gas = ct ? -950.f : 10.f;
  v.data = torch::where(inside, torch::full({}, in), torch::full({}, out)) + torch::randn({X, Y, Z}) * 30.f;
  v.data = torch::where(pocket, torch::full({}, gas), v.data).contiguous();
  v.affine = Eigen::Matrix4d::Identity();
  v.source = ct ? "phantom_ct" : "phantom_mr";
  return v;
}

const Volume& ct_volume() {
  static const Volume v = phantom(true);
  return v;
}
const Volume& mr_volume() {
  static const Volume v = phantom(false);
  return v;
}

void BM_pipeline_ct(benchmark::State& state) {
  set_threads(0);
  for (auto _ : state) benchmark::DoNotOptimize(pp::preprocess(ct_volume(), pp::PreprocessOptions::ct()));
  state.counters["threads"] = torch::get_num_threads();
}
void BM_pipeline_mri(benchmark::State& state) {
  set_threads(0);
  for (auto _ : state) benchmark::DoNotOptimize(pp::preprocess(mr_volume(), pp::PreprocessOptions::mri()));
  state.counters["threads"] = torch::get_num_threads();
}
void BM_resample_linear_to_1x1x2(benchmark::State& state) {
  set_threads(0);
  for (auto _ : state)
    benchmark::DoNotOptimize(pp::resample(ct_volume(), Eigen::Vector3d(1, 1, 2), pp::Interpolation::linear));
}
void BM_resample_linear_to_1p5(benchmark::State& state) {
  set_threads(0);
  for (auto _ : state)
    benchmark::DoNotOptimize(pp::resample(mr_volume(), Eigen::Vector3d(1.5, 1.5, 1.5), pp::Interpolation::linear));
}
void BM_percentiles_0p01_99p9(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(pp::percentiles(mr_volume().data, {0.01, 99.9}));
}
void BM_body_mask_3d_full(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(pp::body_mask(ct_volume().data, -500));
}
void BM_body_mask_per_slice(benchmark::State& state) {
  set_threads(0);
  for (auto _ : state) benchmark::DoNotOptimize(pp::body_mask(ct_volume().data, -500, pp::Connectivity::full, true));
}
void BM_fnv1a64_per_MiB(benchmark::State& state) {
  const auto& d = ct_volume().data;
  const size_t bytes = static_cast<size_t>(d.numel()) * sizeof(float);
  for (auto _ : state) benchmark::DoNotOptimize(pp::fnv1a64(d.data_ptr(), bytes));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

std::filesystem::path real_mri() {
  const char* env = std::getenv("HDSSL_BENCH_NIFTI");
  return env ? env : "/usr/share/mricron/templates/ch2.nii.gz";
}

void BM_real_mri_read(benchmark::State& state) {
  if (!std::filesystem::exists(real_mri())) return state.SkipWithError("no real MRI file");
  for (auto _ : state) benchmark::DoNotOptimize(io::read_nifti(real_mri()));
}
void BM_real_mri_pipeline(benchmark::State& state) {
  if (!std::filesystem::exists(real_mri())) return state.SkipWithError("no real MRI file");
  set_threads(0);
  const Volume v = io::read_nifti(real_mri());
  for (auto _ : state) benchmark::DoNotOptimize(pp::preprocess(v, pp::PreprocessOptions::mri()));
}
void BM_real_mri_cache_hit(benchmark::State& state) {
  if (!std::filesystem::exists(real_mri())) return state.SkipWithError("no real MRI file");
  std::random_device rd;
  const auto dir = std::filesystem::temp_directory_path() / ("hdssl-bench-cache-" + std::to_string(rd()));
  {
    pp::PreprocessCache cache(dir);
    pp::preprocess_nifti(real_mri(), std::nullopt, pp::PreprocessOptions::mri(), &cache);
    for (auto _ : state)
      benchmark::DoNotOptimize(pp::preprocess_nifti(real_mri(), std::nullopt, pp::PreprocessOptions::mri(), &cache));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

BENCHMARK(BM_real_mri_read)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_real_mri_pipeline)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_real_mri_cache_hit)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_pipeline_ct)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_pipeline_mri)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_resample_linear_to_1x1x2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_resample_linear_to_1p5)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_percentiles_0p01_99p9)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_body_mask_3d_full)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_body_mask_per_slice)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_fnv1a64_per_MiB)->Unit(benchmark::kMillisecond)->UseRealTime();
int main(int argc, char** argv) {
  // Build the phantoms before any timing starts.
  ct_volume();
  mr_volume();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
