#pragma once
// Downstream segmentation loss (method.md section 8): per-class sigmoid BCE + soft Dice.
#include <torch/torch.h>

#include "hdssl/core/error.hpp"

namespace hdssl::loss {

/// logits, target: (B, K, X, Y, Z) (or any (B, K, ...)), target in {0, 1} (soft values allowed).
/// Returns mean BCE-with-logits over every element (K foreground classes, no background channel).
inline torch::Tensor segmentation_bce(const torch::Tensor& logits, const torch::Tensor& target) {
  if (logits.sizes() != target.sizes() || logits.dim() < 3)
    throw DataError("segmentation_bce: logits and target must have the same (B, K, ...) sizes");
  return torch::binary_cross_entropy_with_logits(logits, target.to(logits.dtype()));
}

/// 1 - 2 sum(p g) / (sum p^2 + sum g^2 + 1) with p = sigmoid(logits), sums over space per (batch,
/// class), averaged over batch and classes.
inline torch::Tensor soft_dice_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  if (logits.sizes() != target.sizes() || logits.dim() < 3)
    throw DataError("soft_dice_loss: logits and target must have the same (B, K, ...) sizes");
  const auto p = torch::sigmoid(logits).flatten(2);
  const auto g = target.to(logits.dtype()).flatten(2);
  const auto dice = 2 * (p * g).sum(2) / ((p * p).sum(2) + (g * g).sum(2) + 1);
  return (1 - dice).mean();
}

/// BCE + soft Dice, the loss of every downstream setup.
inline torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  return segmentation_bce(logits, target) + soft_dice_loss(logits, target);
}

}  // namespace hdssl::loss
