#pragma once
// Umbrella header: everything hdssl offers on the host side (CUDA kernels live in ops/cuda/*.cuh).
// The data path reads top to bottom: NIfTI -> Volume -> preprocess -> pair sampler -> augmentation set
// -> backbone -> gather -> heads -> loss. tests/package/umbrella_complete.cmake checks that every header
// under include/hdssl is listed here.
#include "hdssl/config.hpp"

#include "hdssl/core/dynamic_parallel.hpp"
#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"
#include "hdssl/core/orientation.hpp"
#include "hdssl/core/rng.hpp"
#include "hdssl/core/tensor_text.hpp"
#include "hdssl/core/threads.hpp"
#include "hdssl/core/volume.hpp"

#include "hdssl/io/atomic_file.hpp"
#include "hdssl/io/checkpoint.hpp"
#include "hdssl/io/nifti.hpp"
#include "hdssl/io/safetensors.hpp"
#include "hdssl/io/weights.hpp"

#include "hdssl/preprocess/body_mask.hpp"
#include "hdssl/preprocess/cache.hpp"
#include "hdssl/preprocess/content_hash.hpp"
#include "hdssl/preprocess/crop_pad.hpp"
#include "hdssl/preprocess/intensity.hpp"
#include "hdssl/preprocess/nifti_files.hpp"
#include "hdssl/preprocess/pipeline.hpp"
#include "hdssl/preprocess/resample.hpp"

#include "hdssl/sampling/pair_sampler.hpp"

#include "hdssl/augment/augmentation_set.hpp"
#include "hdssl/augment/bezier.hpp"
#include "hdssl/augment/inpaint.hpp"
#include "hdssl/augment/local_shuffle.hpp"
#include "hdssl/augment/policy.hpp"
#include "hdssl/augment/presets.hpp"
#include "hdssl/augment/vox2vec.hpp"

#include "hdssl/nn/blocks.hpp"
#include "hdssl/nn/fpn.hpp"
#include "hdssl/nn/gather.hpp"
#include "hdssl/nn/heads.hpp"
#include "hdssl/nn/memory_format.hpp"
#include "hdssl/nn/policies.hpp"
#include "hdssl/nn/pretrain_model.hpp"
#include "hdssl/nn/projection.hpp"

#include "hdssl/loss/infonce.hpp"
#include "hdssl/loss/reconstruction.hpp"
#include "hdssl/loss/segmentation.hpp"

#include "hdssl/ops/cpu/gather_pyramid.hpp"
#include "hdssl/ops/cpu/local_shuffle.hpp"
#include "hdssl/ops/cuda/launch.hpp"
#include "hdssl/ops/element_bits.hpp"
#include "hdssl/ops/gather_functor.hpp"
#include "hdssl/ops/gather_pyramid.hpp"
#include "hdssl/ops/local_shuffle.hpp"
#include "hdssl/ops/local_shuffle_functor.hpp"
#include "hdssl/ops/local_shuffle_tiles.hpp"
#include "hdssl/ops/torch_compat.hpp"

#include "hdssl/presets.hpp"
