#pragma once
// Data-parallel training over c10d, the engine under PyTorch's DistributedDataParallel (LibTorch's C++
// frontend has no DDP module): Gloo on the CPU, NCCL with a CUDA LibTorch.
//
// Who takes part comes from the launcher's environment, as torchrun sets it:
//   RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT   (absent: a world of one)
// Rank 0 hosts the rendezvous store (c10d's TCPStore) at MASTER_ADDR:MASTER_PORT, unless torchrun's agent
// already hosts it there (TORCHELASTIC_USE_AGENT_STORE=True), in which case every rank is a client.
//
// A world of one creates no store and no backend: every collective returns at once, so single-process
// training pays nothing. Every collective waits at most the configured timeout; a failed or timed-out one
// throws DistributedError naming this rank and the operation, so a rank whose peer died stops with a
// message instead of hanging.
//
// The c10d API moved between LibTorch 1.13 (backends derive from ProcessGroup) and 2.x (from Backend);
// `BackendBase` below is the one place that knows.
#include <torch/torch.h>
#include <torch/version.h>

// Set by hdssl's CMake (hdssl::c10d) where the LibTorch in use ships the backend's headers.
#ifndef HDSSL_WITH_GLOO
#define HDSSL_WITH_GLOO 0
#endif
#ifndef HDSSL_WITH_NCCL
#define HDSSL_WITH_NCCL 0
#endif

#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if HDSSL_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if HDSSL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hdssl/core/error.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/train/distributed_options.hpp"

namespace hdssl::train::dist {

/// Whether this build has each c10d backend (set by hdssl's CMake from what the LibTorch in use ships).
inline constexpr bool kHaveGloo = HDSSL_WITH_GLOO != 0;
inline constexpr bool kHaveNccl = HDSSL_WITH_NCCL != 0;

/// The launcher's description of this process (torchrun's variables).
struct LaunchEnvironment {
  int rank = 0, world_size = 1, local_rank = 0;
  int local_ranks = 1;       ///< LOCAL_WORLD_SIZE: ranks on this machine (they share its cores)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  ///< torchrun's agent hosts the store at MASTER_ADDR:MASTER_PORT
  int restart_count = 0;     ///< TORCHELASTIC_RESTART_COUNT: the agent store's keys are per attempt

  static LaunchEnvironment from_environment() {
    LaunchEnvironment e;
    e.world_size = read_int("WORLD_SIZE", 1, 1, 1 << 20);
    const bool has_rank = std::getenv("RANK") != nullptr;
    if (e.world_size > 1 && !has_rank)
      throw ConfigError("environment: WORLD_SIZE=" + std::to_string(e.world_size) +
                        " but RANK is not set (start the ranks with torchrun or --nproc)");
    e.rank = read_int("RANK", 0, 0, e.world_size - 1);
    e.local_rank = read_int("LOCAL_RANK", e.rank, 0, 1 << 20);
    e.local_ranks = read_int("LOCAL_WORLD_SIZE", 1, 1, 1 << 20);
    if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
    e.master_port = read_int("MASTER_PORT", 29500, 1, 65535);
    if (const char* s = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = std::string(s) == "True" || std::string(s) == "1";
    e.restart_count = read_int("TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20);
    return e;
  }

  int local_world_size() const { return local_ranks; }

  /// The environment of local rank `r` of `n` ranks started by hdssl's own launcher (train/launch.hpp).
  static std::map<std::string, std::string> for_local_rank(int r, int n, int port) {
    return {{"RANK", std::to_string(r)},          {"LOCAL_RANK", std::to_string(r)},
            {"WORLD_SIZE", std::to_string(n)},    {"LOCAL_WORLD_SIZE", std::to_string(n)},
            {"MASTER_ADDR", "127.0.0.1"},        {"MASTER_PORT", std::to_string(port)}};
  }

 private:
  static int read_int(const char* name, int fallback, int lo, int hi) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    errno = 0;
    const long x = std::strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || x < lo || x > hi)
      throw ConfigError(std::string("environment variable ") + name + "='" + v + "': expected an integer in [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return static_cast<int>(x);
  }
};

/// A driver's --device auto|cpu|cuda for this process: GPU LOCAL_RANK when cuda is asked for or, under auto,
/// usable (a CUDA device visible and hdssl's CUDA ops built in); the CPU otherwise. `option` names the
/// setting in the ConfigError when cuda is asked for and not usable, or LOCAL_RANK has no GPU.
inline torch::Device resolve_device(const std::string& device, const LaunchEnvironment& env, const std::string& option) {
  const bool visible = torch::cuda::is_available();
  const bool usable = visible && ops::compat::cuda_ops_available();
  if (device == "cuda" && !usable)
    throw ConfigError(option + ": cuda was asked for, but " +
                      std::string(visible ? "hdssl was built without its CUDA ops" : "no CUDA device is visible to this LibTorch"));
  if (!(device == "cuda" || (device == "auto" && usable))) return torch::Device(torch::kCPU);
  if (env.local_rank >= static_cast<int>(torch::cuda::device_count()))
    throw ConfigError("LOCAL_RANK " + std::to_string(env.local_rank) + ": this machine has only " +
                      std::to_string(torch::cuda::device_count()) + " CUDA devices (one rank per GPU)");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
}

#if TORCH_VERSION_MAJOR >= 2
using BackendBase = ::c10d::Backend;
#elif HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
using BackendBase = ::c10d::ProcessGroup;
#endif

/// The ranks of one training run and the collectives the trainers need. Movable, not copyable.
class ProcessGroup {
 public:
  /// A world of one.
  ProcessGroup() = default;

