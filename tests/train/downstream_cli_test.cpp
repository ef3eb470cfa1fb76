// The downstream drivers as a user runs them, on a small real case: the Colin27 T1 at 3 mm with AAL
// regions merged into three structures. Probing (linear, non-linear, random init), fine-tuning and training
// from scratch complete; predictions and embeddings reload in nibabel with the input's shape and affine;
// the Dice in results.json equals Dice recomputed from the written files by numpy; a resumed run repeats
// the uninterrupted one; bad input is refused before training with the file or key named.
#include <doctest/doctest.h>

#include "hdssl/io/nifti.hpp"
#include "hdssl/preprocess/resample.hpp"
#include "hdssl/train/progress.hpp"
#include "train_test_support.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

namespace fs = std::filesystem;
using hdssl::test::run_shell;

namespace {

std::string bin(const std::string& name) { return (hdssl::test::bin_dir() / name).string(); }

void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(2); }

/// The small labelled case, made once: t1.nii.gz (Colin27 at 3 mm), aal.nii.gz (AAL, nearest, same grid),
/// classes.json, dataset.json (the volume for training, validation and test), and a tiny pre-trained backbone.
struct SmallCase {
  hdssl::test::TempDir tmp;
  fs::path t1, aal, classes, dataset, pretrained;
  SmallCase() {
    using namespace hdssl;
    const Eigen::Vector3d sp(3.0, 3.0, 3.0);
    Volume img = io::read_nifti(test::mricron("ch2.nii.gz"));
    io::NiftiReadOptions lo;
    lo.load_as = io::LoadType::Int64;
    Volume lab = io::read_nifti(test::mricron("aal.nii.gz"), lo);
    img = preprocess::resample(img, sp, preprocess::Interpolation::linear);
    lab = preprocess::resample(lab, sp, preprocess::Interpolation::nearest);
    t1 = tmp / "t1.nii.gz";
    aal = tmp / "aal.nii.gz";
    io::write_nifti(t1, img.data, img.affine);
    io::NiftiWriteOptions wo;
    wo.datatype = io::datatype_from_name("int16");
    io::write_nifti(aal, lab.data, lab.affine, wo);
    nlohmann::json left = nlohmann::json::array(), right = nlohmann::json::array(), cb = nlohmann::json::array();
    for (int v = 1; v <= 90; ++v) (v % 2 ? left : right).push_back(v);
    for (int v = 91; v <= 116; ++v) cb.push_back(v);
    classes = tmp / "classes.json";
    // Written by hand so the order is the file's (left, right, cerebellum).
    std::ofstream(classes) << "{\"left_cerebrum\": " << left.dump() << ", \"right_cerebrum\": " << right.dump()
                           << ", \"cerebellum\": " << cb.dump() << "}";
    const nlohmann::json e = {{"image", t1.string()}, {"label", aal.string()}};
    dataset = tmp / "dataset.json";
    write_json(dataset, {{"training", {e}}, {"validation", {e}}, {"test", {e}}});
    write_json(tmp / "unlabelled.json", {{"training", {t1.string()}}});
    pretrained = tmp / "pretrained";
    std::string out;
    const int rc = run_shell(bin("hdssl-pretrain") + " --data " + (tmp / "unlabelled.json").string() + " --out " +
                                 pretrained.string() + " --modality mri --preprocess '{\"spacing\": null}' --base-channels 4"
                                 " --levels 3 --patch 32,32,16 --pairs 2 --positives 64 --steps 6 --log-every 3 --threads 2",
                             &out);
    if (rc != 0) throw std::runtime_error("pre-training the small case failed:\n" + out);
  }
};

SmallCase& small_case() {
  static SmallCase c;
  return c;
}

/// The flags every downstream run here shares: no resampling (the case is already at 3 mm), tiny patches and
/// windows; `data` and `classes` default to the small case's.
std::string tiny(const fs::path& out, int steps, const std::string& data = "", const std::string& classes = "") {
  const auto& c = small_case();
  return " --data '" + (data.empty() ? c.dataset.string() : data) + "' --classes '" +
         (classes.empty() ? c.classes.string() : classes) + "' --out " + out.string() +
         " --modality mri --preprocess '{\"spacing\": null}' --patch 32,32,16 --window 32,32,16 --stride 16,16,8"
         " --batch 2 --steps " + std::to_string(steps) + " --val-every 4 --log-every 2 --checkpoint-every 4 --threads 2";
}

