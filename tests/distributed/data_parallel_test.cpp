// Data-parallel pre-training over c10d's Gloo on loopback. The ranks are this test program started again
// with torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) running the skipped case
// "rank role" below, which writes its parameters when the loop ends; the cases compare those files.
#include <doctest/doctest.h>

#include "hdssl/io/safetensors.hpp"
#include "hdssl/presets.hpp"
#include "hdssl/train/distributed.hpp"
#include "hdssl/train/gradient_reducer.hpp"
#include "hdssl/train/launch.hpp"
#include "hdssl/train/pretrainer.hpp"
#include "../train/train_test_support.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;
using hdssl::train::PretrainConfig;
using Trainer = hdssl::train::Pretrainer<hdssl::presets::hdssl, hdssl::augment::HdsslAugmentations>;

namespace {

constexpr int kSteps = 6;
const std::vector<int> kBothOk{0, 0};  // both ranks exited 0

/// The run every case trains: the pre-training tests' tiny run, one compute thread per rank.
PretrainConfig job_config(const hdssl::test::TempDir& tmp, const fs::path& out) {
  auto c = hdssl::test::tiny_config(tmp / "data", out, tmp / "cache");
  c.steps = kSteps;
  c.checkpoint_every = 3;
  c.threads = 1;
  c.distributed.timeout_s = 20;
  return c;
}

struct Folder {
  hdssl::test::TempDir tmp;
  Folder() { hdssl::test::colin_folder(tmp); }
};

/// Parameters by name, as the role wrote them.
using Params = std::map<std::string, torch::Tensor>;
Params read_params(const fs::path& p) {
  Params m;
  for (auto& [name, t] : hdssl::io::read_safetensors(p).tensors) m[name] = t;
  return m;
}
void write_params(const fs::path& p, const torch::nn::Module& model) {
  hdssl::io::NamedTensors out;
  for (const auto& kv : model.named_parameters()) out.emplace_back(kv.key(), kv.value().detach().cpu().contiguous());
  hdssl::io::write_safetensors(p, out, {});
}

/// Largest |a - b| over every parameter (both must hold the same names and shapes).
double max_difference(const Params& a, const Params& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (const auto& [name, t] : a) {
    REQUIRE(b.count(name));
    d = std::max(d, (t - b.at(name)).abs().max().item<double>());
  }
  return d;
}
bool bitwise_equal(const Params& a, const Params& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a)
    if (!b.count(name) || !torch::equal(t, b.at(name))) return false;
  return true;
}

