// The pre-training loop as a library: configuration, datalists, the prefetcher, exact resume for every
// preset, a tiny real pre-training on the Colin27 MRI, bad volumes among good ones, non-finite steps.
#include <doctest/doctest.h>

#include "hdssl/data/datalist.hpp"
#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/nifti.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/presets.hpp"
#include "hdssl/train/pretrainer.hpp"
#include "hdssl/train/run_pretraining.hpp"
#include "train_test_support.hpp"

#include <atomic>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using hdssl::train::PretrainConfig;
using hdssl::test::tiny_config;

namespace {



std::vector<double> logged(const fs::path& out, const std::string& key) {
  std::vector<double> v;
  for (const auto& r : hdssl::train::read_metrics(out / "metrics.jsonl")) v.push_back(r.at(key).get<double>());
  return v;
}

std::string text_of(const std::ostringstream& s) { return s.str(); }

}  // namespace

TEST_CASE("pretraining config: strict JSON, round trip, resumable keys") {
  PretrainConfig c;
  c.data = "scans";
  c.steps = 7;
  c.patch = {16, 16, 8};
  const nlohmann::json j = c;
  const auto back = j.get<PretrainConfig>();
  CHECK(nlohmann::json(back) == j);

  auto refused = [](nlohmann::json bad, const std::string& fragment) {
    try {
      (void)bad.get<PretrainConfig>();
      FAIL("accepted " << bad.dump());
    } catch (const hdssl::ConfigError& e) {
      CHECK_MESSAGE(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  refused({{"lrr", 1}}, "unknown option 'lrr'");
  refused({{"lr", "fast"}}, "option 'lr': expected a number");
  refused({{"steps", -1}}, "option 'steps'");
  refused({{"preset", "resnet"}}, "option 'preset': unknown value 'resnet'");
  refused({{"patch", {32, 32}}}, "option 'patch': expected an array of 3 integers");
  refused({{"levels", 1}}, "option 'levels'");
  refused({{"levels", 9}}, "option 'levels'");
  refused({{"preprocess", 3}}, "option 'preprocess': expected a JSON object");
  refused({{"augment_device", "gpu"}}, "option 'augment_device': unknown value 'gpu'");

  nlohmann::json a = c, b = c;
  b["steps"] = 100;
  b["lr"] = 1e-3;
  CHECK(hdssl::train::differing_keys(a, b) == std::vector<std::string>{"lr", "steps"});
  CHECK(hdssl::train::differing_keys(a, b, PretrainConfig::resumable_keys()) == std::vector<std::string>{"lr"});
}

TEST_CASE("datalist: a folder of NIfTI files, a MONAI datalist with relative paths, clear refusals") {
  hdssl::test::TempDir tmp;
  fs::create_directories(tmp / "imgs");
  for (const char* n : {"b.nii.gz", "a.nii", "notes.txt"}) std::ofstream(tmp.path / "imgs" / n) << "x";
  const auto folder = hdssl::data::read_datalist(tmp / "imgs");
  REQUIRE(folder.training.size() == 2);
  CHECK(folder.training[0].image.filename() == "a.nii");
  CHECK(folder.training[1].image.filename() == "b.nii.gz");

  std::ofstream(tmp / "list.json") << R"({"name": "x", "training": [{"image": "imgs/a.nii", "label": "lab/a.nii"}, "imgs/b.nii.gz"],
                                           "test": [{"image": "/abs/c.nii.gz"}]})";
  const auto list = hdssl::data::read_datalist(tmp / "list.json");
  REQUIRE(list.training.size() == 2);
  CHECK(list.training[0].image == (tmp.path / "imgs" / "a.nii"));
  CHECK(list.training[0].label.value() == (tmp.path / "lab" / "a.nii"));
  CHECK_FALSE(list.training[1].label.has_value());
  CHECK(list.test.at(0).image == fs::path("/abs/c.nii.gz"));

  auto refused = [&](const std::string& json, const std::string& fragment) {
    std::ofstream(tmp / "bad.json") << json;
    try {
      (void)hdssl::data::read_datalist(tmp / "bad.json");
      FAIL("accepted " << json);
    } catch (const hdssl::IoError& e) {
      CHECK_MESSAGE(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  refused(R"({"training": [{"label": "x.nii"}]})", "training[0] has no \"image\"");
  refused(R"({"training": {"image": "x.nii"}})", "'training' must be a list");
  refused(R"({"training": [{"image": 3}]})", "training[0].image must be a non-empty path string");
  refused(R"({"training": [)", "not valid JSON");
  refused(R"({"other": []})", "has no \"training\"");
  CHECK_THROWS_AS(hdssl::data::read_datalist(tmp / "absent.json"), hdssl::IoError);
  fs::create_directories(tmp / "empty");
  CHECK_THROWS_AS(hdssl::data::read_datalist(tmp / "empty"), hdssl::IoError);
}

TEST_CASE("prefetcher: items in order and equal for any worker count; errors reach the consumer; workers run single-threaded loops") {
  auto make = [](int64_t i, std::vector<int64_t>& out) {
    out.assign(static_cast<size_t>(1 + i % 5), i * i);
    if (i % 3 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // out-of-order finishing
  };
  std::vector<std::vector<int64_t>> serial;
  {
    hdssl::train::Prefetcher<std::vector<int64_t>> p(make, 0, 4, 3, 40);
    for (int64_t i = 3; i < 40; ++i) serial.push_back(p.next());
  }
  for (int threads : {1, 3}) {
    hdssl::train::Prefetcher<std::vector<int64_t>> p(make, threads, 4, 3, 40);
    for (size_t k = 0; k < serial.size(); ++k) REQUIRE(p.next() == serial[k]);
    CHECK_THROWS_AS(p.next(), hdssl::DataError);  // past the end
  }
  hdssl::train::Prefetcher<int> failing(
      [](int64_t i, int& out) {
        if (i == 2) throw hdssl::IoError("volume 2 is damaged");
        out = static_cast<int>(i);
      },
      2, 2, 0, 5);
  CHECK(failing.next() == 0);
  CHECK(failing.next() == 1);
  CHECK_THROWS_WITH_AS(failing.next(), "volume 2 is damaged", hdssl::IoError);

  // A worker's ATen loops are limited to its own thread; the consumer's pool is left as it was.
  hdssl::set_threads(2);
  std::atomic<int> seen{-1};
  {
    hdssl::train::Prefetcher<int> p([&](int64_t, int& out) { seen = at::get_num_threads(); out = 0; }, 1, 1, 0, 1);
    p.next();
  }
  CHECK(seen.load() == 1);
  CHECK(at::get_num_threads() == 2);
}

namespace {
/// One step's loss after loading the checkpoint into a model built with another seed (so anything the
/// checkpoint fails to carry, e.g. frozen random projections, changes the number).
template <class P>
void check_exact_resume() {
  hdssl::test::TempDir tmp;
  hdssl::nn::PretrainOptions o;
  o.base_channels = 4;
  o.levels = 3;
  auto batch = [] {
    torch::manual_seed(5);
    hdssl::nn::PretrainBatch b;
    b.view1 = torch::rand({2, 1, 16, 16, 8});
    b.view2 = torch::rand({2, 1, 16, 16, 8});
    b.target1 = torch::rand({2, 1, 16, 16, 8});
    b.target2 = torch::rand({2, 1, 16, 16, 8});
    b.voxels1 = torch::stack({torch::randint(0, 2, {32}), torch::randint(0, 16, {32}), torch::randint(0, 16, {32}),
                              torch::randint(0, 8, {32})}, 1);
    b.voxels2 = b.voxels1.flip(0);
    return b;
  }();
  auto step = [&](hdssl::nn::PretrainModel<P>& m, torch::optim::Adam& opt) {
    opt.zero_grad();
    auto l = m->forward(batch);
    l.total.backward();
    opt.step();
    return l.total.template item<double>();
  };
  torch::manual_seed(1);
  hdssl::nn::PretrainModel<P> model(o);
  torch::optim::Adam adam(model->parameters(), 1e-3);
  step(model, adam);
  hdssl::io::CheckpointRecord r;
  r.preset = "p";
  r.step = 1;
  hdssl::io::save_checkpoint(tmp / "c.ckpt", *model, adam, r);
  const double next = step(model, adam);

  torch::manual_seed(2);  // another initialisation: the checkpoint must overwrite all of it
  hdssl::nn::PretrainModel<P> resumed(o);
  torch::optim::Adam resumed_adam(resumed->parameters(), 1e-3);
  hdssl::io::load_checkpoint(tmp / "c.ckpt", *resumed, resumed_adam);
  CHECK(step(resumed, resumed_adam) == next);  // bitwise

  // The control: without loading, the other initialisation gives another loss.
  torch::manual_seed(2);
  hdssl::nn::PretrainModel<P> fresh(o);
  torch::optim::Adam fresh_adam(fresh->parameters(), 1e-3);
  CHECK(step(fresh, fresh_adam) != next);
}
}  // namespace

TEST_CASE_TEMPLATE("checkpoint: save, load into another initialisation, identical next loss", P, hdssl::presets::vox2vec,
                   hdssl::presets::hdssl, hdssl::presets::hdssl_reference, hdssl::presets::ablation_architecture,
                   hdssl::presets::ablation_loss) {
  check_exact_resume<P>();
}

TEST_CASE("tiny pre-training on the Colin27 MRI: completes, writes every output, resumes to the bit") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  std::ostringstream console;

  // Uninterrupted: 8 steps.
  auto full = tiny_config(data, tmp / "full", tmp / "cache");
  const auto r = hdssl::train::run_pretraining(full, console);
  CHECK(r.outcome == hdssl::train::PretrainResult::Outcome::completed);
  CHECK(r.step == 8);
  CHECK(r.volumes_used == 1);
  for (const char* f : {"backbone.safetensors", "pretrain.safetensors", "config.json", "metrics.jsonl", "curve.png"})
    CHECK_MESSAGE(fs::exists(tmp.path / "full" / f), f);
  const auto losses = logged(tmp / "full", "loss");
  REQUIRE(losses.size() == 8);
  for (double l : losses) CHECK(std::isfinite(l));
  CHECK(logged(tmp / "full", "loss_rec").size() == 8);
  const auto records = hdssl::train::read_metrics(tmp.path / "full" / "metrics.jsonl");
  for (const char* key : {"step", "loss", "loss_nce", "loss_rec", "lr", "time", "data_wait"})
    CHECK_MESSAGE(records.back().contains(key), key);
  // Every record's rate is a real one, the last steps before a checkpoint included (the host reads a
  // step's figures one step late, except there): no step takes under a microsecond or over a minute here.
  for (const auto& rec : records) {
    const double rate = rec.at("steps_per_s").get<double>(), wait = rec.at("data_wait").get<double>();
    CHECK_MESSAGE((rate > 1.0 / 60 && rate < 1e6), rec.dump());
    CHECK_MESSAGE((wait >= 0 && wait <= 1), rec.dump());
  }
  CHECK(text_of(console).find("step 8/8") != std::string::npos);
  CHECK(text_of(console).find("ETA") != std::string::npos);
  // The backbone file loads back into an FPN of the recorded size.
  const auto st = hdssl::io::read_safetensors(tmp.path / "full" / "backbone.safetensors");
  CHECK(st.metadata.at("base_channels") == "4");
  CHECK(st.metadata.at("levels") == "3");
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(1, 4, 3));
  CHECK_NOTHROW(hdssl::io::load_weights(tmp.path / "full" / "backbone.safetensors", *fpn));

  // Interrupted at step 4 (its checkpoint), then continued by raising --steps: the same losses, bit for bit.
  auto part = tiny_config(data, tmp / "part", tmp / "cache");
  part.steps = 4;
  hdssl::train::run_pretraining(part, console);
  part.steps = 8;
  const auto r2 = hdssl::train::run_pretraining(part, console);
  CHECK(r2.step == 8);
  CHECK(logged(tmp / "part", "loss") == losses);
  CHECK(logged(tmp / "part", "loss_nce") == logged(tmp / "full", "loss_nce"));

  // With a background loader thread the batches, hence the losses, are the same.
  auto threaded = tiny_config(data, tmp / "threaded", tmp / "cache");
  threaded.loader_threads = 1;
  threaded.threads = 3;  // 2 compute threads, as above, plus the loader
  hdssl::train::run_pretraining(threaded, console);
  CHECK(logged(tmp / "threaded", "loss") == losses);

  // A changed configuration is refused, naming the key; the run's files are left alone.
  auto changed = tiny_config(data, tmp / "full", tmp / "cache");
  changed.lr = 1e-3;
  changed.steps = 12;
  try {
    hdssl::train::run_pretraining(changed, console);
    FAIL("a changed lr was accepted on resume");
  } catch (const hdssl::ConfigError& e) {
    CHECK_MESSAGE(std::string(e.what()).find("lr (was 0.0003, now 0.001)") != std::string::npos, e.what());
  }
  CHECK(logged(tmp / "full", "loss") == losses);

  // A damaged newest checkpoint: warned about, the previous one is used, and the run still ends equal.
  {
    std::ofstream(tmp.path / "part" / "checkpoints" / "step-000000008.ckpt", std::ios::trunc) << "garbage";
    std::ostringstream warn;
    auto again = tiny_config(data, tmp / "part", tmp / "cache");
    hdssl::train::run_pretraining(again, warn);
    CHECK(warn.str().find("trying the previous checkpoint") != std::string::npos);
    CHECK(warn.str().find("resuming from") != std::string::npos);
    CHECK(logged(tmp / "part", "loss") == losses);
  }
}

TEST_CASE("bad volumes among good ones are skipped with their reason; none usable stops before training") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  // Damaged: a gzip cut short. Unusable: a volume of zeros (nothing to clip, no body).
  {
    std::ifstream in(hdssl::test::mricron("ch2.nii.gz"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(data / "damaged.nii.gz", std::ios::binary) << bytes.substr(0, bytes.size() / 3);
    hdssl::io::write_nifti(data / "zeros.nii.gz", torch::zeros({40, 40, 20}), Eigen::Matrix4d::Identity());
  }
  std::ostringstream console;
  auto c = tiny_config(data, tmp / "out", tmp / "cache");
  c.steps = 2;
  const auto r = hdssl::train::run_pretraining(c, console);
  CHECK(r.volumes_used == 1);
  CHECK(r.volumes_skipped == 2);
  const std::string log = console.str();
  CHECK_MESSAGE(log.find("skipping volume " + (data / "damaged.nii.gz").string()) != std::string::npos, log);
  CHECK_MESSAGE(log.find("skipping volume " + (data / "zeros.nii.gz").string()) != std::string::npos, log);
  CHECK(hdssl::train::read_metrics(tmp.path / "out" / "metrics.jsonl").back().at("volumes_skipped") == 2);

  fs::remove(data / "ch2.nii.gz");
  c.out = (tmp / "out2").string();
  try {
    hdssl::train::run_pretraining(c, console);
    FAIL("a run without a usable volume started");
  } catch (const hdssl::DataError& e) {
    CHECK(std::string(e.what()).find("no usable training volume") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(tmp.path / "out2" / "metrics.jsonl"));
}

TEST_CASE("augment_device cuda on a CPU run is refused before any work, naming the option") {
  hdssl::test::TempDir tmp;
  auto c = tiny_config(tmp / "no-data-needed", tmp / "out", tmp / "cache");
  c.data = (tmp / "missing").string();
  c.device = "cpu";
  c.augment_device = "cuda";
  std::ostringstream console;
  try {
    hdssl::train::run_pretraining(c, console);
    FAIL("augment_device cuda was accepted on the CPU");
  } catch (const hdssl::ConfigError& e) {
    CHECK_MESSAGE(std::string(e.what()).find("option 'augment_device': cuda augments on the step's GPU, but this run's "
                                             "device is cpu") != std::string::npos,
                  e.what());
  }
  CHECK_FALSE(fs::exists(tmp / "out"));
}

TEST_CASE("non-finite steps: skipped with no trace in parameters, optimiser or BatchNorm; too many in a row stop the run") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  using Trainer = hdssl::train::Pretrainer<hdssl::presets::hdssl>;
  auto c = tiny_config(data, tmp / "out", tmp / "cache");
  c.steps = 6;
  c.max_nonfinite = 3;

  // Steps 1-2 normal, 3-4 poisoned (the hook sees 0-based step indices), 5-6 normal.
  Trainer::Hooks hooks;
  hooks.on_losses = [&](int64_t step, hdssl::nn::PretrainLosses& l) {
    if (step == 2 || step == 3) l.total = l.total * std::numeric_limits<double>::quiet_NaN();
  };
  std::ostringstream console;
  const auto r = Trainer(c, "hdssl", console, hooks).run();
  CHECK(r.step == 6);
  CHECK(r.skipped_nonfinite == 2);
  const std::string log = console.str();
  CHECK_MESSAGE(log.find("step 3: non-finite loss; update skipped (1 in a row") != std::string::npos, log);
  CHECK_MESSAGE(log.find("step 4: non-finite loss; update skipped (2 in a row") != std::string::npos, log);
  const auto records = hdssl::train::read_metrics(tmp.path / "out" / "metrics.jsonl");
  CHECK(records.back().at("skipped_nonfinite") == 2);

  // The skipped updates left the model as it was: the checkpoint at step 4 (after two skipped steps)
  // equals the state after step 2, which a 2-step run with the same seed writes.
  auto two = tiny_config(data, tmp / "two", tmp / "cache");
  two.steps = 2;
  two.checkpoint_every = 2;
  hdssl::train::run_pretraining(two, console);
  hdssl::nn::PretrainOptions mo;
  mo.base_channels = 4;
  mo.levels = 3;
  auto state_at = [&](const fs::path& ckpt) {
    hdssl::nn::PretrainModel<hdssl::presets::hdssl> m(mo);
    torch::optim::Adam opt(m->parameters(), 3e-4);
    hdssl::io::load_checkpoint(ckpt, *m, opt);
    return hdssl::io::state_dict(*m);
  };
  const auto s4 = state_at(tmp.path / "out" / "checkpoints" / "step-000000004.ckpt");
  const auto s2 = state_at(tmp.path / "two" / "checkpoints" / "step-000000002.ckpt");
  REQUIRE(s4.size() == s2.size());
  int64_t unequal = 0;
  for (size_t i = 0; i < s4.size(); ++i) unequal += !torch::equal(s4[i].second, s2[i].second);
  CHECK(unequal == 0);  // parameters and BatchNorm running statistics alike

  // Three in a row: the run stops with a message naming the last good checkpoint, and writes none after it.
  auto stop = tiny_config(data, tmp / "stop", tmp / "cache");
  stop.steps = 10;
  stop.max_nonfinite = 3;
  Trainer::Hooks always;
  always.on_losses = [](int64_t step, hdssl::nn::PretrainLosses& l) {
    if (step >= 5) l.total = l.total * std::numeric_limits<double>::quiet_NaN();
  };
  try {
    Trainer(stop, "hdssl", console, always).run();
    FAIL("the run went on after 3 non-finite steps in a row");
  } catch (const hdssl::DataError& e) {
    const std::string m = e.what();
    CHECK_MESSAGE(m.find("3 non-finite steps in a row, the last at step 8") != std::string::npos, m);
    CHECK_MESSAGE(m.find("step-000000004.ckpt") != std::string::npos, m);
  }
  const hdssl::train::CheckpointStore store(tmp.path / "stop" / "checkpoints", 3);
  REQUIRE_FALSE(store.list().empty());
  CHECK(store.list().back().first == 4);
}