  /// Joins the ranks the environment describes. `device` is the device the model lives on (it picks the
  /// backend under "auto": nccl for CUDA where this build has it, else gloo). `even_alone`: a world of one
  /// still gets a store and a backend (to measure the collective path itself).
  static ProcessGroup join(const LaunchEnvironment& env, const DistributedOptions& o, const torch::Device& device,
                           bool even_alone = false) {
    ProcessGroup g;
    g.rank_ = env.rank;
    g.size_ = env.world_size;
    g.timeout_ = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
    if (env.world_size == 1 && !even_alone) return g;
    std::string backend = o.backend;
    if (backend == "auto") backend = device.is_cuda() && kHaveNccl ? "nccl" : "gloo";
    if (backend == "nccl" && !device.is_cuda())
      throw ConfigError("option 'backend': nccl reduces CUDA tensors, but this run is on " + device.str() +
                        " (use --backend gloo or --device cuda)");
    g.backend_name_ = backend;
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
    g.connect(env, backend, device);
#else
    throw ConfigError("WORLD_SIZE=" + std::to_string(env.world_size) +
                      ": this build of hdssl has no c10d backend (its LibTorch ships neither Gloo nor NCCL headers); "
                      "rebuild against a LibTorch with c10d, or run one process");
#endif
    return g;
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_main() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }
  /// Whether collectives go through a backend (a world of one has none, unless joined `even_alone`).
  bool has_backend() const {
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
    return static_cast<bool>(backend_);
#else
    return false;
#endif
  }
  const std::string& backend_name() const { return backend_name_; }
  /// "rank 1 of 4": how this process names itself in messages.
  std::string who() const { return "rank " + std::to_string(rank_) + " of " + std::to_string(size_); }

  /// An all-reduce in flight; wait() returns once its result may be used (or throws DistributedError):
  /// with Gloo when it has completed, with NCCL once the current CUDA stream waits for it (the host goes
  /// on; a host tensor staged through the GPU is copied back, which waits).
  class Pending {
   public:
    Pending() = default;
    void wait() {
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
      if (!work_) return;
      auto w = std::move(work_);
      group_->guarded(what_, [&] {
        group_->wait_for(*w);
        if (staged_.defined()) target_.copy_(staged_);
      });
#endif
    }