/// Runs `config` as `n` ranks of the role; returns each rank's exit status (-1: still running after
/// `limit_s`, then killed). `die` = {rank, step}: that rank ends itself abruptly before that step's backward.
std::vector<int> run_ranks(int n, const PretrainConfig& config, const fs::path& dir, double limit_s = 600,
                           std::pair<int, int> die = {-1, -1}, std::vector<double>* seconds = nullptr) {
  fs::create_directories(dir);
  const fs::path job = dir / "job.json";
  std::ofstream(job) << nlohmann::json{{"config", config}, {"die_rank", die.first}, {"die_step", die.second},
                                       {"params", (dir / "params-rank").string()}}
                            .dump(2);
  const int port = hdssl::train::detail::free_local_port();
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<std::unique_ptr<hdssl::test::Child>> ranks;
  for (int r = 0; r < n; ++r) {
    auto env = hdssl::train::dist::LaunchEnvironment::for_local_rank(r, n, port);
    env["HDSSL_TEST_JOB"] = job.string();
    ranks.push_back(std::make_unique<hdssl::test::Child>(
        std::vector<std::string>{self, "--no-skip", "--test-case=rank role*"}, dir / ("rank" + std::to_string(r) + ".log"),
        env));
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> status;
  for (auto& c : ranks) {
    const double left = limit_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    status.push_back(c->wait_for(std::max(1.0, left)));
    if (seconds) seconds->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return status;
}

std::string log_of(const fs::path& dir, int rank) {
  std::ifstream in(dir / ("rank" + std::to_string(rank) + ".log"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// One process: the same run, trained here, its parameters at the end.
Params train_here(const PretrainConfig& c) {
  Params out;
  Trainer::Hooks hooks;
  hooks.on_finished = [&](const torch::nn::Module& m) {
    for (const auto& kv : m.named_parameters()) out[kv.key()] = kv.value().detach().clone();
  };
  std::ostringstream quiet;
  Trainer(c, "hdssl", quiet, hooks).run();
  return out;
}

}  // namespace

// Not a test by itself: the body of one rank, started by run_ranks with --no-skip.
TEST_CASE("rank role: one rank of a data-parallel run (started by the cases below)" * doctest::skip()) {
  const char* job_file = std::getenv("HDSSL_TEST_JOB");
  REQUIRE(job_file != nullptr);
  std::ifstream in(job_file);
  const auto job = nlohmann::json::parse(in);
  const auto env = hdssl::train::dist::LaunchEnvironment::from_environment();
  const int die_rank = job.at("die_rank"), die_step = job.at("die_step");
  Trainer::Hooks hooks;
  hooks.on_losses = [&](int64_t step, hdssl::nn::PretrainLosses&) {
    if (env.rank == die_rank && step == die_step) std::_Exit(3);
  };
  hooks.on_finished = [&](const torch::nn::Module& m) {
    write_params(job.at("params").get<std::string>() + std::to_string(env.rank) + ".safetensors", m);
  };
  Trainer(job.at("config").get<PretrainConfig>(), "hdssl", std::cout, hooks).run();
}

TEST_CASE("two ranks end bitwise equal, and equal to one process averaging the same two micro-batches per step") {
  Folder f;
  const fs::path dir = f.tmp / "two";
  const auto st = run_ranks(2, job_config(f.tmp, dir / "out"), dir);
  REQUIRE_MESSAGE(st == kBothOk, (log_of(dir, 0) + log_of(dir, 1)));
  const Params r0 = read_params(dir / "params-rank0.safetensors"), r1 = read_params(dir / "params-rank1.safetensors");
  CHECK(bitwise_equal(r0, r1));
  // Only rank 0 writes: one record per step in metrics.jsonl, the checkpoints, the backbone.
  CHECK(hdssl::train::read_metrics(dir / "out" / "metrics.jsonl").size() == kSteps);
  CHECK(fs::exists(dir / "out" / "backbone.safetensors"));
  CHECK(log_of(dir, 1).find("step 1/") == std::string::npos);  // rank 1 is silent
  CHECK(log_of(dir, 0).find("2 ranks (gloo), global batch 4 pairs") != std::string::npos);

  // The oracle: one process drawing rank 0's and rank 1's micro-batches of each step (stream indices
  // 2s and 2s + 1) and averaging their gradients before the same Adam step.
  auto one = job_config(f.tmp, f.tmp / "accumulated");
  one.accumulate = 2;
  const Params acc = train_here(one);
  const double d = max_difference(r0, acc);
  MESSAGE("max |two ranks - one process accumulating 2| = " << d);
  CHECK(d < 1e-5);
  // ... and the comparison can tell runs apart: one rank taking one micro-batch per step ends elsewhere.
  auto single = job_config(f.tmp, f.tmp / "single");
  const double apart = max_difference(r0, train_here(single));
  MESSAGE("max |two ranks - one process, one micro-batch| = " << apart);
  CHECK(apart > 100 * std::max(d, 1e-7));
}

TEST_CASE("a two-rank run stopped at step 3 and resumed ends bitwise equal to the uninterrupted one") {
  Folder f;
  const auto whole_cfg = job_config(f.tmp, f.tmp / "whole" / "out");
  REQUIRE(run_ranks(2, whole_cfg, f.tmp / "whole") == kBothOk);
  auto part_cfg = job_config(f.tmp, f.tmp / "part" / "out");
  part_cfg.steps = 3;
  REQUIRE(run_ranks(2, part_cfg, f.tmp / "part") == kBothOk);
  part_cfg.steps = kSteps;
  const auto st = run_ranks(2, part_cfg, f.tmp / "part");
  REQUIRE_MESSAGE(st == kBothOk, (log_of(f.tmp / "part", 0) + log_of(f.tmp / "part", 1)));
  CHECK(log_of(f.tmp / "part", 0).find("at step 3") != std::string::npos);
  const Params w = read_params(f.tmp / "whole" / "params-rank0.safetensors");
  CHECK(bitwise_equal(w, read_params(f.tmp / "part" / "params-rank0.safetensors")));
  CHECK(bitwise_equal(w, read_params(f.tmp / "part" / "params-rank1.safetensors")));
  // The logged losses of steps 4..6 are the same numbers (as written: equal text = equal bits).
  auto losses = [](const fs::path& out) {
    std::vector<std::string> v;
    for (const auto& r : hdssl::train::read_metrics(out / "metrics.jsonl")) v.push_back(r.at("loss").dump());
    return v;
  };
  CHECK(losses(f.tmp / "whole" / "out") == losses(f.tmp / "part" / "out"));
}

TEST_CASE("a rank that dies mid-run makes the other stop with an error naming it, within the timeout") {
  Folder f;
  auto c = job_config(f.tmp, f.tmp / "die" / "out");
  c.distributed.timeout_s = 15;
  std::vector<double> secs;
  const auto t0 = std::chrono::steady_clock::now();
  const auto st = run_ranks(2, c, f.tmp / "die", 120, {1, 2}, &secs);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("rank 0 ended after " << secs.at(0) << " s (timeout " << c.distributed.timeout_s << " s)");
  CHECK(st.at(1) == 3);            // the rank that died
  CHECK(st.at(0) != 0);            // the survivor failed instead of hanging (-1: still running, killed)
  CHECK(st.at(0) != -1);
  CHECK(total < 100);
  const std::string log = log_of(f.tmp / "die", 0);
  CHECK_MESSAGE(log.find("rank 0 of 2:") != std::string::npos, log);
  CHECK_MESSAGE(log.find("another rank has stopped") != std::string::npos, log);
  // What was saved before is still there: the step-3 checkpoint is never reached, so none; no partial outputs.
  CHECK_FALSE(fs::exists(f.tmp / "die" / "out" / "backbone.safetensors"));
}

TEST_CASE("hdssl-pretrain --nproc 2: the launcher starts two ranks, one voice, the outputs once") {
  Folder f;
  const fs::path out = f.tmp / "cli";
  std::string log;
  const std::string cmd = (hdssl::test::bin_dir() / "hdssl-pretrain").string() + " --nproc 2 --data " +
                          (f.tmp / "data").string() + " --out " + out.string() +
                          " --modality mri --base-channels 4 --levels 3 --patch 32,32,16 --pairs 2 --positives 64"
                          " --steps 4 --log-every 2 --checkpoint-every 2 --threads 1";
  REQUIRE_MESSAGE(hdssl::test::run_shell(cmd, &log) == 0, log);
  CHECK(log.find("launching 2 ranks") != std::string::npos);
  CHECK(log.find("2 ranks (gloo)") != std::string::npos);
  // Progress lines once (rank 0's), the summary once.
  size_t lines = 0;
  for (size_t at = log.find("step 2/4"); at != std::string::npos; at = log.find("step 2/4", at + 1)) ++lines;
  CHECK(lines == 1);
  CHECK(hdssl::train::read_metrics(out / "metrics.jsonl").size() == 2);
  CHECK(fs::exists(out / "backbone.safetensors"));
  // A bad value is refused once, by the launcher's ranks, with the key named.
  CHECK(hdssl::test::run_shell(cmd + " --backend mpi", &log) != 0);
  CHECK_MESSAGE(log.find("backend") != std::string::npos, log);
}

TEST_CASE("torchrun's environment: read and checked; a world of one needs no store and reduces nothing") {
  using hdssl::train::dist::LaunchEnvironment;
  struct Env {  // sets variables for one check and restores the environment after it
    std::vector<std::string> names;
    void set(const std::string& k, const std::string& v) {
      setenv(k.c_str(), v.c_str(), 1);
      names.push_back(k);
    }
    ~Env() {
      for (const auto& k : names) unsetenv(k.c_str());
    }
  };
  {
    Env e;
    e.set("WORLD_SIZE", "4");
    e.set("RANK", "2");
    e.set("LOCAL_RANK", "0");
    e.set("MASTER_ADDR", "node7");
    e.set("MASTER_PORT", "29511");
    const auto l = LaunchEnvironment::from_environment();
    CHECK(l.rank == 2);
    CHECK(l.world_size == 4);
    CHECK(l.local_rank == 0);
    CHECK(l.master_addr == "node7");
    CHECK(l.master_port == 29511);
  }
  {
    Env e;
    e.set("WORLD_SIZE", "2");
    e.set("RANK", "2");
    CHECK_THROWS_WITH_AS(LaunchEnvironment::from_environment(), doctest::Contains("RANK='2'"), hdssl::ConfigError);
  }
  {
    Env e;
    e.set("WORLD_SIZE", "2");
    CHECK_THROWS_WITH_AS(LaunchEnvironment::from_environment(), doctest::Contains("RANK is not set"), hdssl::ConfigError);
  }
  {
    Env e;
    e.set("MASTER_PORT", "http");
    CHECK_THROWS_WITH_AS(LaunchEnvironment::from_environment(), doctest::Contains("MASTER_PORT='http'"), hdssl::ConfigError);
  }
  // A world of one: the reducer leaves the gradients exactly as backward made them.
  const auto l = LaunchEnvironment::from_environment();
  CHECK(l.world_size == 1);
  hdssl::train::DistributedOptions o;
  const auto g = hdssl::train::dist::ProcessGroup::join(l, o, torch::kCPU);
  CHECK_FALSE(g.distributed());
  auto w = torch::randn({5}, torch::requires_grad());
  hdssl::train::dist::GradientReducer reducer(g, {w}, 1);
  reducer.prepare();
  (w * w).sum().backward();
  reducer.finish();
  CHECK(torch::equal(w.grad(), 2 * w.detach()));
  CHECK(g.min_max(7, "x") == std::pair<int64_t, int64_t>{7, 7});
}

TEST_CASE("the replica digest changes with one bit of one parameter") {
  auto a = torch::randn({1000});
  auto b = a.clone();
  CHECK(hdssl::train::dist::bytes_digest({a}) == hdssl::train::dist::bytes_digest({b}));
  auto* words = static_cast<int32_t*>(b.data_ptr());
  words[517] ^= 1;  // the lowest mantissa bit
  CHECK(hdssl::train::dist::bytes_digest({a}) != hdssl::train::dist::bytes_digest({b}));
  CHECK(hdssl::train::dist::bytes_digest({a}) >= 0);
}
