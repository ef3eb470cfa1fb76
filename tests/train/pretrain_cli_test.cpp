// hdssl-pretrain as a user runs it: --help, strict options, kill -9 and resume to the bit, SIGTERM, a
// checkpoint write that fails, and PyTorch loading the backbone it wrote with strict=True.
#include <doctest/doctest.h>

#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/train/checkpoint_store.hpp"
#include "hdssl/train/pretrain_config.hpp"
#include "hdssl/train/progress.hpp"
#include "train_test_support.hpp"

#include <chrono>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;

namespace {

std::string pretrain_bin() { return (hdssl::test::bin_dir() / "hdssl-pretrain").string(); }

/// The tiny configuration's flags (4 channels x 3 levels, 2 pairs of 32x32x16 on the Colin27 T1).
std::vector<std::string> tiny_args(const fs::path& data, const fs::path& out, const fs::path& cache, int steps) {
  return {pretrain_bin(), "--data", data.string(), "--out", out.string(), "--cache", cache.string(),
          "--modality", "mri", "--base-channels", "4", "--levels", "3", "--patch", "32,32,16", "--pairs", "2",
          "--positives", "64", "--steps", std::to_string(steps), "--log-every", "1", "--checkpoint-every", "5",
          "--threads", "2", "--loader-threads", "1"};
}
std::string shell_line(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + ("'" + a + "'");
  return s;
}


std::vector<std::string> loss_texts(const fs::path& out) {
  // The numbers as written (shortest round-trip text): equal text = equal bits.
  std::vector<std::string> v;
  for (const auto& r : hdssl::train::read_metrics(out / "metrics.jsonl"))
    v.push_back(r.at("step").dump() + ":" + r.at("loss").dump() + "/" + r.at("loss_nce").dump() + "/" + r.at("loss_rec").dump());
  return v;
}

/// Waits until `pred` holds, for at most `seconds`.
template <class Pred>
bool wait_for(Pred pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("hdssl-pretrain --help documents every option") {
  std::string help;
  REQUIRE(hdssl::test::run_shell(pretrain_bin() + " --help", &help) == 0);
  const nlohmann::json keys = hdssl::train::PretrainConfig{};
  for (auto it = keys.begin(); it != keys.end(); ++it) {
    std::string flag = "--" + it.key();
    std::replace(flag.begin(), flag.end(), '_', '-');
    CHECK_MESSAGE(help.find(flag) != std::string::npos, flag << " missing from --help");
  }
  CHECK(help.find("--config") != std::string::npos);
  CHECK(help.find("resumes") != std::string::npos);
}

TEST_CASE("hdssl-pretrain refuses a bad configuration with the key named, before doing anything") {
  hdssl::test::TempDir tmp;
  std::ofstream(tmp / "bad.json") << R"({"data": "x", "out": "y", "learning_rate": 0.1})";
  std::string out;
  CHECK(hdssl::test::run_shell(pretrain_bin() + " --config " + (tmp / "bad.json").string(), &out) == 2);
  CHECK_MESSAGE(out.find("unknown option 'learning_rate'") != std::string::npos, out);
  std::ofstream(tmp / "type.json") << R"({"data": "x", "out": "y", "pairs": "ten"})";
  CHECK(hdssl::test::run_shell(pretrain_bin() + " --config " + (tmp / "type.json").string(), &out) == 2);
  CHECK_MESSAGE(out.find("option 'pairs': expected an integer") != std::string::npos, out);
  CHECK(hdssl::test::run_shell(pretrain_bin() + " --data x --out " + (tmp / "o").string() + " --patch 32,32", &out) == 2);
  CHECK_MESSAGE(out.find("option 'patch'") != std::string::npos, out);
  CHECK(hdssl::test::run_shell(pretrain_bin() + " --data x --out y --bf16 maybe", &out) == 2);
  CHECK_MESSAGE(out.find("option --bf16: 'maybe' is not true or false") != std::string::npos, out);
  CHECK_FALSE(fs::exists(tmp / "o"));
}

TEST_CASE("hdssl-pretrain: killed with -9 after a checkpoint and resumed, it logs exactly the losses of an uninterrupted run") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  const int steps = 24;
  std::string out;
  REQUIRE_MESSAGE(hdssl::test::run_shell(shell_line(tiny_args(data, tmp / "full", tmp / "cache", steps)), &out) == 0, out);

  const hdssl::train::CheckpointStore store(tmp / "killed" / "checkpoints", 3);
  {
    hdssl::test::Child child(tiny_args(data, tmp / "killed", tmp / "cache", steps), tmp / "killed.log");
    REQUIRE(child.pid > 0);
    // Kill between checkpoints: after the one at step 10 and at least one more logged step.
    const bool reached = wait_for([&] {
      const auto l = store.list();
      return !l.empty() && l.back().first >= 10 && loss_texts(tmp / "killed").size() >= 11;
    }, 120);
    child.signal(SIGKILL);
    CHECK(child.wait() == 128 + SIGKILL);
    REQUIRE_MESSAGE(reached, read_text(tmp / "killed.log"));
  }
  REQUIRE(store.list().back().first < steps);
  REQUIRE_MESSAGE(hdssl::test::run_shell(shell_line(tiny_args(data, tmp / "killed", tmp / "cache", steps)), &out) == 0, out);
  CHECK(out.find("resuming from") != std::string::npos);
  const auto full = loss_texts(tmp / "full"), resumed = loss_texts(tmp / "killed");
  REQUIRE(full.size() == static_cast<size_t>(steps));
  CHECK(resumed == full);
}

TEST_CASE("hdssl-pretrain: SIGTERM writes a checkpoint, exits 0 and says how to resume") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  hdssl::test::Child child(tiny_args(data, tmp / "run", tmp / "cache", 100000), tmp / "run.log");
  REQUIRE(child.pid > 0);
  REQUIRE_MESSAGE(wait_for([&] { return loss_texts(tmp / "run").size() >= 3; }, 120), read_text(tmp / "run.log"));
  child.signal(SIGTERM);
  CHECK(child.wait() == 0);
  const std::string log = read_text(tmp / "run.log");
  CHECK_MESSAGE(log.find("stopped by signal 15") != std::string::npos, log);
  CHECK_MESSAGE(log.find("Run the same command again to resume") != std::string::npos, log);
  const hdssl::train::CheckpointStore store(tmp / "run" / "checkpoints", 3);
  REQUIRE_FALSE(store.list().empty());
  const int64_t last = hdssl::train::read_metrics(tmp / "run" / "metrics.jsonl").back().at("step").get<int64_t>();
  CHECK(store.list().back().first == last);  // nothing computed after the checkpoint is lost
  CHECK(hdssl::io::read_checkpoint_record(store.list().back().second).step == last);
}

