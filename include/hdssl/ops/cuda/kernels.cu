// The compiled side of hdssl's CUDA kernels: the entry points of launch.hpp, instantiating the kernel
// templates of *.cuh for the element types hdssl uses. Built by nvcc into hdssl_cuda_kernels whenever nvcc
// is found (cmake/hdsslCuda.cmake), so a kernel that stops compiling breaks the build even without a GPU.
#include "hdssl/ops/cuda/augment.cuh"
#include "hdssl/ops/cuda/gather_pyramid.cuh"
#include "hdssl/ops/cuda/launch.hpp"
#include "hdssl/ops/cuda/local_shuffle.cuh"
#include "hdssl/ops/element_bits.hpp"

#include <cuda_bf16.h>

#include <cstdint>

namespace hdssl::ops::cuda {

namespace {
template <int Size>
int shuffle_sized(const void* in, const ViewStrides& in_strides, void* out, const ViewStrides& out_strides,
                  std::int64_t views, std::int32_t nx, std::int32_t ny, std::int32_t nz, const ShuffleKeys& keys,
                  const LocalShuffleParams& params, void* workspace, cudaStream_t stream) {
  using T = element_bits_t<Size>;
  return static_cast<int>(local_shuffle<T>(static_cast<const T*>(in), in_strides, static_cast<T*>(out), out_strides,
                                           views, nx, ny, nz, keys, params, workspace, stream));
}

template <int Size>
int gather_sized(const GatherLevels<const void*>& levels, const GatherIndex& index, void* out, std::int64_t out_s0,
                 std::int64_t out_s1, cudaStream_t stream) {
  using T = element_bits_t<Size>;
  GatherForwardFunctor<T> f;
  for (int i = 0; i < kMaxGatherLevels; ++i) {
    f.src.data[i] = static_cast<const T*>(levels.data[i]);
    f.src.level[i] = levels.level[i];
  }
  f.src.count = levels.count;
  f.src.total = levels.total;
  f.index = index;
  f.out = static_cast<T*>(out);
  f.out_s0 = out_s0;
  f.out_s1 = out_s1;
  return static_cast<int>(gather_forward<T>(f, stream));
}

template <typename T>
int gather_backward_typed(const void* grad_out, std::int64_t go_s0, std::int64_t go_s1, const GatherIndex& index,
                          const GatherLevels<float*>& acc, cudaStream_t stream) {
  GatherBackwardFunctor<T, float> f;
  f.grad_out = static_cast<const T*>(grad_out);
  f.go_s0 = go_s0;
  f.go_s1 = go_s1;
  f.index = index;
  f.dst = acc;
  return static_cast<int>(gather_backward<T>(f, stream));
}
}  // namespace

int local_shuffle_raw(int elem_size, const void* in, const ViewStrides& in_strides, void* out,
                      const ViewStrides& out_strides, std::int64_t views, std::int32_t nx, std::int32_t ny,
                      std::int32_t nz, const ShuffleKeys& keys, const LocalShuffleParams& params, void* workspace,
                      void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (elem_size) {
    case 1: return shuffle_sized<1>(in, in_strides, out, out_strides, views, nx, ny, nz, keys, params, workspace, s);
    case 2: return shuffle_sized<2>(in, in_strides, out, out_strides, views, nx, ny, nz, keys, params, workspace, s);
    case 4: return shuffle_sized<4>(in, in_strides, out, out_strides, views, nx, ny, nz, keys, params, workspace, s);
    case 8: return shuffle_sized<8>(in, in_strides, out, out_strides, views, nx, ny, nz, keys, params, workspace, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

int gather_forward_raw(int elem_size, const GatherLevels<const void*>& levels, const GatherIndex& index, void* out,
                       std::int64_t out_s0, std::int64_t out_s1, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (elem_size) {
    case 2: return gather_sized<2>(levels, index, out, out_s0, out_s1, s);
    case 4: return gather_sized<4>(levels, index, out, out_s0, out_s1, s);
    case 8: return gather_sized<8>(levels, index, out, out_s0, out_s1, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

int gather_backward_raw(GradType type, const void* grad_out, std::int64_t go_s0, std::int64_t go_s1,
                        const GatherIndex& index, const GatherLevels<float*>& accumulators, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (type) {
    case GradType::float32: return gather_backward_typed<float>(grad_out, go_s0, go_s1, index, accumulators, s);
    case GradType::bfloat16:
      return gather_backward_typed<__nv_bfloat16>(grad_out, go_s0, go_s1, index, accumulators, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int augment_raw(const BezierFunctor& f, void* stream) { return static_cast<int>(for_each_index(f, static_cast<cudaStream_t>(stream))); }
int augment_raw(const NoiseBoxFunctor& f, void* stream) { return static_cast<int>(for_each_index(f, static_cast<cudaStream_t>(stream))); }
int augment_raw(const GaussianNoiseFunctor& f, void* stream) {
  return static_cast<int>(for_each_index(f, static_cast<cudaStream_t>(stream)));
}
int augment_raw(const AxialFilterFunctor& f, void* stream) {
  return static_cast<int>(for_each_index(f, static_cast<cudaStream_t>(stream)));
}
int augment_raw(const WindowFunctor& f, void* stream) { return static_cast<int>(for_each_index(f, static_cast<cudaStream_t>(stream))); }

}  // namespace hdssl::ops::cuda
