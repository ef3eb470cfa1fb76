// A second translation unit including every header: duplicate non-inline definitions fail the link.
#include <hdssl/hdssl.hpp>

int second_unit_value() {
  hdssl::Volume v;
  v.data = torch::zeros({2, 2, 2});
  return v.shape()[0] == 2 ? 42 : 0;
}
