// Every header with a CUDA branch (#if HDSSL_WITH_CUDA): the tensor glue that calls the kernels. Compiled
// syntax-only with HDSSL_WITH_CUDA=1 by the CTest `cuda_glue_compiles` (tests/cuda/CMakeLists.txt).
#include "hdssl/ops/augment_batch.hpp"      // the batched augmentations
#include "hdssl/ops/gather_pyramid.hpp"
#include "hdssl/ops/local_shuffle.hpp"
#include "hdssl/ops/torch_compat.hpp"
#include "hdssl/io/checkpoint.hpp"       // the CUDA generator in checkpoints
#include "hdssl/presets.hpp"
#include "hdssl/train/pretrainer.hpp"    // the trainer's CUDA step (autocast, channels-last, TF32)

// Instantiate the trainer so its CUDA branches are compiled, not just parsed.
template class hdssl::train::Pretrainer<hdssl::presets::hdssl, hdssl::augment::HdsslAugmentations>;
// And both augmentation sets, whose batched paths launch the kernels on CUDA views.
template class hdssl::augment::AugmentationSet<hdssl::augment::LocalPixelShuffle, hdssl::augment::Bezier,
                                               hdssl::augment::Inpaint, hdssl::augment::Outpaint>;
template class hdssl::augment::AugmentationSet<hdssl::augment::AxialFilter, hdssl::augment::GaussianNoise,
                                               hdssl::augment::RandomWindow>;
