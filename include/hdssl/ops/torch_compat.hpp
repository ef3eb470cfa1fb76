#pragma once
// The LibTorch differences hdssl's ops care about, in one place: Debian's 1.13 (CPU) and the 2.x CUDA
// LibTorch of the PyTorch wheels. Everything else in ops/ uses APIs present in both.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "hdssl/config.hpp"

#if HDSSL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#define HDSSL_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace hdssl::ops::compat {

/// Read-only element pointer: 2.1 added const_data_ptr (and 2.x may deprecate mutable access to inputs).
template <typename T>
const T* const_data(const at::Tensor& t) {
#if HDSSL_TORCH_AT_LEAST(2, 1)
  return t.const_data_ptr<T>();
#else
  return t.data_ptr<T>();
#endif
}
inline const void* const_data(const at::Tensor& t) {
#if HDSSL_TORCH_AT_LEAST(2, 1)
  return t.const_data_ptr();
#else
  return t.data_ptr();
#endif
}

/// Whether hdssl's CUDA ops are compiled in and a GPU is visible: what decides if a CUDA path can run.
inline bool cuda_ops_available() {
#if HDSSL_WITH_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

/// bf16 autocast on CUDA for the lifetime of the object (PyTorch's `torch.autocast("cuda", torch.bfloat16)`),
/// or nothing when `enabled` is false. 2.4 renamed the device-specific autocast functions.
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if HDSSL_TORCH_AT_LEAST(2, 4)
    previous_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
    at::autocast::increment_nesting();
  }
  ~CudaBf16Autocast() {
    if (!enabled_) return;
    // Leaving the outermost region frees the bf16 copies of the weights cached for this step.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if HDSSL_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, previous_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
#else
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
#endif
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
  bool enabled_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kHalf;
};

/// The CUDA settings of hdssl's training step (the reference's and PyTorch's defaults for it): TF32 in cuDNN
/// convolutions and cuBLAS matrix products, cuDNN autotuning for the static shapes of a pre-training step.
inline void use_training_step_cuda_settings() {
  at::globalContext().setAllowTF32CuDNN(true);
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setBenchmarkCuDNN(true);
}

/// The global clip of all gradients' L2 norm to `max_norm`; returns the norm before clipping (a host read).
inline double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  return torch::nn::utils::clip_grad_norm_(parameters, max_norm);
}

#if HDSSL_WITH_CUDA
/// The raw stream of the current CUDA stream of `device` (what every hdssl launch runs on).
inline void* current_stream(const at::Device& device) {
  return static_cast<void*>(at::cuda::getCurrentCUDAStream(device.index()).stream());
}
/// Turns the status a launcher returns into LibTorch's usual CUDA error (with its message and location).
#define HDSSL_CUDA_LAUNCH_CHECK(status)                  \
  do {                                                   \
    C10_CUDA_CHECK(static_cast<cudaError_t>(status));    \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                      \
  } while (0)
#endif

}  // namespace hdssl::ops::compat
