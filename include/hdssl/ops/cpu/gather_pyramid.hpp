#pragma once
// CPU loops of the pyramid gather: the functors of gather_functor.hpp under at::parallel_for.
#include "hdssl/ops/gather_functor.hpp"

#include <ATen/Parallel.h>

#include <cstdint>

namespace hdssl::ops::cpu {

/// out[n, :] for every row n (parallel over rows).
template <typename T>
void gather_forward(const GatherForwardFunctor<T>& f) {
  const std::int32_t total = f.src.total;
  at::parallel_for(0, f.index.rows, 64, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = b; n < e; ++n)
      for (std::int32_t j = 0; j < total; ++j) f(n, j);
  });
}

/// Scatter-add of grad_out into the levels. Parallel over ranges of output columns: a column (level,
/// channel) owns its gradient slots, so threads never share a slot and rows are added in order
/// (deterministic). Rows outside, columns inside: each row's slice of grad_out is read contiguously.
template <typename T, typename Acc>
void gather_backward(const GatherBackwardFunctor<T, Acc>& f) {
  auto add = [](Acc* slot, Acc value) { *slot += value; };
  at::parallel_for(0, f.dst.total, 32, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = 0; n < f.index.rows; ++n)
      for (std::int64_t j = b; j < e; ++j) f(n, static_cast<std::int32_t>(j), add);
  });
}

}  // namespace hdssl::ops::cpu
