#pragma once
// Host entry points of hdssl's CUDA kernels, callable from translation units that g++ compiles (no CUDA
// headers needed). They are defined in kernels.cu, which nvcc compiles into the hdssl_cuda_kernels library;
// the tensor glue (ops/local_shuffle.hpp, ops/gather_pyramid.hpp) calls them with the current stream.
// Each returns the cudaError_t of its launches as an int (0 = success).
#include "hdssl/ops/augment_functors.hpp"
#include "hdssl/ops/gather_functor.hpp"
#include "hdssl/ops/local_shuffle_functor.hpp"
#include "hdssl/ops/local_shuffle_tiles.hpp"

#include <cstdint>

namespace hdssl::ops::cuda {

/// Element types the gradient kernels accept (the forward kernels move bits and only need the size).
enum class GradType : int { float32 = 0, bfloat16 = 1 };

/// Local pixel shuffle of `views` views (elements of elem_size = 1, 2, 4 or 8 bytes); `workspace` is device
/// memory of ShuffleDeviceLayout::of(views, nx, ny, nz, params).bytes() bytes.
int local_shuffle_raw(int elem_size, const void* in, const ViewStrides& in_strides, void* out,
                      const ViewStrides& out_strides, std::int64_t views, std::int32_t nx, std::int32_t ny,
                      std::int32_t nz, const ShuffleKeys& keys, const LocalShuffleParams& params, void* workspace,
                      void* stream);

/// Pyramid gather forward (elements of elem_size = 2, 4 or 8 bytes).
int gather_forward_raw(int elem_size, const GatherLevels<const void*>& levels, const GatherIndex& index, void* out,
                       std::int64_t out_s0, std::int64_t out_s1, void* stream);

/// Pyramid gather backward: adds grad_out (float32 or bf16) into float32 accumulators.
int gather_backward_raw(GradType type, const void* grad_out, std::int64_t go_s0, std::int64_t go_s1,
                        const GatherIndex& index, const GatherLevels<float*>& accumulators, void* stream);

/// The augmentations of ops/augment_batch.hpp: f(i) for every i in [0, f.size()) on `stream`; the functors'
/// pointers are device memory.
int augment_raw(const BezierFunctor& f, void* stream);
int augment_raw(const NoiseBoxFunctor& f, void* stream);
int augment_raw(const GaussianNoiseFunctor& f, void* stream);
int augment_raw(const AxialFilterFunctor& f, void* stream);
int augment_raw(const WindowFunctor& f, void* stream);

}  // namespace hdssl::ops::cuda
