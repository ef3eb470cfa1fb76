#pragma once
// Umbrella header: everything hdssl offers on the host side (CUDA kernels live in ops/cuda/*.cuh).
// tests/package/umbrella_complete.cmake checks that every header under include/hdssl is listed here.
#include "hdssl/config.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/threads.hpp"
#include "hdssl/core/volume.hpp"
#include "hdssl/io/safetensors.hpp"
