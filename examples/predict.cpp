// hdssl-predict: segment new scans with a model trained by hdssl-linear-eval or hdssl-finetune. Each input
// is preprocessed as at training time, segmented in sliding windows, and the label map (0 background,
// c + 1 class c; classes listed by --list-classes) written in the input's exact geometry: same shape, same
// affine, same voxel order, so a viewer overlays it on the input as it is.
#include "cli_common.hpp"

#include <hdssl/eval/segmenter.hpp>
#include <hdssl/io/nifti.hpp>
#include <hdssl/train/progress.hpp>
#include <hdssl/train/segmentation_trainer.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Segment scans with a trained hdssl model. Outputs label maps in each input's own geometry.",
               "hdssl-predict"};
  std::string model_path, output, output_dir, device = "auto";
  std::vector<std::string> inputs;
  bool probabilities = false, list_classes = false;
  int threads = 0;
  app.add_option("--model", model_path, "model.safetensors, or the output folder of hdssl-linear-eval / hdssl-finetune")->required();
  app.add_option("--input", inputs, "scan(s) to segment (.nii / .nii.gz); several may follow one --input");
  app.add_option("--output", output, "output file for a single input (default: <input name>_seg.nii.gz in --output-dir)");
  app.add_option("--output-dir", output_dir, "folder for the outputs of several inputs (default: the current folder)");
  app.add_flag("--probabilities", probabilities, "also write the class probabilities as a 4-D NIfTI (<name>_prob.nii.gz, one volume per class)");
  app.add_flag("--list-classes", list_classes, "print the model's classes and label values, then exit");
  app.add_option("--device", device, "auto | cpu | cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  hdssl::cli::add_threads_option(app, threads);
  return hdssl::cli::run(app, argc, argv, [&] {
    hdssl::cli::apply_threads(threads);
    const bool cuda_ok = torch::cuda::is_available() && hdssl::ops::compat::cuda_ops_available();
    if (device == "cuda" && !cuda_ok) throw hdssl::ConfigError("option --device: cuda was asked for, but no CUDA device is usable");
    const torch::Device dev = (device == "cuda" || (device == "auto" && cuda_ok)) ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    auto loaded = hdssl::eval::load_segmentation_model(model_path, dev);
    const auto& record = loaded.second;
    if (list_classes) {
      for (size_t k = 0; k < record.classes.size(); ++k) {
        std::cout << (k + 1) << "\t" << record.classes[k].name << "\t";
        for (size_t i = 0; i < record.classes[k].values.size(); ++i) std::cout << (i ? "," : "") << record.classes[k].values[i];
        std::cout << "\n";
      }
      return hdssl::cli::kExitOk;
    }
    if (inputs.empty()) throw hdssl::ConfigError("option --input: give at least one scan to segment");
    if (!output.empty() && inputs.size() > 1) throw hdssl::ConfigError("option --output: only for a single --input; use --output-dir");
    hdssl::eval::Segmenter segmenter(loaded.first, record, {dev, true, true});
    const std::filesystem::path dir = output_dir.empty() ? std::filesystem::path(".") : std::filesystem::path(output_dir);
    if (!output_dir.empty()) std::filesystem::create_directories(dir);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const hdssl::Volume input = hdssl::io::read_nifti(inputs[i]);
      auto s = segmenter.segment(input, probabilities);
      const std::string stem = hdssl::train::volume_stem(inputs[i]);
      const std::filesystem::path out = output.empty() ? dir / (stem + "_seg.nii.gz") : std::filesystem::path(output);
      hdssl::io::NiftiWriteOptions wo;
      wo.datatype = s.labels.meta.datatype;
      wo.to_source_orientation = true;
      wo.description = "hdssl segmentation";
      hdssl::io::write_nifti(out, s.labels, wo);
      if (probabilities) {
        auto pv = hdssl::eval::like_input(input, s.probabilities.permute({1, 2, 3, 0}).contiguous(), 16);
        hdssl::io::NiftiWriteOptions po;
        po.to_source_orientation = true;
        po.description = "hdssl class probabilities";
        std::string name = out.filename().string();
        const auto pos = name.find("_seg.nii");
        name = pos != std::string::npos ? name.substr(0, pos) + "_prob.nii.gz" : stem + "_prob.nii.gz";
        hdssl::io::write_nifti(out.parent_path() / name, pv, po);
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << "[" << (i + 1) << "/" << inputs.size() << "] " << inputs[i] << " -> " << out.string() << "  ("
                << hdssl::train::format_duration(secs) << ")" << std::endl;
    }
    return hdssl::cli::kExitOk;
  });
}
