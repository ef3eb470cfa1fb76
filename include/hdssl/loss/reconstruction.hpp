#pragma once
// Restorative term of the hybrid loss (method.md section 4).
#include <torch/torch.h>

#include "hdssl/core/error.hpp"

namespace hdssl::loss {

/// Mean squared error of one view's reconstruction against its un-augmented crop.
inline torch::Tensor reconstruction_mse(const torch::Tensor& prediction, const torch::Tensor& target) {
  if (prediction.sizes() != target.sizes())
    throw DataError("reconstruction_mse: prediction and target (the un-augmented crop) differ in size");
  return torch::mse_loss(prediction, target);
}

/// L_mse = (MSE_view1 + MSE_view2) / 2.
inline torch::Tensor reconstruction_mse(const torch::Tensor& prediction1, const torch::Tensor& target1,
                                        const torch::Tensor& prediction2, const torch::Tensor& target2) {
  return (reconstruction_mse(prediction1, target1) + reconstruction_mse(prediction2, target2)) / 2;
}

}  // namespace hdssl::loss
