#pragma once
// From an input scan to outputs in the input's own geometry: preprocess it as at training time, run a
// network over it in sliding windows, and map the result back onto the input's grid (linear for
// probabilities and features, nearest for labels) so it overlays the input in any viewer. The same path
// serves segmentation (hdssl-predict, the test sets of the evaluation drivers) and embeddings (hdssl-embed).
#include <torch/torch.h>

#include <functional>
#include <string>

#include "hdssl/core/volume.hpp"
#include "hdssl/eval/sliding_window.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/preprocess/pipeline.hpp"
#include "hdssl/preprocess/resample.hpp"

namespace hdssl::eval {

/// How windows are run: device, bf16 autocast and channels-last on CUDA (as in training).
struct DeviceOptions {
  torch::Device device = torch::kCPU;
  bool bf16 = true;
  bool channels_last = true;
};

/// Wraps `forward` ((B, C, wx, wy, wz) on the device -> (B, K, ...)) into a sliding-window predictor that
/// moves windows to the device, applies bf16 autocast / channels-last on CUDA, and returns float32 outputs.
inline std::function<torch::Tensor(const torch::Tensor&)> device_predictor(
    std::function<torch::Tensor(const torch::Tensor&)> forward, const DeviceOptions& d) {
  return [forward = std::move(forward), d](const torch::Tensor& windows) {
    torch::NoGradGuard no_grad;
    torch::Tensor x = windows.to(d.device);
    const bool cuda = d.device.is_cuda();
    if (cuda && d.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast3d);
    ops::compat::CudaBf16Autocast autocast(cuda && d.bf16);
    return forward(x).to(torch::kFloat32);
  };
}

/// The network's output over the whole preprocessed volume `pre`: (K, X, Y, Z), float32, on the CPU, on the
/// preprocessed grid. `post` (e.g. sigmoid) is applied to the blended output.
inline torch::Tensor infer_preprocessed(const preprocess::Preprocessed& pre,
                                        const std::function<torch::Tensor(const torch::Tensor&)>& predictor,
                                        const SlidingWindowOptions& sw,
                                        const std::function<torch::Tensor(const torch::Tensor&)>& post = nullptr) {
  torch::Tensor out = sliding_window_inference(pre.image.data.unsqueeze(0).to(torch::kFloat32), predictor, sw);
  if (post) out = post(out);
  return out.cpu();
}

/// `t` ((X, Y, Z) or (C, X, Y, Z) on the preprocessed grid of `pre`) mapped onto the grid of `input` (the RAS
/// volume read from the file): linear for probabilities and features, nearest for labels; voxels the
/// preprocessing cropped away get `outside`.
inline torch::Tensor onto_input_grid(const torch::Tensor& t, const preprocess::Preprocessed& pre, const Volume& input,
                                     preprocess::Interpolation interp, double outside = 0) {
  return preprocess::resample_onto(t, pre.image.affine, input.affine, input.shape(), interp, outside);
}

/// A result on the input's grid as a Volume carrying the input's geometry and file header, ready for
/// write_nifti(..., to_source_orientation) to land in the input file's own voxel order and affine.
inline Volume like_input(const Volume& input, torch::Tensor data, int datatype) {
  Volume v;
  v.data = std::move(data);
  v.affine = input.affine;
  v.meta = input.meta;
  v.meta.datatype = datatype;
  v.meta.scl_slope = 1.0;
  v.meta.scl_inter = 0.0;
  v.meta.intent_code = 0;
  v.source = input.source;
  return v;
}

}  // namespace hdssl::eval
