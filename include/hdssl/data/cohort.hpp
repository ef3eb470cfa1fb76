#pragma once
// A cohort of synthetic "subjects" derived from one real labelled scan, for trying the whole method on real
// anatomy without shipping data (the README's demo, benchmarks/real_data.sh). Each subject s is the scan
//   1. resampled to `spacing` mm,
//   2. warped by a random smooth deformation: displacements drawn N(0, deformation_mm) on a control grid
//      every control_spacing_mm, interpolated trilinearly to every voxel; the image is sampled linearly,
//      the label map by nearest neighbour at the same displaced points, so labels stay aligned;
//   3. times a smooth multiplicative bias field exp(b), b drawn N(0, bias) on the same kind of grid;
//   4. through a contrast curve x -> m (x / m)^gamma, gamma uniform in [gamma_lo, gamma_hi], m the 99.5th
//      percentile; and
//   5. plus Gaussian noise of sigma = noise x m, clipped at 0.
// Every draw comes from Philox streams of (seed, subject, Purpose::cohort), so a (scan, options, seed) always
// gives the same files, and subjects are independent of how many are made. The pre-training subjects,
// the labelled training subjects, the validation and the test subjects get disjoint subject numbers.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <Eigen/Dense>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/core/volume.hpp"
#include "hdssl/data/datalist.hpp"
#include "hdssl/io/atomic_file.hpp"
#include "hdssl/io/nifti.hpp"
#include "hdssl/preprocess/intensity.hpp"
#include "hdssl/preprocess/resample.hpp"

namespace hdssl::data {

struct CohortOptions {
  int64_t pretrain_subjects = 8;    ///< unlabelled, for pre-training
  int64_t labelled_subjects = 4;    ///< labelled training subjects (datalists with the first 1, 2, 4, ... of them)
  int64_t validation_subjects = 1;
  int64_t test_subjects = 2;
  uint64_t seed = 0;
  double spacing = 3.0;             ///< mm, isotropic output grid
  double deformation_mm = 4.0;      ///< std of the control-point displacements
  double control_spacing_mm = 40.0; ///< distance between control points
  double bias = 0.2;                ///< std of the log bias field
  std::array<double, 2> gamma{{0.7, 1.4}};
  double noise = 0.02;              ///< noise sigma as a fraction of the 99.5th percentile

