// Compiled (syntax only, no LibTorch) by the model_policy_* CTest entries: each HDSSL_MISUSE_* case
// must fail to compile with the static_assert message that tells the user how to fix it, and the
// file without any case must compile, so the failures are due to the misuse alone.
#include "hdssl/presets.hpp"

using namespace hdssl::policy;

#if defined(HDSSL_MISUSE_BALANCING_WIDTH_ZERO)
using Bad = ModelPolicy<Pyramid<5, 32>, Balanced<0>, InfoNCE>;
#elif defined(HDSSL_MISUSE_RECONSTRUCTION_WITHOUT_HEAD)
using Bad = ModelPolicy<Pyramid<5, 32>, Balanced<32>, InfoNCEPlusReconstruction, NoReconstructionHead>;
#elif defined(HDSSL_MISUSE_HEAD_WITHOUT_RECONSTRUCTION)
using Bad = ModelPolicy<Pyramid<5, 32>, Balanced<32>, InfoNCE, WithReconstructionHead>;
#elif defined(HDSSL_MISUSE_ONE_LEVEL)
using Bad = ModelPolicy<Pyramid<1, 32>, NoBalancing, InfoNCE>;
#elif defined(HDSSL_MISUSE_NINE_LEVELS)
using Bad = ModelPolicy<Pyramid<9, 8>, Balanced<8>, InfoNCE>;
#elif defined(HDSSL_MISUSE_ARGUMENT_ORDER)
using Bad = ModelPolicy<Balanced<32>, Pyramid<5, 32>, InfoNCE>;
#else
using Bad = hdssl::presets::hdssl;
static_assert(hdssl::presets::hdssl::embedding_dim == 160, "hdssl embeds voxels in 5 x 32 channels");
static_assert(hdssl::presets::vox2vec::embedding_dim == 1008, "vox2vec embeds voxels in 16+32+...+512 channels");
static_assert(hdssl::presets::hdssl::reconstruction && !hdssl::presets::vox2vec::reconstruction, "loss terms");
#endif

int main() { return Bad::embedding_dim > 0 ? 0 : 1; }
