#pragma once
// Fused positive-pair gather of every pyramid level (method.md 3), differentiable, CPU or CUDA:
//   out[n, offset_i + c] = pyramid[i][b_n, c, x_n >> i, y_n >> i, z_n >> i]
// Same function as hdssl::nn::gather_pyramid (one indexing op per level plus a concatenation), done in one
// pass over the output: one kernel launch for all levels forward, one backward.
//
// Gradients: float32 levels accumulate in place; bf16 levels accumulate in float32 and are rounded once
// (see ops/cuda/gather_pyramid.cuh for why). On CUDA the additions are atomics, so float32 sums can differ
// in the last bits from run to run; on the CPU each thread owns whole output columns and adds rows in order.
#include "hdssl/core/error.hpp"
#include "hdssl/ops/gather_checks.hpp"
#include "hdssl/ops/cpu/gather_pyramid.hpp"
#include "hdssl/ops/gather_functor.hpp"
#include "hdssl/ops/torch_compat.hpp"

#if HDSSL_WITH_CUDA
#include "hdssl/ops/cuda/launch.hpp"
#endif

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace hdssl::ops {

namespace detail {

/// Shapes, devices, dtypes and index range (the range check reads the index's min/max to the host).
inline void check_gather(const std::vector<at::Tensor>& pyramid, const at::Tensor& voxel_index,
                         IndexCheck check = IndexCheck::range) {
  check_gather_inputs(pyramid, voxel_index, check);  // shapes, device, batch, rows in range
  if (pyramid.size() > static_cast<size_t>(kMaxGatherLevels))
    throw DataError("gather_pyramid: " + std::to_string(pyramid.size()) + " pyramid levels, at most " +
                    std::to_string(kMaxGatherLevels) + " are supported");
  const auto dtype = pyramid[0].scalar_type();
  std::int64_t total = 0;
  for (size_t i = 0; i < pyramid.size(); ++i) {
    if (pyramid[i].scalar_type() != dtype)
      throw DataError("gather_pyramid: pyramid level " + std::to_string(i) + " is " +
                      std::string(c10::toString(pyramid[i].scalar_type())) + " but level 0 is " +
                      std::string(c10::toString(dtype)));
    total += pyramid[i].size(1);
  }
  const bool cuda = voxel_index.is_cuda();
  if (!(dtype == at::kFloat || dtype == at::kBFloat16 || (!cuda && dtype == at::kDouble)))
    throw DataError("gather_pyramid: pyramid dtype " + std::string(c10::toString(dtype)) +
                    " is not supported (float32 or bfloat16" + std::string(cuda ? "" : ", float64 on the CPU") + ")");
  if (total > std::numeric_limits<std::int32_t>::max())
    throw DataError("gather_pyramid: " + std::to_string(total) + " channels in all levels, too many");
  if (!cuda && !voxel_index.device().is_cpu())
    throw DataError("gather_pyramid: unsupported device " + voxel_index.device().str());
#if !HDSSL_WITH_CUDA
  if (cuda)
    throw DataError("gather_pyramid: tensors are on " + voxel_index.device().str() +
                    " but hdssl was built without CUDA support (HDSSL_WITH_CUDA=0)");
#endif
}

inline GatherIndex gather_index(const at::Tensor& idx) {
  GatherIndex g;
  g.data = compat::const_data<std::int64_t>(idx);
  g.rows = idx.size(0);
  g.s0 = idx.stride(0);
  g.s1 = idx.stride(1);
  return g;
}

/// Layout of levels (data pointers of type P) taken from `levels`.
template <typename P>
GatherLevels<P> gather_levels_of(const std::vector<at::Tensor>& levels, P (*ptr)(const at::Tensor&)) {
  GatherLevels<P> g;
  g.count = static_cast<std::int32_t>(levels.size());
  std::int32_t offset = 0;
  for (size_t i = 0; i < levels.size(); ++i) {
    const at::Tensor& t = levels[i];
    g.data[i] = ptr(t);
    g.level[i] = GatherLevelDesc{t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4),
                                 static_cast<std::int32_t>(t.size(1)), offset};
    offset += static_cast<std::int32_t>(t.size(1));
  }
  g.total = offset;
  return g;
}

/// Forward without autograd: [N, sum C_i] in the pyramid's dtype and device.
inline at::Tensor gather_pyramid_forward(const std::vector<at::Tensor>& pyramid, const at::Tensor& voxel_index) {
  const auto cv = [](const at::Tensor& t) { return compat::const_data(t); };
  const GatherLevels<const void*> levels = gather_levels_of<const void*>(pyramid, +cv);
  const GatherIndex index = gather_index(voxel_index);
  at::Tensor out = at::empty({index.rows, levels.total}, pyramid[0].options());
  if (out.numel() == 0) return out;
  const int elem = static_cast<int>(pyramid[0].element_size());
  if (voxel_index.is_cuda()) {
#if HDSSL_WITH_CUDA
    const c10::cuda::CUDAGuard guard(voxel_index.device());
    const int status = cuda::gather_forward_raw(elem, levels, index, out.data_ptr(), out.stride(0), out.stride(1),
                                                compat::current_stream(voxel_index.device()));
    HDSSL_CUDA_LAUNCH_CHECK(status);
#endif
    return out;
  }
  auto run = [&](auto tag) {
    using T = decltype(tag);
    GatherForwardFunctor<T> f;
    for (int i = 0; i < levels.count; ++i) {
      f.src.data[i] = static_cast<const T*>(levels.data[i]);
      f.src.level[i] = levels.level[i];
    }
    f.src.count = levels.count;
    f.src.total = levels.total;
    f.index = index;
    f.out = static_cast<T*>(out.data_ptr());
    f.out_s0 = out.stride(0);
    f.out_s1 = out.stride(1);
    cpu::gather_forward(f);
  };
  if (elem == 2) run(std::uint16_t{});
  else if (elem == 4) run(std::uint32_t{});
  else run(std::uint64_t{});
  return out;
}

/// Backward without autograd: one gradient per level, shaped like it (channels-last-3d levels get
/// channels-last-3d gradients), in its dtype.
inline std::vector<at::Tensor> gather_pyramid_backward(const at::Tensor& grad_out, const at::Tensor& voxel_index,
                                                       const std::vector<std::vector<std::int64_t>>& sizes,
                                                       const std::vector<bool>& channels_last,
                                                       at::ScalarType dtype) {
  // Accumulators: the gradients themselves for float32/float64, float32 buffers for bf16.
  const at::ScalarType acc_type = dtype == at::kDouble ? at::kDouble : at::kFloat;
  // (at::zeros ignores a memory format in its options; at::empty honours it.)
  std::vector<at::Tensor> acc;
  for (size_t i = 0; i < sizes.size(); ++i)
    acc.push_back(at::empty(sizes[i], grad_out.options().dtype(acc_type).memory_format(
                                          channels_last[i] ? at::MemoryFormat::ChannelsLast3d
                                                           : at::MemoryFormat::Contiguous))
                      .zero_());
  const GatherIndex index = gather_index(voxel_index);
  if (index.rows > 0 && grad_out.numel() > 0) {
    if (grad_out.is_cuda()) {
#if HDSSL_WITH_CUDA
      const c10::cuda::CUDAGuard guard(grad_out.device());
      const auto fp = [](const at::Tensor& t) { return static_cast<float*>(t.data_ptr()); };
      const GatherLevels<float*> levels = gather_levels_of<float*>(acc, +fp);
      const cuda::GradType type = dtype == at::kBFloat16 ? cuda::GradType::bfloat16 : cuda::GradType::float32;
      const int status = cuda::gather_backward_raw(type, compat::const_data(grad_out), grad_out.stride(0),
                                                   grad_out.stride(1), index, levels,
                                                   compat::current_stream(grad_out.device()));
      HDSSL_CUDA_LAUNCH_CHECK(status);
#endif
    } else {
      auto run = [&](auto grad_tag, auto acc_tag) {
        using T = decltype(grad_tag);
        using Acc = decltype(acc_tag);
        const auto ap = [](const at::Tensor& t) { return static_cast<Acc*>(t.data_ptr()); };
        GatherBackwardFunctor<T, Acc> f;
        f.grad_out = static_cast<const T*>(compat::const_data(grad_out));
        f.go_s0 = grad_out.stride(0);
        f.go_s1 = grad_out.stride(1);
        f.index = index;
        f.dst = gather_levels_of<Acc*>(acc, +ap);
        cpu::gather_backward(f);
      };
      if (dtype == at::kBFloat16) run(at::BFloat16{}, float{});
      else if (dtype == at::kDouble) run(double{}, double{});
      else run(float{}, float{});
    }
  }
  if (dtype == at::kBFloat16)
    for (auto& a : acc) a = a.to(at::kBFloat16);  // keeps the memory format (preserve_format)
  return acc;
}

}  // namespace detail

