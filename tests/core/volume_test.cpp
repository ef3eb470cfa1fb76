#include <doctest/doctest.h>

#include <hdssl/core/threads.hpp>
#include <hdssl/core/volume.hpp>

TEST_CASE("Volume spacing is the norm of each affine column") {
  hdssl::Volume v;
  v.data = torch::zeros({4, 5, 6});
  v.affine << 0, -2, 0, 10,  //
      1.5, 0, 0, -3,         //
      0, 0, 3, 7,            //
      0, 0, 0, 1;
  auto s = v.spacing();
  CHECK(s[0] == doctest::Approx(1.5));
  CHECK(s[1] == doctest::Approx(2.0));
  CHECK(s[2] == doctest::Approx(3.0));
  CHECK(v.shape() == std::array<int64_t, 3>{{4, 5, 6}});
}

TEST_CASE("set_threads uses every core by default and honours an explicit count") {
  CHECK(hdssl::set_threads(1) == 1);
  CHECK(hdssl::set_threads(0) == static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}
