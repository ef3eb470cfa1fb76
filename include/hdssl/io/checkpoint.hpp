#pragma once
// Full training checkpoints: model state (parameters and buffers), optimiser state, every random
// generator, the step and a record of what the file holds, so a run resumes exactly where it stopped.
// A LibTorch archive (torch::save's container) rather than safetensors, because optimiser state is nested
// and LibTorch already serialises it; exchange of weights with the PyTorch ecosystem goes through
// safetensors (weights.hpp) instead.
//
// The record (`CheckpointRecord`, stored as JSON text) says which format wrote the file, which preset and
// options built the model, the step, and any state of the caller's own (a trainer keeps its counters and
// the data pipeline's position there). It is read before a byte of the model is touched, so a caller can
// refuse a checkpoint of another preset or configuration with a message instead of a shape error.
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

#include "hdssl/config.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/io/atomic_file.hpp"

#if HDSSL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

namespace hdssl::io {

/// Written into every checkpoint; a file of another format is refused by name.
inline constexpr const char* kCheckpointFormat = "hdssl-checkpoint/2";

/// What a checkpoint holds besides the tensors.
struct CheckpointRecord {
  std::string format = kCheckpointFormat;
  std::string preset;                                   ///< e.g. "hdssl"
  nlohmann::json options = nlohmann::json::object();    ///< the options that built the model (and the run)
  int64_t step = 0;                                     ///< optimiser steps taken
  nlohmann::json state = nlohmann::json::object();      ///< the caller's own counters (data position, ...)
};

namespace detail {

inline torch::Tensor text_tensor(const std::string& s) {
  auto t = torch::empty({static_cast<int64_t>(s.size())}, torch::kUInt8);
  std::copy(s.begin(), s.end(), t.data_ptr<uint8_t>());
  return t;
}
inline std::string tensor_text(const torch::Tensor& t) {
  const auto c = t.to(torch::kCPU).to(torch::kUInt8).contiguous();
  const auto* p = c.data_ptr<uint8_t>();
  return std::string(p, p + c.numel());
}

/// The state of a generator (its mutex held while reading or writing, as ATen's own users do).
inline torch::Tensor generator_state(at::Generator generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}
inline void set_generator_state(at::Generator generator, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

inline CheckpointRecord record_from_archive(torch::serialize::InputArchive& archive, const std::string& where) {
  torch::Tensor text;
  if (!archive.try_read("record", text))
    throw IoError(where + "not an hdssl training checkpoint of format " + kCheckpointFormat + " (no record)");
  CheckpointRecord r;
  try {
    const auto j = nlohmann::json::parse(tensor_text(text));
    r.format = j.at("format").get<std::string>();
    if (r.format != kCheckpointFormat)
      throw IoError(where + "format '" + r.format + "' is not " + kCheckpointFormat);
    r.preset = j.at("preset").get<std::string>();
    r.options = j.at("options");
    r.step = j.at("step").get<int64_t>();
    r.state = j.at("state");
  } catch (const nlohmann::json::exception& e) {
    throw IoError(where + "its record is damaged: " + e.what());
  }
  return r;
}

}  // namespace detail

/// Writes model + optimiser + record + the CPU generator (and the current CUDA device's, when CUDA is in
/// use) to `path` atomically (io/atomic_file.hpp): a crash or a full disk while saving never leaves a
/// half-written checkpoint in place of a good one, and the error names the file.
inline void save_checkpoint(const std::filesystem::path& path, const torch::nn::Module& model,
                            const torch::optim::Optimizer& optimizer, const CheckpointRecord& record) {
  const std::string where = "checkpoint '" + path.string() + "': ";
  nlohmann::json j = {{"format", kCheckpointFormat},
                      {"preset", record.preset},
                      {"options", record.options},
                      {"step", record.step},
                      {"state", record.state}};
  write_atomically(
      path,
      [&](const std::filesystem::path& tmp) {
        try {
          torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
          model.save(model_archive);
          optimizer.save(optimizer_archive);
          archive.write("record", detail::text_tensor(j.dump()));
          archive.write("model", model_archive);
          archive.write("optimizer", optimizer_archive);
          archive.write("rng_cpu", detail::generator_state(at::detail::getDefaultCPUGenerator()));
#if HDSSL_WITH_CUDA
          if (torch::cuda::is_available())
            archive.write("rng_cuda", detail::generator_state(at::cuda::detail::getDefaultCUDAGenerator()));
#endif
          // LibTorch finishes the zip archive in a destructor and aborts the process if a write fails
          // there, so the sink never reports a failure to it: errors are remembered and raised afterwards.
          std::ofstream file(tmp, std::ios::binary);
          bool failed = !file;
          archive.save_to([&](const void* data, size_t n) -> size_t {
            if (!failed && !file.write(static_cast<const char*>(data), static_cast<std::streamsize>(n))) failed = true;
            return n;
          });
          file.flush();
          if (failed || !file)
            throw IoError(where + "cannot write (disk full, file size limit or no permission?): " +
                          std::strerror(errno));
        } catch (const c10::Error& e) {
          throw IoError(where + "cannot write: " + e.what_without_backtrace());
        }
      },
      where);
}

/// The record of a checkpoint alone (the whole archive is read, the model is not touched).
inline CheckpointRecord read_checkpoint_record(const std::filesystem::path& path) {
  const std::string where = "checkpoint '" + path.string() + "': ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw IoError(where + "not found or not a regular file");
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string(), torch::kCPU);
    return detail::record_from_archive(archive, where);
  } catch (const c10::Error& e) {
    throw IoError(where + "cannot read: " + e.what_without_backtrace());
  }
}

/// Restores what save_checkpoint wrote into an identically built model and optimiser, tensors placed on
/// `device`; returns the record. The generators are restored too. A missing, damaged or mismatched file
/// is an IoError naming the file (the model may then be partially overwritten: rebuild it before retrying).
inline CheckpointRecord load_checkpoint(const std::filesystem::path& path, torch::nn::Module& model,
                                        torch::optim::Optimizer& optimizer,
                                        const torch::Device& device = torch::kCPU) {
  const std::string where = "checkpoint '" + path.string() + "': ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw IoError(where + "not found or not a regular file");
  try {
    torch::serialize::InputArchive archive, model_archive, optimizer_archive;
    archive.load_from(path.string(), device);
    CheckpointRecord record = detail::record_from_archive(archive, where);
    if (!archive.try_read("model", model_archive) || !archive.try_read("optimizer", optimizer_archive))
      throw IoError(where + "not an hdssl training checkpoint (no model or optimizer record)");
    torch::Tensor rng_cpu;
    if (!archive.try_read("rng_cpu", rng_cpu)) throw IoError(where + "no rng_cpu record");
    model.load(model_archive);
    optimizer.load(optimizer_archive);
    detail::set_generator_state(at::detail::getDefaultCPUGenerator(), rng_cpu.to(torch::kCPU));
#if HDSSL_WITH_CUDA
    torch::Tensor rng_cuda;
    if (torch::cuda::is_available() && archive.try_read("rng_cuda", rng_cuda))
      detail::set_generator_state(at::cuda::detail::getDefaultCUDAGenerator(), rng_cuda.to(torch::kCPU));
#endif
    return record;
  } catch (const c10::Error& e) {
    throw IoError(where + "cannot read: " + e.what_without_backtrace());
  }
}

}  // namespace hdssl::io