TEST_CASE("hdssl-pretrain: a checkpoint write that fails names the file and leaves the previous checkpoint intact") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  std::string out;
  REQUIRE_MESSAGE(hdssl::test::run_shell(shell_line(tiny_args(data, tmp / "run", tmp / "cache", 5)), &out) == 0, out);
  const fs::path good = tmp / "run" / "checkpoints" / "step-000000005.ckpt";
  REQUIRE(fs::exists(good));
  const auto good_size = fs::file_size(good);
  // A file-size limit makes every write past 256 KiB fail (EFBIG), even for root; the checkpoint is ~1 MB.
  const std::string limited = "bash -c \"trap '' XFSZ; ulimit -f 256; exec " +
                              shell_line(tiny_args(data, tmp / "run", tmp / "cache", 10)) + "\"";
  CHECK(hdssl::test::run_shell(limited, &out) == 2);
  CHECK_MESSAGE(out.find("checkpoint '" + (tmp / "run" / "checkpoints" / "step-000000010.ckpt").string()) != std::string::npos, out);
  CHECK(fs::file_size(good) == good_size);
  CHECK(hdssl::io::read_checkpoint_record(good).step == 5);
  CHECK_FALSE(fs::exists(tmp / "run" / "checkpoints" / "step-000000010.ckpt"));
  for (const auto& e : fs::directory_iterator(tmp / "run" / "checkpoints"))
    CHECK_MESSAGE(e.path().filename().string().find(".tmp-") == std::string::npos, e.path());
  // And the run resumes from the intact checkpoint once the disk has room again.
  REQUIRE_MESSAGE(hdssl::test::run_shell(shell_line(tiny_args(data, tmp / "run", tmp / "cache", 10)), &out) == 0, out);
  CHECK(out.find("resuming from " + good.string()) != std::string::npos);
}

TEST_CASE("PyTorch loads the backbone hdssl-pretrain wrote with strict=True and computes the same pyramid") {
  hdssl::test::TempDir tmp;
  const fs::path data = hdssl::test::colin_folder(tmp);
  std::string out;
  REQUIRE_MESSAGE(hdssl::test::run_shell(shell_line(tiny_args(data, tmp / "run", tmp / "cache", 3)), &out) == 0, out);
  const fs::path weights = tmp / "run" / "backbone.safetensors";
  hdssl::nn::FPN3d fpn(hdssl::nn::FPN3dOptions(1, 4, 3));
  hdssl::io::load_weights(weights, *fpn);
  fpn->eval();
  torch::manual_seed(3);
  const auto input = torch::rand({2, 1, 21, 18, 11});  // odd sizes: ceil-mode pooling and cropping
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {{"input", input}};
  {
    torch::NoGradGuard no_grad;
    const auto pyramid = fpn->forward(input);
    for (size_t i = 0; i < pyramid.size(); ++i) tensors.emplace_back("expected." + std::to_string(i), pyramid[i].contiguous());
  }
  hdssl::io::write_safetensors(tmp / "case.safetensors", tensors, {});
  const std::string script = std::string(HDSSL_TRAIN_TEST_DIR) + "/pytorch_fpn_check.py";
  const int rc = hdssl::test::run_shell("/usr/bin/python3 " + script + " " + weights.string() + " " +
                                        (tmp / "case.safetensors").string(), &out);
  CHECK_MESSAGE(rc == 0, out);
  CHECK_MESSAGE(out.find("OK: PyTorch SpecFPN loads the weights strictly") != std::string::npos, out);
}