std::string check_script() { return std::string(HDSSL_TRAIN_TEST_DIR) + "/check_predictions.py"; }

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("every downstream setup completes on the small case; its outputs agree with nibabel and numpy") {
  auto& c = small_case();
  struct Setup {
    const char* name;
    std::string command;
  };
  const std::vector<Setup> setups = {
      {"linear probe", bin("hdssl-linear-eval") + " --weights " + c.pretrained.string()},
      {"non-linear probe, random init", bin("hdssl-linear-eval") + " --head nonlinear --weights none --base-channels 4 --levels 3"},
      {"fine-tuning", bin("hdssl-finetune") + " --weights " + (c.pretrained / "backbone.safetensors").string()},
      {"from scratch", bin("hdssl-finetune") + " --from-scratch --base-channels 4 --levels 3"},
  };
  for (const auto& s : setups) {
    CAPTURE(s.name);
    const fs::path out = c.tmp / ("run-" + std::to_string(&s - setups.data()));
    std::string log;
    REQUIRE_MESSAGE(run_shell(s.command + tiny(out, 8), &log) == 0, log);
    CHECK(log.find("validation Dice") != std::string::npos);
    CHECK(log.find("mean test Dice") != std::string::npos);
    for (const char* f : {"model.safetensors", "results.json", "results.md", "metrics.jsonl", "curve.png", "config.json",
                          "predictions/t1.nii.gz", "predictions/t1.png"})
      CHECK_MESSAGE(fs::exists(out / f), f);
    const auto r = read_json(out / "results.json");
    REQUIRE(r.at("volumes").size() == 1);
    CHECK(r.at("classes") == nlohmann::json({"left_cerebrum", "right_cerebrum", "cerebellum"}));
    const double mean = r.at("mean_dice").get<double>();
    CHECK(mean >= 0.0);
    CHECK(mean <= 1.0);
    std::string check;
    CHECK_MESSAGE(run_shell("/usr/bin/python3 " + check_script() + " " + (out / "results.json").string() + " " +
                                c.classes.string(), &check) == 0, check);
  }

  // hdssl-predict with the fine-tuned model gives the same label map the evaluation wrote, in the input's geometry.
  const fs::path ft = c.tmp / "run-2";
  const fs::path pred_dir = c.tmp / "predicted";
  std::string log;
  REQUIRE_MESSAGE(run_shell(bin("hdssl-predict") + " --model " + ft.string() + " --input " + c.t1.string() + " --output-dir " +
                                pred_dir.string() + " --probabilities --threads 2", &log) == 0, log);
  const auto a = hdssl::io::read_nifti(pred_dir / "t1_seg.nii.gz", {});
  const auto b = hdssl::io::read_nifti(ft / "predictions" / "t1.nii.gz", {});
  CHECK(torch::equal(a.data, b.data));
  std::string py;
  CHECK_MESSAGE(run_shell("/usr/bin/python3 -c \"import nibabel as nib, numpy as np; i = nib.load('" + c.t1.string() +
                              "'); p = nib.load('" + (pred_dir / "t1_prob.nii.gz").string() +
                              "'); d = np.asarray(p.dataobj); assert p.shape == i.shape + (3,), p.shape; "
                              "assert np.allclose(p.affine, i.affine, atol=1e-4); assert d.min() >= 0 and d.max() <= 1\"",
                          &py) == 0, py);
  REQUIRE(run_shell(bin("hdssl-predict") + " --model " + (ft / "model.safetensors").string() + " --list-classes", &log) == 0);
  CHECK(log.find("3\tcerebellum\t91,92") != std::string::npos);

  // hdssl-embed: balanced (3 levels x 32) and two raw levels (4 + 16 channels), both in the input's geometry.
  for (const auto& [flags, channels] : std::vector<std::pair<std::string, int>>{{"", 96}, {" --representation concatenated --levels 0,2", 20}}) {
    const fs::path e = c.tmp / ("embedding" + std::to_string(channels) + ".nii.gz");
    REQUIRE_MESSAGE(run_shell(bin("hdssl-embed") + " --weights " + c.pretrained.string() + " --input " + c.t1.string() +
                                  " --output " + e.string() + " --window 32,32,16 --stride 16,16,8 --threads 2" + flags, &log) == 0, log);
    CHECK_MESSAGE(run_shell("/usr/bin/python3 -c \"import nibabel as nib, numpy as np; i = nib.load('" + c.t1.string() +
                                "'); e = nib.load('" + e.string() + "'); assert e.shape == i.shape + (" + std::to_string(channels) +
                                ",), e.shape; assert np.allclose(e.affine, i.affine, atol=1e-4); "
                                "assert np.isfinite(np.asarray(e.dataobj)).all()\"", &py) == 0, py);
  }
}

