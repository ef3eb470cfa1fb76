#pragma once
// How tensors are named in error messages, one format everywhere: shapes as "[4, 1, 3, 3, 3]" (PyTorch's).
#include <torch/torch.h>

#include <string>

namespace hdssl {

/// "[d0, d1, ...]" for a defined tensor, "undefined" otherwise.
inline std::string shape_string(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

}  // namespace hdssl
