// The NCCL branch of the data-parallel layer (train/distributed.hpp): compiled only with a CUDA LibTorch,
// so compiled syntax-only here with the CUDA toolkit's nccl.h by the CTest `nccl_glue_compiles`
// (tests/cuda/CMakeLists.txt).
#include "hdssl/train/distributed.hpp"
#include "hdssl/train/gradient_reducer.hpp"

static_assert(hdssl::train::dist::kHaveNccl, "the NCCL branch is the one compiled");
