// A second translation unit including every header: duplicate non-inline definitions fail the link.
#include <hdssl/hdssl.hpp>

// nifticlib's generically named helper macros stay inside hdssl: these ordinary names must compile.
#if defined(swap_2) || defined(swap_4) || defined(ASSIF) || defined(LSB_FIRST) || defined(MSB_FIRST) || defined(REVERSE_ORDER)
#error "a nifticlib helper macro leaked out of <hdssl/hdssl.hpp>"
#endif
namespace consumer {
inline int swap_2(int x) { return x; }
constexpr int LSB_FIRST = 1;
}  // namespace consumer

int second_unit_value() {
  if (consumer::swap_2(consumer::LSB_FIRST) != 1) return 0;
  hdssl::Volume v;
  v.data = torch::zeros({2, 2, 2});
  return v.shape()[0] == 2 ? 42 : 0;
}
