// hdssl-make-cohort: a cohort of synthetic subjects from one real labelled scan (by default the Colin27 T1
// and its AAL atlas from mricron-data, grouped into eight structures): seeded smooth deformations, bias
// fields, contrast curves and noise, labels warped with their image. Writes the subjects, pretrain.json
// (unlabelled subjects), labelled-<k>.json (the first k labelled subjects; shared validation and test
// lists) and classes.json: what hdssl-pretrain, hdssl-linear-eval and hdssl-finetune read. See docs/eval.md.
#include "cli_common.hpp"

#include <hdssl/data/cohort.hpp>
#include <hdssl/eval/classes.hpp>
#include <hdssl/io/nifti.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Make a cohort of synthetic subjects from one real labelled scan (seeded deformations, bias fields,\n"
               "contrast changes and noise; labels warped with their image), with datalists and a classes file.",
               "hdssl-make-cohort"};
  const std::string templates = "/usr/share/mricron/templates/";
  std::string image = templates + "ch2.nii.gz", labels = templates + "aal.nii.gz", out, classes;
  hdssl::data::CohortOptions o;
  std::vector<double> gamma{o.gamma[0], o.gamma[1]};
  int threads = 0;
  app.add_option("--image", image, "the real scan")->capture_default_str();
  app.add_option("--labels", labels, "its label map (same grid)")->capture_default_str();
  app.add_option("--classes", classes, "class name -> label values (inline JSON or file; default: the AAL atlas in eight structures)");
  app.add_option("--out", out, "output folder")->required();
  app.add_option("--pretrain", o.pretrain_subjects, "unlabelled subjects for pre-training")->capture_default_str();
  app.add_option("--labelled", o.labelled_subjects, "labelled training subjects")->capture_default_str();
  app.add_option("--validation", o.validation_subjects, "validation subjects")->capture_default_str();
  app.add_option("--test", o.test_subjects, "test subjects")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of every draw")->capture_default_str();
  app.add_option("--spacing", o.spacing, "isotropic voxel size of the subjects (mm)")->capture_default_str();
  app.add_option("--deformation-mm", o.deformation_mm, "std of the random displacements (mm)")->capture_default_str();
  app.add_option("--control-spacing-mm", o.control_spacing_mm, "distance between the deformation's control points (mm)")->capture_default_str();
  app.add_option("--bias", o.bias, "std of the log bias field")->capture_default_str();
  app.add_option("--gamma", gamma, "contrast curve exponent range LO,HI")->delimiter(',')->expected(2);
  app.add_option("--noise", o.noise, "noise sigma as a fraction of the 99.5th percentile")->capture_default_str();
  hdssl::cli::add_threads_option(app, threads);
  return hdssl::cli::run(app, argc, argv, [&] {
    hdssl::cli::apply_threads(threads);
    o.gamma = {{gamma[0], gamma[1]}};
    const auto t0 = std::chrono::steady_clock::now();
    nlohmann::ordered_json cls = hdssl::data::aal_structures();
    if (!classes.empty()) hdssl::eval::to_json(cls, hdssl::eval::read_classes(classes));
    const hdssl::Volume img = hdssl::io::read_nifti(image);
    hdssl::io::NiftiReadOptions lo;
    lo.load_as = hdssl::io::LoadType::Int64;
    const hdssl::Volume lab = hdssl::io::read_nifti(labels, lo);
    const auto files = hdssl::data::write_cohort(img, lab, cls, out, o, [](const std::string& s) { std::cout << s << std::endl; });
    std::cout << "cohort in " << out << " ("
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s): "
              << (files.pretrain.empty() ? std::string("no pre-training list") : files.pretrain.string());
    for (const auto& l : files.labelled) std::cout << ", " << l.string();
    std::cout << ", " << files.classes.string() << std::endl;
    return hdssl::cli::kExitOk;
  });
}
