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


/// Limits the ATen parallel loops *started from the calling thread* to `n` threads, leaving the
/// process-wide intra-op setting of every other thread alone. A background worker (e.g. a data loader
/// thread) calls it first, so its loops do not each open a team as wide as the machine beside the main
/// thread's: the loader and the training step then share one thread budget. With ATen's OpenMP backend
/// (Debian's LibTorch) the limit is the calling thread's OpenMP team size; ATen's lazy initialisation
/// runs first so it cannot overwrite the limit later. Other backends run every loop on the one shared
/// intra-op pool, which is already bounded, and need nothing.
inline void limit_this_thread(int n) {
  at::internal::lazy_init_num_threads();
#ifdef _OPENMP
  omp_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

}  // namespace hdssl