/// The autograd node of gather_pyramid: inputs (voxel_index, level 0, ..., level L-1).
class GatherPyramidFunction : public torch::autograd::Function<GatherPyramidFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& voxel_index,
                               at::TensorList pyramid) {
    std::vector<at::Tensor> levels(pyramid.begin(), pyramid.end());
    // Shapes and layouts, not the tensors: the backward needs no feature values.
    std::vector<std::int64_t> flat_sizes, layouts;
    for (const auto& l : levels) {
      for (auto s : l.sizes()) flat_sizes.push_back(s);
      layouts.push_back(!l.is_contiguous() && l.is_contiguous(at::MemoryFormat::ChannelsLast3d) ? 1 : 0);
    }
    ctx->saved_data["sizes"] = flat_sizes;
    ctx->saved_data["layouts"] = layouts;
    ctx->saved_data["dtype"] = static_cast<std::int64_t>(levels[0].scalar_type());
    ctx->save_for_backward({voxel_index});
    return detail::gather_pyramid_forward(levels, voxel_index);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor voxel_index = ctx->get_saved_variables()[0];
    const auto flat_sizes = ctx->saved_data["sizes"].toIntVector();
    const auto layouts = ctx->saved_data["layouts"].toIntVector();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    std::vector<std::vector<std::int64_t>> sizes;
    std::vector<bool> channels_last;
    for (size_t i = 0; i < layouts.size(); ++i) {
      sizes.emplace_back(flat_sizes.begin() + 5 * i, flat_sizes.begin() + 5 * (i + 1));
      channels_last.push_back(layouts[i] != 0);
    }
    at::Tensor grad = grad_outputs[0];
    if (!grad.defined()) {
      std::int64_t total = 0;
      for (const auto& s : sizes) total += s[1];
      grad = at::zeros({voxel_index.size(0), total}, voxel_index.options().dtype(dtype));
    }
    if (grad.scalar_type() != dtype) grad = grad.to(dtype);
    torch::autograd::variable_list result;
    result.emplace_back();  // voxel_index: not differentiable
    for (auto& g : detail::gather_pyramid_backward(grad, voxel_index, sizes, channels_last, dtype))
      result.push_back(std::move(g));
    return result;
  }
};

/// Differentiable fused gather: pyramid[i] (B, C_i, X_i, Y_i, Z_i), float32 or bf16 (float64 on the CPU),
/// any strides; voxel_index int64 [N, 4] = (patch, x, y, z) in level-0 coordinates, on the same device.
/// Returns [N, sum C_i]. Throws hdssl::DataError on bad shapes, dtypes, devices or (with IndexCheck::range,
/// the default) out-of-range rows; IndexCheck::shapes skips the range check and its host synchronisation.
inline at::Tensor gather_pyramid(const std::vector<at::Tensor>& pyramid, const at::Tensor& voxel_index,
                                 IndexCheck check = IndexCheck::range) {
  detail::check_gather(pyramid, voxel_index, check);
  return GatherPyramidFunction::apply(voxel_index, at::TensorList(pyramid));
}

}  // namespace hdssl::ops
