#pragma once
// Work items handed out one at a time to LibTorch's intra-op threads.
//
// at::parallel_for splits a range into one fixed chunk per thread. For a handful of expensive
// items of uneven cost (views of which some are not shuffled, pairs with short overlaps), or on a
// machine shared with other processes, the slowest chunk then sets the time. Here every thread
// takes the next unclaimed item from an atomic counter, so a stalled or unlucky thread holds up at
// most one item. Which thread runs an item never matters for results in hdssl: items draw from
// their own random streams.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace hdssl {

/// Calls f(i) for every i in [0, n), in parallel, each item claimed dynamically. Exceptions
/// propagate (the first one thrown); items not yet claimed are then skipped.
template <typename F>
void parallel_for_each_item(std::int64_t n, const F& f) {
  if (n <= 0) return;
  const std::int64_t workers = std::min<std::int64_t>(n, std::max(1, at::get_num_threads()));
  if (workers <= 1 || at::in_parallel_region()) {
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<std::int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](std::int64_t, std::int64_t) {
    for (std::int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      try {
        f(i);
      } catch (...) {
        next.store(n);  // stop handing out work; at::parallel_for rethrows
        throw;
      }
    }
  });
}

}  // namespace hdssl