   private:
    friend class ProcessGroup;
    const ProcessGroup* group_ = nullptr;
    std::string what_;
    torch::Tensor staged_, target_;  ///< a host tensor's copy on the GPU (NCCL) and the host tensor
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
    c10::intrusive_ptr<::c10d::Work> work_;
#endif
  };

  /// Starts an in-place sum of `t` over the ranks (a contiguous tensor).
  Pending all_reduce_sum_async(torch::Tensor t, const std::string& what) const {
    return start_all_reduce(std::move(t), /*max=*/false, what);
  }

  /// In-place sum of `t` over the ranks, blocking.
  void all_reduce_sum(torch::Tensor t, const std::string& what) const { all_reduce_sum_async(std::move(t), what).wait(); }

  /// In-place element-wise maximum of `t` over the ranks, blocking.
  void all_reduce_max(torch::Tensor t, const std::string& what) const {
    start_all_reduce(std::move(t), /*max=*/true, what).wait();
  }

  /// Copies rank 0's values of `tensors` into every rank's, in place (one flattened message per dtype).
  void broadcast_from_main(const std::vector<torch::Tensor>& tensors, const std::string& what) const {
    if (!distributed() || tensors.empty()) return;
    std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;  // (dtype, device) -> tensors
    for (const auto& t : tensors)
      if (t.defined() && t.numel() > 0) groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
    for (auto& [key, ts] : groups) {
      std::vector<torch::Tensor> flat_parts;
      for (const auto& t : ts) flat_parts.push_back(t.detach().reshape({-1}));
      torch::Tensor flat = torch::cat(flat_parts);
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
      guarded(what, [&] {
        std::vector<at::Tensor> v{flat};
        ::c10d::BroadcastOptions opts;
        opts.rootRank = 0;
        wait_for(*backend_->broadcast(v, opts));
      });
#endif
      torch::NoGradGuard no_grad;
      int64_t at = 0;
      for (auto& t : ts) {
        t.copy_(flat.narrow(0, at, t.numel()).view_as(t));
        at += t.numel();
      }
    }
  }

  /// The smallest and largest of `value` over the ranks (two numbers that agree when the ranks do).
  std::pair<int64_t, int64_t> min_max(int64_t value, const std::string& what) const {
    if (!distributed()) return {value, value};
    auto t = torch::tensor({value, -value}, torch::kInt64);
    all_reduce_max(t, what);
    return {-t[1].item<int64_t>(), t[0].item<int64_t>()};
  }

  /// Throws DistributedError unless every rank holds the same `value` (what: what the value is).
  void require_agreement(int64_t value, const std::string& what) const {
    const auto [lo, hi] = min_max(value, "comparing " + what);
    if (lo != hi)
      throw DistributedError(who() + ": the ranks disagree on " + what + " (this rank " + std::to_string(value) +
                             ", over all ranks " + std::to_string(lo) + " .. " + std::to_string(hi) + ")");
  }

  /// Every rank waits here until all arrive.
  void barrier(const std::string& what) const { all_reduce_sum(torch::zeros({1}), what); }

 private:
  /// Starts an in-place sum (or maximum) of `t` over the ranks; a host tensor goes through the GPU with NCCL.
  Pending start_all_reduce(torch::Tensor t, bool max, const std::string& what) const {
    Pending p;
    p.group_ = this;
    p.what_ = what;
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
    if (!backend_) return p;
    if (stages_host_tensors(t)) p.target_ = t, p.staged_ = t.to(device_), t = p.staged_;
    guarded(what, [&] {
      std::vector<at::Tensor> ts{std::move(t)};
      ::c10d::AllreduceOptions opts;
      if (max) opts.reduceOp = ::c10d::ReduceOp::MAX;
      p.work_ = backend_->allreduce(ts, opts);
    });
#else
    (void)t, (void)max;
#endif
    return p;
  }

#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
  /// NCCL's wait() makes the current stream wait for the collective (its watchdog enforces the timeout);
  /// given a timeout it would block the host until the collective is done, after every backward. Gloo's
  /// waits on the host, with the timeout.
  void wait_for(::c10d::Work& w) const {
    if (backend_name_ == "nccl") w.wait();
    else w.wait(timeout_);
  }
  /// NCCL reduces CUDA tensors only: the host tensors of the bookkeeping collectives (losses, agreement
  /// checks, barriers) go through the group's GPU.
  bool stages_host_tensors(const torch::Tensor& t) const { return backend_name_ == "nccl" && !t.is_cuda(); }
#endif

