// hdssl-embed: the voxel representation of a pre-trained backbone over a whole scan, written as a 4-D
// NIfTI (one volume per feature channel) in the input's geometry. The scan is preprocessed as for
// pre-training (taken from the run's config.json when --weights is a pre-training folder), run through the
// backbone in sliding windows and mapped back onto the input grid (linear).
#include "cli_common.hpp"

#include <hdssl/eval/embedding.hpp>
#include <hdssl/eval/inference.hpp>
#include <hdssl/io/nifti.hpp>
#include <hdssl/train/progress.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Voxel embeddings of a pre-trained hdssl / vox2vec backbone as a 4-D NIfTI in the input's geometry.",
               "hdssl-embed"};
  std::string weights, input, output, representation = "balanced", modality, preprocess_json, device = "auto";
  std::vector<int64_t> levels;
  std::vector<int64_t> window{128, 128, 32}, stride{64, 64, 16};
  int threads = 0;
  app.add_option("--weights", weights, "backbone.safetensors / pretrain.safetensors, or an hdssl-pretrain output folder")->required();
  app.add_option("--input", input, "scan (.nii / .nii.gz)")->required();
  app.add_option("--output", output, "4-D NIfTI to write (X, Y, Z, channels)")->required();
  app.add_option("--representation", representation,
                 "balanced (each level projected to the pre-training's width, concatenated) | concatenated (raw levels)")
      ->check(CLI::IsMember({"balanced", "concatenated"}))->capture_default_str();
  app.add_option("--levels", levels, "pyramid levels to keep, 0 = finest (default: all)")->delimiter(',');
  app.add_option("--modality", modality, "preprocessing preset ct | mri (default: the pre-training run's, else ct)");
  app.add_option("--preprocess", preprocess_json, "JSON object overriding preprocessing options");
  app.add_option("--window", window, "sliding-window size X,Y,Z")->delimiter(',')->expected(3)->capture_default_str();
  app.add_option("--stride", stride, "sliding-window stride X,Y,Z")->delimiter(',')->expected(3)->capture_default_str();
  app.add_option("--device", device, "auto | cpu | cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  hdssl::cli::add_threads_option(app, threads);
  return hdssl::cli::run(app, argc, argv, [&] {
    hdssl::cli::apply_threads(threads);
    const auto t0 = std::chrono::steady_clock::now();
    // Preprocessing: flags, else the pre-training run's configuration, else the CT preset.
    nlohmann::json pre = nlohmann::json::object();
    std::string mod = modality;
    const std::filesystem::path run_dir = std::filesystem::is_directory(weights) ? std::filesystem::path(weights)
                                                                                 : std::filesystem::path(weights).parent_path();
    if (std::ifstream cfg{run_dir / "config.json"}) {
      try {
        nlohmann::json j;
        cfg >> j;
        if (mod.empty() && j.contains("modality")) mod = j.at("modality").get<std::string>();
        if (j.contains("preprocess") && j.at("preprocess").is_object()) pre = j.at("preprocess");
      } catch (const nlohmann::json::exception&) {
        std::cerr << "hdssl-embed: warning: " << (run_dir / "config.json").string() << " is not readable JSON; ignored\n";
      }
    }
    if (!preprocess_json.empty()) {
      try {
        pre = nlohmann::json::parse(preprocess_json);
      } catch (const nlohmann::json::exception&) {
        throw hdssl::ConfigError("option --preprocess: not a JSON object");
      }
    }
    pre["preset"] = mod.empty() ? "ct" : mod;
    if (!pre.contains("patch_size")) pre["patch_size"] = window;
    const auto popt = hdssl::preprocess::options_from_json(pre);
    hdssl::eval::SlidingWindowOptions sw;
    for (int a = 0; a < 3; ++a) sw.window[a] = window[a], sw.stride[a] = stride[a];
    sw.validate();

    const bool cuda_ok = torch::cuda::is_available() && hdssl::ops::compat::cuda_ops_available();
    if (device == "cuda" && !cuda_ok) throw hdssl::ConfigError("option --device: cuda was asked for, but no CUDA device is usable");
    const torch::Device dev = (device == "cuda" || (device == "auto" && cuda_ok)) ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    hdssl::eval::Embedder embedder(weights, representation == "balanced", levels);
    embedder.to(dev);
    const hdssl::Volume in = hdssl::io::read_nifti(input);
    const auto p = hdssl::preprocess::preprocess(in, popt);
    const double gb = 4.0 * embedder.channels() * static_cast<double>(in.data.numel()) / 1e9;
    std::cout << "hdssl-embed: " << embedder.channels() << " channels over " << in.data.size(0) << "x" << in.data.size(1) << "x"
              << in.data.size(2) << " voxels (" << gb << " GB of float32 output)" << std::endl;
    auto predictor = hdssl::eval::device_predictor([&](const torch::Tensor& x) { return embedder.forward(x); }, {dev, true, true});
    const auto e = hdssl::eval::infer_preprocessed(p, predictor, sw);
    const auto back = hdssl::eval::onto_input_grid(e, p, in, hdssl::preprocess::Interpolation::linear, 0);
    auto vol = hdssl::eval::like_input(in, back.permute({1, 2, 3, 0}).contiguous(), 16);
    hdssl::io::NiftiWriteOptions wo;
    wo.to_source_orientation = true;
    wo.description = "hdssl embedding (" + representation + ")";
    hdssl::io::write_nifti(output, vol, wo);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "wrote " << output << " (" << hdssl::train::format_duration(secs) << ")" << std::endl;
    return hdssl::cli::kExitOk;
  });
}
