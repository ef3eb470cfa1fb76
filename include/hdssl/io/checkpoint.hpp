#pragma once
// Full training checkpoints: model state, optimiser state, the CPU random generator and the step, so a
// run resumes where it stopped. A LibTorch archive (torch::save's container) rather than safetensors,
// because optimiser state is nested and LibTorch already serialises it; exchange of weights with the
// PyTorch ecosystem goes through safetensors (weights.hpp) instead.
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

#include "hdssl/core/error.hpp"
#include "hdssl/io/atomic_file.hpp"

namespace hdssl::io {

/// Writes model + optimiser + CPU RNG + step to `path` atomically (io/atomic_file.hpp), so a crash while
/// saving never leaves a half-written checkpoint in place of a good one.
inline void save_checkpoint(const std::filesystem::path& path, const torch::nn::Module& model,
                            const torch::optim::Optimizer& optimizer, int64_t step) {
  const std::string where = "checkpoint '" + path.string() + "': ";
  write_atomically(
      path,
      [&](const std::filesystem::path& tmp) {
        try {
          torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
          model.save(model_archive);
          optimizer.save(optimizer_archive);
          archive.write("model", model_archive);
          archive.write("optimizer", optimizer_archive);
          archive.write("step", torch::tensor(step, torch::kInt64));
          {
            at::Generator generator = at::detail::getDefaultCPUGenerator();  // handle; mutex() is non-const
            std::lock_guard<std::mutex> lock(generator.mutex());
            archive.write("rng_cpu", generator.get_state());
          }
          archive.save_to(tmp.string());
        } catch (const c10::Error& e) {
          throw IoError(where + "cannot write: " + e.what_without_backtrace());
        }
      },
      where);
}

/// Restores what save_checkpoint wrote into an identically built model and optimiser; returns the step.
/// A missing, damaged or mismatched file is an IoError naming the file (the model may then be
/// partially overwritten: rebuild it before retrying).
inline int64_t load_checkpoint(const std::filesystem::path& path, torch::nn::Module& model,
                               torch::optim::Optimizer& optimizer) {
  const std::string where = "checkpoint '" + path.string() + "': ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw IoError(where + "not found or not a regular file");
  try {
    torch::serialize::InputArchive archive, model_archive, optimizer_archive;
    archive.load_from(path.string());
    if (!archive.try_read("model", model_archive) || !archive.try_read("optimizer", optimizer_archive))
      throw IoError(where + "not an hdssl training checkpoint (no model or optimizer record)");
    torch::Tensor step, rng;
    if (!archive.try_read("step", step) || !archive.try_read("rng_cpu", rng))
      throw IoError(where + "not an hdssl training checkpoint (no step or rng_cpu record)");
    model.load(model_archive);
    optimizer.load(optimizer_archive);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the shared generator
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
    }
    return step.item<int64_t>();
  } catch (const c10::Error& e) {
    throw IoError(where + "cannot read: " + e.what_without_backtrace());
  }
}

}  // namespace hdssl::io