TEST_CASE("a downstream run resumed from its checkpoint repeats the uninterrupted run") {
  auto& c = small_case();
  const std::string command = bin("hdssl-finetune") + " --weights " + c.pretrained.string() + " --pngs false";
  std::string log;
  const fs::path whole = c.tmp / "resume-whole", parts = c.tmp / "resume-parts";
  REQUIRE_MESSAGE(run_shell(command + tiny(whole, 8), &log) == 0, log);
  // A run that died after its step-4 checkpoint: the same folder without what came later.
  fs::copy(whole, parts, fs::copy_options::recursive);
  REQUIRE(fs::remove(parts / "checkpoints" / "step-000000008.ckpt"));
  fs::remove(parts / "results.json");
  REQUIRE_MESSAGE(run_shell(command + tiny(parts, 8), &log) == 0, log);
  CHECK(log.find("resuming from") != std::string::npos);
  CHECK(log.find("at step 4") != std::string::npos);
  auto records = [](const fs::path& out) {
    // The numbers as written (shortest round-trip text): equal text = equal bits.
    std::vector<std::string> v;
    for (const auto& r : hdssl::train::read_metrics(out / "metrics.jsonl"))
      v.push_back(r.at("step").dump() + ":" + (r.contains("loss") ? r.at("loss").dump() : "val " + r.at("val_dice").dump()));
    return v;
  };
  const auto w = records(whole), p = records(parts);
  CHECK(w.size() == 6);  // losses at 2, 4, 6, 8 and validations at 4, 8
  CHECK(w == p);
  CHECK(read_json(whole / "results.json").at("mean_dice") == read_json(parts / "results.json").at("mean_dice"));
  // Another learning rate, or more steps (the schedule scales with them), is another run: refused, naming the key.
  CHECK(run_shell(command + tiny(parts, 8) + " --lr 1e-3", &log) == 2);
  CHECK_MESSAGE(log.find("lr (was") != std::string::npos, log);
  CHECK(run_shell(command + tiny(parts, 12), &log) == 2);
  CHECK_MESSAGE(log.find("steps (was 8, now 12)") != std::string::npos, log);
}

TEST_CASE("fine-tuning as two data-parallel ranks (--nproc 2): rank 0 alone validates, writes and scores the test list") {
  auto& c = small_case();
  const fs::path out = c.tmp / "two-ranks";
  std::string log;
  std::string flags = tiny(out, 8);
  flags.replace(flags.find("--threads 2"), 11, "--threads 1");  // one core per rank
  REQUIRE_MESSAGE(run_shell(bin("hdssl-finetune") + " --nproc 2 --weights " + c.pretrained.string() + " --pngs false" + flags,
                            &log) == 0,
                  log);
  CHECK(log.find("launching 2 ranks") != std::string::npos);
  // One voice: each progress line and validation once; losses at 2, 4, 6, 8 and validations at 4, 8.
  CHECK(hdssl::train::read_metrics(out / "metrics.jsonl").size() == 6);
  size_t lines = 0;
  for (size_t at = log.find("step 8/8"); at != std::string::npos; at = log.find("step 8/8", at + 1)) ++lines;
  CHECK(lines == 1);
  const auto r = read_json(out / "results.json");
  CHECK(r.at("steps") == 8);
  CHECK(r.at("mean_dice").get<double>() >= 0);
  CHECK(fs::exists(out / "model.safetensors"));
}

TEST_CASE("cross-validation writes its splits and reports every fold and the mean +- std") {
  auto& c = small_case();
  // Three subjects: copies of the case under different names.
  nlohmann::json training = nlohmann::json::array();
  for (const char* n : {"a", "b", "c"}) {
    fs::copy_file(c.t1, c.tmp / (std::string(n) + "_t1.nii.gz"), fs::copy_options::overwrite_existing);
    training.push_back({{"image", (c.tmp / (std::string(n) + "_t1.nii.gz")).string()}, {"label", c.aal.string()}});
  }
  const fs::path ds = c.tmp / "three.json";
  write_json(ds, {{"training", training}});
  const fs::path out = c.tmp / "folds";
  std::string log;
  REQUIRE_MESSAGE(run_shell(bin("hdssl-linear-eval") + " --weights " + c.pretrained.string() + tiny(out, 2, ds.string()) +
                                " --folds 3 --pngs false", &log) == 0, log);
  for (int f = 0; f < 3; ++f) CHECK(fs::exists(out / "splits" / ("fold-" + std::to_string(f) + ".json")));
  const auto r = read_json(out / "results.json");
  REQUIRE(r.at("folds").size() == 3);
  std::vector<double> means;
  std::set<std::string> tested;
  for (const auto& f : r.at("folds")) {
    REQUIRE(f.at("volumes").size() == 1);
    tested.insert(f.at("volumes")[0].at("volume").get<std::string>());
    means.push_back(f.at("mean_dice").get<double>());
  }
  CHECK(tested == std::set<std::string>{"a_t1", "b_t1", "c_t1"});  // each subject tested exactly once
  const double m = (means[0] + means[1] + means[2]) / 3;
  double var = 0;
  for (double x : means) var += (x - m) * (x - m) / 2;
  CHECK(r.at("mean_dice").get<double>() == doctest::Approx(m));
  CHECK(r.at("std_dice").get<double>() == doctest::Approx(std::sqrt(var)));
  std::string check;
  CHECK_MESSAGE(run_shell("/usr/bin/python3 " + check_script() + " " + (out / "results.json").string() + " " + c.classes.string(),
                          &check) == 0, check);
  // More folds than volumes: refused before training.
  CHECK(run_shell(bin("hdssl-linear-eval") + tiny(c.tmp / "folds4", 2, ds.string()) + " --folds 4", &log) == 2);
  CHECK(log.find("4 folds need at least as many training volumes") != std::string::npos);
}

