#pragma once
// LibTorch's intra-op pool starts with one thread on some builds (Debian's 1.13 among them);
// hdssl's drivers use every core unless told otherwise.
#include <torch/torch.h>

#include <thread>

namespace hdssl {

/// Sets LibTorch's intra-op threads: n > 0 exactly, n <= 0 the machine's hardware threads.
/// Returns the number now in use.
inline int set_threads(int n = 0) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

}  // namespace hdssl
