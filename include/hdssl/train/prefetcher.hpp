#pragma once
// A background pipeline that prepares items 0, 1, 2, ... ahead of a consumer and hands them over in
// order: worker threads claim indices, build item i with make(i, item), and park it until the consumer
// asks for it; at most `depth` items are claimed beyond the one the consumer waits for (a bounded queue).
//
// Items must be a function of their index alone (hdssl batches are: every random choice comes from
// streams keyed by (seed, batch)), so the consumer sees the same sequence whatever the thread count or
// timing, and a run restarted at index s sees exactly what the uninterrupted run saw from s on.
// Each worker runs its ATen loops on its own thread only (hdssl::limit_this_thread(1)), so `threads`
// workers cost `threads` cores beside the consumer's intra-op pool. threads = 0 builds each item in the
// consumer's thread when asked for, with the whole pool (no overlap, no extra threads).
// An exception in make() is rethrown to the consumer when it reaches that index.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/core/threads.hpp"

namespace hdssl::train {

template <class Item>
class Prefetcher {
 public:
  using Make = std::function<void(int64_t index, Item& out)>;

  /// Items first .. end-1; `depth` >= 1 items may be ready or in the making ahead of the consumer.
  Prefetcher(Make make, int threads, int64_t depth, int64_t first, int64_t end)
      : make_(std::move(make)), depth_(std::max<int64_t>(1, depth)), next_claim_(first), next_take_(first), end_(end) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  /// The next item in order; `waited` receives the seconds spent blocked on it (or building it, with no
  /// workers). Throws what make() threw for that index, or DataError past the end.
  Item next(double* waited = nullptr) {
    const auto t0 = std::chrono::steady_clock::now();
    auto done = [&] {
      if (waited) *waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    if (next_take_ >= end_) throw DataError("prefetcher: no item past the end (" + std::to_string(end_) + ")");
    if (workers_.empty()) {
      Item item;
      make_(next_take_++, item);
      done();
      return item;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t want = next_take_;
    cv_.wait(lock, [&] { return ready_.count(want) || failed_.count(want); });
    if (failed_.count(want)) {
      const auto e = failed_.at(want);
      done();
      std::rethrow_exception(e);
    }
    Item item = std::move(ready_.at(want));
    ready_.erase(want);
    ++next_take_;
    lock.unlock();
    cv_.notify_all();
    done();
    return item;
  }

 private:
  void work() {
    hdssl::limit_this_thread(1);
    for (;;) {
      int64_t index;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || next_claim_ >= end_ || next_claim_ < next_take_ + depth_; });
        if (stopping_ || next_claim_ >= end_) return;
        index = next_claim_++;
      }
      Item item;
      std::exception_ptr error;
      try {
        make_(index, item);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error) failed_.emplace(index, error);
        else ready_.emplace(index, std::move(item));
      }
      cv_.notify_all();
    }
  }

  Make make_;
  int64_t depth_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int64_t next_claim_, next_take_, end_;
  bool stopping_ = false;
  std::map<int64_t, Item> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
  std::vector<std::thread> workers_;
};

}  // namespace hdssl::train
