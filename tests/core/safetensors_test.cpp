#include <doctest/doctest.h>

#include <hdssl/io/safetensors.hpp>

#include <fstream>

#include "../test_support.hpp"

namespace {

// Builds a safetensors file byte by byte, independently of the writer under test.
void write_raw(const std::filesystem::path& p, const std::string& header, const std::string& data,
               uint64_t declared_len = UINT64_MAX) {
  std::ofstream out(p, std::ios::binary);
  uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  for (int i = 0; i < 8; ++i, n >>= 8) out.put(static_cast<char>(n & 0xff));
  out << header << data;
}

std::string f32_bytes(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) s.append(reinterpret_cast<const char*>(&f), 4);
  return s;
}

void check_refused(const std::filesystem::path& p, const std::string& reason_part) {
  try {
    hdssl::io::read_safetensors(p);
    FAIL("damaged file accepted: " << p);
  } catch (const hdssl::IoError& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(p.string()) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(reason_part) != std::string::npos, msg);
  }
}

}  // namespace

TEST_CASE("safetensors: a hand-built file reads back with its values, shape and metadata") {
  hdssl::test::TempDir dir;
  const auto p = dir / "hand.safetensors";
  write_raw(p,
            R"({"__metadata__":{"k":"v"},"b":{"dtype":"I64","shape":[1],"data_offsets":[24,32]},)"
            R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
            f32_bytes({1, 2, 3, 4, 5, -6.5f}) + std::string("\x07\x00\x00\x00\x00\x00\x00\x00", 8));
  auto st = hdssl::io::read_safetensors(p);
  REQUIRE(st.tensors.size() == 2);
  CHECK(st.tensors[0].first == "a");  // file order
  CHECK(st.metadata.at("k") == "v");
  const auto a = st.at("a");
  CHECK(a.sizes().vec() == std::vector<int64_t>{2, 3});
  CHECK(a[1][2].item<float>() == -6.5f);
  CHECK(a[0][1].item<float>() == 2.0f);
  CHECK(st.at("b").item<int64_t>() == 7);
  CHECK_THROWS_AS(st.at("missing"), hdssl::IoError);
}

TEST_CASE("safetensors: every supported dtype round-trips bit-exactly, metadata too") {
  hdssl::test::TempDir dir;
  const auto p = dir / "rt.safetensors";
  torch::manual_seed(3);
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"f64", torch::randn({3, 4}, torch::kFloat64)},
      {"f32", torch::randn({2, 3, 4})},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000, 1000, {7}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {7}, torch::kInt32)},
      {"i16", torch::randint(-1000, 1000, {7}, torch::kInt16)},
      {"i8", torch::randint(-100, 100, {7}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {7}, torch::kUInt8)},
      {"bool", torch::rand({6}) > 0.5},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::arange(12, torch::kFloat32).view({3, 4}).t()}};
  hdssl::io::write_safetensors(p, ts, {{"base_channels", "8"}});
  auto st = hdssl::io::read_safetensors(p);
  REQUIRE(st.tensors.size() == ts.size());
  for (const auto& kv : ts) {
    const auto& got = st.at(kv.first);
    CHECK_MESSAGE((got.scalar_type() == kv.second.scalar_type()), kv.first);
    CHECK_MESSAGE((got.sizes() == kv.second.sizes()), kv.first);
    CHECK_MESSAGE(torch::equal(got, kv.second), kv.first);
  }
  CHECK(st.metadata.at("base_channels") == "8");
  // The header is padded to 8 bytes, as the format asks.
  std::ifstream in(p, std::ios::binary);
  unsigned char b[8];
  in.read(reinterpret_cast<char*>(b), 8);
  CHECK(b[0] % 8 == 0);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) (void)e, ++files;
  CHECK(files == 1);
}

TEST_CASE("safetensors: the reference fixture reads with its documented shapes") {
  const auto p = hdssl::test::fixtures_dir() / "reference_fpn_b8_s4.safetensors";
  REQUIRE_MESSAGE(std::filesystem::exists(p), "fixture missing: " << p);
  auto st = hdssl::io::read_safetensors(p);
  CHECK(st.at("input").sizes().vec() == std::vector<int64_t>{1, 1, 48, 40, 16});
  CHECK((st.at("voxel_indices").scalar_type() == torch::kInt64));
  CHECK(st.metadata.at("base_channels") == "8");
  CHECK(st.metadata.at("num_scales") == "4");
  CHECK(st.at("backbone.first_conv.weight").sizes().vec() == std::vector<int64_t>{8, 1, 3, 3, 3});
}

TEST_CASE("safetensors: damaged files are refused with the file name and the reason") {
  hdssl::test::TempDir dir;
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string good_data = f32_bytes({1, 2});
  struct Case {
    const char* name;
    std::string header, data;
    uint64_t declared;
    const char* reason;
  };
  const Case cases[] = {
      {"truncated_data", good_header, good_data.substr(0, 7), UINT64_MAX, "outside"},
      {"header_len_lies", good_header, good_data, 1ull << 40, "header length"},
      {"header_len_zero", good_header, good_data, 0, "header length"},
      {"not_json", "{not json at all", "", UINT64_MAX, "JSON"},
      {"not_object", "[1,2]", "", UINT64_MAX, "not a JSON object"},
      {"bad_dtype", R"({"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})", good_data, UINT64_MAX, "dtype"},
      {"size_mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", good_data, UINT64_MAX, "need"},
      {"negative_shape", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", good_data, UINT64_MAX, "shape"},
      {"huge_shape", R"({"a":{"dtype":"F32","shape":[4000000000,4000000000],"data_offsets":[0,8]}})", good_data, UINT64_MAX, "shape"},
      {"offsets_reversed", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", good_data, UINT64_MAX, "outside"},
      {"missing_field", R"({"a":{"dtype":"F32","shape":[2]}})", good_data, UINT64_MAX, "data_offsets"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", good_data, UINT64_MAX, "overlap"},
      {"bad_bool", R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x07", 2), UINT64_MAX, "BOOL"},
      {"bad_metadata", R"({"__metadata__":{"k":3}})", "", UINT64_MAX, "__metadata__"},
  };
  for (const auto& c : cases) {
    const auto p = dir / (std::string(c.name) + ".safetensors");
    write_raw(p, c.header, c.data, c.declared);
    check_refused(p, c.reason);
  }
  // Shorter than a length prefix, and a file that does not exist.
  const auto tiny = dir / "tiny.safetensors";
  std::ofstream(tiny, std::ios::binary) << "abc";
  check_refused(tiny, "too short");
  check_refused(dir / "absent.safetensors", "not found");
}