  template <class F>
  void guarded(const std::string& what, F&& f) const {
    try {
      f();
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      std::string m = e.what();
      if (const auto nl = m.find("\nException raised from"); nl != std::string::npos) m.resize(nl);
      throw DistributedError(who() + ": " + what + " failed (" + m + "); another rank has stopped (see its own "
                             "output) or did not answer within " + std::to_string(timeout_.count() / 1000) +
                             " s (--dist-timeout-s); this rank stops too");
    }
  }

#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
  void connect(const LaunchEnvironment& env, const std::string& backend, const torch::Device& device) {
    guarded("rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port), [&] {
      ::c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(env.master_port);
      so.isServer = env.rank == 0 && !env.agent_store;
      // No waiting for every worker inside the store's constructor (LibTorch 1.13's count of arrived
      // workers can miss one and then waits forever): Gloo's rendezvous waits for each rank's address under
      // the same timeout anyway.
      so.waitWorkers = false;
      so.timeout = timeout_;
      c10::intrusive_ptr<::c10d::Store> store = c10::make_intrusive<::c10d::TCPStore>(env.master_addr, so);
      if (env.agent_store)
        store = c10::make_intrusive<::c10d::PrefixStore>("/worker/attempt_" + std::to_string(env.restart_count), store);
      store = c10::make_intrusive<::c10d::PrefixStore>("hdssl/", store);
      if (backend == "gloo") {
#if HDSSL_WITH_GLOO
        auto opts = ::c10d::ProcessGroupGloo::Options::create(timeout_);
        const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
        const bool local = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
        opts->devices.push_back(ifname && *ifname ? ::c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                : local        ? ::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                               : ::c10d::ProcessGroupGloo::createDefaultDevice());
        backend_ = c10::make_intrusive<::c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
#else
        throw ConfigError("option 'backend': this build of hdssl has no Gloo (its LibTorch ships no gloo headers)");
#endif
      } else {
#if HDSSL_WITH_NCCL
        // A timed-out NCCL collective must fail, not hang: LibTorch's watchdog aborts it with this set.
        setenv("NCCL_ASYNC_ERROR_HANDLING", "1", 0);
        setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", 0);
        device_ = device;
        auto opts = ::c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout_;
        backend_ = c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
#else
        (void)device;
        throw ConfigError("option 'backend': this build of hdssl has no NCCL (build against a CUDA LibTorch with "
                          "NCCL's nccl.h visible)");
#endif
      }
    });
  }
#endif

  int rank_ = 0, size_ = 1;
  std::string backend_name_ = "none";
  std::chrono::milliseconds timeout_{1800 * 1000};
  torch::Device device_ = torch::kCPU;  ///< NCCL: this rank's GPU
#if HDSSL_WITH_GLOO || HDSSL_WITH_NCCL
  c10::intrusive_ptr<BackendBase> backend_;
#endif
};

/// A 62-bit digest of the bytes of `tensors` (CPU copies): equal on two ranks iff (with overwhelming
/// probability) the tensors are bitwise equal. Cheap enough to compare replicas at every checkpoint.
inline int64_t bytes_digest(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& t0 : tensors) {
    if (!t0.defined()) continue;
    const torch::Tensor t = t0.detach().to(torch::kCPU).contiguous();
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {  // FNV-1a over 8-byte words, then the tail bytes
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 1099511628211ull;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  return static_cast<int64_t>(h >> 2);
}

}  // namespace hdssl::train::dist