TEST_CASE("bad downstream input is refused before training, naming the file or key") {
  auto& c = small_case();
  std::string log;
  const std::string probe = bin("hdssl-linear-eval") + " --weights none --base-channels 4 --levels 3";
  // A label map on another grid.
  {
    using namespace hdssl;
    io::NiftiReadOptions lo;
    lo.load_as = io::LoadType::Int64;
    Volume lab = io::read_nifti(c.aal, lo);
    lab = preprocess::resample(lab, Eigen::Vector3d(4, 4, 4), preprocess::Interpolation::nearest);
    io::write_nifti(c.tmp / "aal4.nii.gz", lab.data, lab.affine);
    write_json(c.tmp / "mismatch.json", {{"training", {{{"image", c.t1.string()}, {"label", (c.tmp / "aal4.nii.gz").string()}}}}});
    CHECK(run_shell(probe + tiny(c.tmp / "bad1", 2, (c.tmp / "mismatch.json").string()), &log) == 2);
    CHECK_MESSAGE(log.find("aal4.nii.gz") != std::string::npos, log);
    CHECK(!fs::exists(c.tmp / "bad1" / "metrics.jsonl"));
  }
  // A class whose values occur nowhere: error naming it; a value that occurs nowhere within a class: warning.
  CHECK(run_shell(probe + tiny(c.tmp / "bad2", 2, "", "{\"brain\": [1, 2], \"ghost\": [500]}"), &log) == 2);
  CHECK_MESSAGE(log.find("class 'ghost' has no voxel") != std::string::npos, log);
  CHECK(log.find("label value 500 occurs in no label map") != std::string::npos);
  // A training entry without a label, an empty training list.
  write_json(c.tmp / "nolabel.json", {{"training", {c.t1.string()}}});
  CHECK(run_shell(probe + tiny(c.tmp / "bad3", 2, (c.tmp / "nolabel.json").string()), &log) == 2);
  CHECK_MESSAGE(log.find("has no \"label\"") != std::string::npos, log);
  write_json(c.tmp / "empty.json", {{"training", nlohmann::json::array()}, {"test", {c.t1.string()}}});
  CHECK(run_shell(probe + tiny(c.tmp / "bad4", 2, (c.tmp / "empty.json").string()), &log) == 2);
  CHECK_MESSAGE(log.find("training list is empty") != std::string::npos, log);
  // Weights whose shapes do not match the model asked for.
  CHECK(run_shell(bin("hdssl-linear-eval") + " --weights " + c.pretrained.string() + " --base-channels 8" + tiny(c.tmp / "bad5", 2), &log) == 2);
  CHECK_MESSAGE(log.find("mismatched") != std::string::npos, log);
  // Fine-tuning without weights; a key that does not exist; a stride past the window.
  CHECK(run_shell(bin("hdssl-finetune") + tiny(c.tmp / "bad6", 2), &log) == 2);
  CHECK(log.find("fine-tuning needs pre-trained weights") != std::string::npos);
  write_json(c.tmp / "typo.json", {{"stpes", 3}});
  CHECK(run_shell(probe + tiny(c.tmp / "bad7", 2) + " --config " + (c.tmp / "typo.json").string(), &log) == 2);
  CHECK(log.find("stpes") != std::string::npos);
  std::string wide = tiny(c.tmp / "bad8", 2);
  wide.replace(wide.find("--stride 16,16,8"), 16, "--stride 64,16,8");
  CHECK(run_shell(probe + wide, &log) == 2);
  CHECK(log.find("stride") != std::string::npos);
  // hdssl-predict refuses a backbone file (no model record) and a missing input.
  CHECK(run_shell(bin("hdssl-predict") + " --model " + (c.pretrained / "backbone.safetensors").string() + " --input " + c.t1.string(), &log) == 2);
  CHECK(log.find("no hdssl_model record") != std::string::npos);
}