  void validate() const {
    auto fail = [](const std::string& key, const std::string& why) { throw ConfigError("cohort option '" + key + "': " + why); };
    if (pretrain_subjects < 0 || labelled_subjects < 1 || validation_subjects < 0 || test_subjects < 1)
      fail("subjects", "needs >= 0 pre-training, >= 1 labelled, >= 0 validation and >= 1 test subjects");
    if (!(spacing > 0) || !std::isfinite(spacing)) fail("spacing", "must be a positive number of mm");
    if (!(deformation_mm >= 0) || !std::isfinite(deformation_mm)) fail("deformation_mm", "must be >= 0");
    if (!(control_spacing_mm > 0) || !std::isfinite(control_spacing_mm)) fail("control_spacing_mm", "must be > 0");
    if (!(bias >= 0) || !std::isfinite(bias)) fail("bias", "must be >= 0");
    if (!(gamma[0] > 0 && gamma[0] <= gamma[1]) || !std::isfinite(gamma[1])) fail("gamma", "needs 0 < lo <= hi");
    if (!(noise >= 0) || !std::isfinite(noise)) fail("noise", "must be >= 0");
  }
};

/// The AAL atlas (mricron-data's aal.nii.gz, 116 regions in the standard AAL order) grouped into eight
/// structures large enough for a small model, both hemispheres together.
inline nlohmann::ordered_json aal_structures() {
  auto range = [](int a, int b) {
    nlohmann::ordered_json v = nlohmann::ordered_json::array();
    for (int i = a; i <= b; ++i) v.push_back(i);
    return v;
  };
  nlohmann::ordered_json j;
  j["frontal"] = range(1, 28);           // precentral .. gyrus rectus
  j["insula_cingulate"] = range(29, 36);
  j["medial_temporal"] = range(37, 42);  // hippocampus, parahippocampal gyrus, amygdala
  j["occipital"] = range(43, 56);        // calcarine .. fusiform
  j["parietal"] = range(57, 70);         // postcentral .. paracentral lobule
  j["deep_grey"] = range(71, 78);        // caudate, putamen, pallidum, thalamus
  j["temporal"] = range(79, 90);         // Heschl .. inferior temporal
  j["cerebellum"] = range(91, 116);      // hemispheres and vermis
  return j;
}

namespace detail {

/// A smooth random field (C, X, Y, Z): N(0, sigma) values on a control grid covering the volume every
/// `control_mm`, interpolated trilinearly (corner-aligned) to `shape`.
inline torch::Tensor smooth_field(Rng& rng, int64_t channels, const std::array<int64_t, 3>& shape, double spacing_mm,
                                  double control_mm, double sigma) {
  std::vector<int64_t> coarse{1, channels};
  for (int a = 0; a < 3; ++a)
    coarse.push_back(std::max<int64_t>(2, static_cast<int64_t>(std::ceil(shape[a] * spacing_mm / control_mm)) + 1));
  auto c = torch::empty(coarse, torch::kFloat64);
  auto* p = c.data_ptr<double>();
  for (int64_t i = 0; i < c.numel(); ++i) p[i] = sigma * rng.normal();
  namespace F = torch::nn::functional;
  return F::interpolate(c.to(torch::kFloat32), F::InterpolateFuncOptions()
                                                   .size(std::vector<int64_t>{shape[0], shape[1], shape[2]})
                                                   .mode(torch::kTrilinear)
                                                   .align_corners(true))[0];
}

}  // namespace detail

struct CohortSubject {
  Volume image;   ///< float32
  Volume labels;  ///< int64, same grid
};

/// Subject number `subject` derived from (image, labels) (see the top of this file). image and labels must
/// share their grid; both are taken as RAS volumes (as read_nifti returns them).
inline CohortSubject make_subject(const Volume& image, const Volume& labels, const CohortOptions& o, uint64_t subject) {
  o.validate();
  if (labels.data.sizes() != image.data.sizes() || (labels.affine - image.affine).cwiseAbs().maxCoeff() > 1e-4)
    throw DataError("cohort: label map '" + labels.source + "' is not on the grid of '" + image.source + "'");
  const Eigen::Vector3d sp(o.spacing, o.spacing, o.spacing);
  const Volume img = preprocess::resample(image, sp, preprocess::Interpolation::linear);
  const std::array<int64_t, 3> shape = img.shape();
  Rng rng = Rng::for_stream(o.seed, subject, 0, Purpose::cohort);

  // Deformation: displaced sampling points, in voxels of the resampled grid (axes are the source's).
  const auto disp = detail::smooth_field(rng, 3, shape, o.spacing, o.control_spacing_mm, o.deformation_mm / o.spacing);
  namespace F = torch::nn::functional;
  std::vector<torch::Tensor> axes;
  for (int a = 0; a < 3; ++a) {
    auto base = torch::arange(shape[a], torch::kFloat32);
    std::vector<int64_t> view{1, 1, 1};
    view[a] = shape[a];
    axes.push_back((base.view(view) + disp[a]).clamp(0, static_cast<double>(shape[a] - 1)));
  }
  // grid_sample on (1, 1, X, Y, Z): the grid's last dimension is (Z, Y, X) normalised to [-1, 1] (corners).
  auto norm = [&](int a) { return axes[a] * (2.0 / std::max<int64_t>(1, shape[a] - 1)) - 1.0; };
  const auto grid = torch::stack({norm(2), norm(1), norm(0)}, -1).unsqueeze(0);
  auto sample = [&](const torch::Tensor& t, F::GridSampleFuncOptions::mode_t mode) {
    return F::grid_sample(t.to(torch::kFloat32).unsqueeze(0).unsqueeze(0), grid,
                          F::GridSampleFuncOptions().mode(mode).padding_mode(torch::kBorder).align_corners(true))[0][0];
  };
  // Labels: nearest at the same displaced points of the same resampled grid (resampled by nearest first).
  const Volume lab = preprocess::resample(labels, sp, preprocess::Interpolation::nearest);
  torch::Tensor warped = sample(img.data, torch::kBilinear);
  const torch::Tensor warped_labels = sample(lab.data, torch::kNearest).round().to(torch::kLong);

  // Bias field, contrast, noise.
  warped = warped.clamp_min(0) * torch::exp(detail::smooth_field(rng, 1, shape, o.spacing, o.control_spacing_mm, o.bias)[0]);
  const double m = std::max(1e-6, preprocess::percentiles(warped, {99.5}, image.source)[0]);
  const double gamma = o.gamma[0] + (o.gamma[1] - o.gamma[0]) * rng.uniform_double();
  warped = m * torch::pow((warped / m).clamp_min(0), gamma);
  if (o.noise > 0) {
    auto n = torch::empty(warped.sizes(), torch::kFloat64);
    auto* p = n.data_ptr<double>();
    for (int64_t i = 0; i < n.numel(); ++i) p[i] = rng.normal();
    warped = (warped + (o.noise * m) * n.to(torch::kFloat32)).clamp_min(0);
  }
  CohortSubject s;
  s.image = img;
  s.image.data = warped.contiguous();
  s.image.meta.datatype = 16;
  s.image.meta.scl_slope = 1, s.image.meta.scl_inter = 0;
  s.labels = lab;
  s.labels.data = warped_labels.contiguous();
  return s;
}

/// What write_cohort made.
struct CohortFiles {
  std::filesystem::path pretrain;                  ///< datalist of the unlabelled subjects
  std::vector<std::filesystem::path> labelled;     ///< datalists training on the first 1, 2, 4, ... labelled subjects
  std::filesystem::path classes;                   ///< classes.json
};

/// Writes the cohort into `out`: subjects/sub-<nnn>_t1.nii.gz (+ _labels.nii.gz for labelled ones), pretrain.json,
/// labelled-<k>.json (training: the first k labelled subjects; validation and test lists shared by all), and
/// classes.json (`classes`). `progress` hears one line per subject.
inline CohortFiles write_cohort(const Volume& image, const Volume& labels, const nlohmann::ordered_json& classes,
                                const std::filesystem::path& out, const CohortOptions& o,
                                const std::function<void(const std::string&)>& progress = nullptr) {
  o.validate();
  const auto sub = out / "subjects";
  std::error_code ec;
  std::filesystem::create_directories(sub, ec);
  if (ec) throw IoError("cohort folder '" + sub.string() + "': cannot create (" + ec.message() + ")");
  const int64_t total = o.pretrain_subjects + o.labelled_subjects + o.validation_subjects + o.test_subjects;
  Datalist pre, base;
  std::vector<Sample> labelled;
  io::NiftiWriteOptions lw;
  lw.datatype = io::datatype_from_name("int16");
  for (int64_t s = 0; s < total; ++s) {
    const CohortSubject subj = make_subject(image, labels, o, static_cast<uint64_t>(s));
    char name[32];
    std::snprintf(name, sizeof name, "sub-%03lld", static_cast<long long>(s));
    const auto img_path = sub / (std::string(name) + "_t1.nii.gz");
    io::write_nifti(img_path, subj.image.data, subj.image.affine);
    const bool is_pre = s < o.pretrain_subjects;
    std::string role = "pre-training";
    if (is_pre) {
      pre.training.push_back({img_path, std::nullopt});
    } else {
      const auto lab_path = sub / (std::string(name) + "_labels.nii.gz");
      io::write_nifti(lab_path, subj.labels.data, subj.labels.affine, lw);
      const Sample smp{img_path, lab_path};
      const int64_t k = s - o.pretrain_subjects;
      if (k < o.labelled_subjects) labelled.push_back(smp), role = "labelled training";
      else if (k < o.labelled_subjects + o.validation_subjects) base.validation.push_back(smp), role = "validation";
      else base.test.push_back(smp), role = "test";
    }
    if (progress)
      progress("subject " + std::to_string(s + 1) + "/" + std::to_string(total) + " (" + role + "): " + img_path.string());
  }
  CohortFiles files;
  files.classes = out / "classes.json";
  io::write_text_atomically(files.classes, classes.dump(2) + "\n");
  if (!pre.training.empty()) {
    files.pretrain = out / "pretrain.json";
    io::write_text_atomically(files.pretrain, datalist_json(pre).dump(2) + "\n");
  }
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < o.labelled_subjects; k *= 2) ks.push_back(k);
  ks.push_back(o.labelled_subjects);
  for (int64_t k : ks) {
    Datalist d = base;
    d.training.assign(labelled.begin(), labelled.begin() + k);
    files.labelled.push_back(out / ("labelled-" + std::to_string(k) + ".json"));
    io::write_text_atomically(files.labelled.back(), datalist_json(d).dump(2) + "\n");
  }
  return files;
}

}  // namespace hdssl::data
