#pragma once
// Memory layout of a model's weights.
//
// Channels-last-3d (N, X, Y, Z, C strides) stores a voxel's channels next to each other. On a GPU the
// convolutions pick channels-last kernels for channels-last weights and inputs (bf16 convolutions are only
// fast that way), their outputs stay channels-last, and the positive-pair gather then reads contiguous
// channel vectors instead of one element per memory sector (docs/kernels.md).
#include <torch/torch.h>

namespace hdssl::nn {

/// Every 5-D parameter of `module` (and its sub-modules) re-laid out as channels-last-3d, in place: the
/// parameter objects stay the same (an optimizer built before still updates them), only their storage
/// changes. Values, shapes and everything not 5-D are untouched. Feed the model channels-last input too
/// (x.contiguous(at::MemoryFormat::ChannelsLast3d)) so the activations follow.
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters(/*recurse=*/true))
    if (p.dim() == 5) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast3d));
}

}  // namespace hdssl::nn
