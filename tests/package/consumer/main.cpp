// Uses the installed headers end to end: writes a safetensors file and reads it back.
#include <hdssl/hdssl.hpp>

#include <cstdio>
#include <filesystem>

int second_unit_value();

int main() {
  const auto path = std::filesystem::temp_directory_path() / "hdssl_consumer.safetensors";
  hdssl::io::write_safetensors(path, {{"x", torch::arange(6, torch::kFloat32)}}, {{"from", "consumer"}});
  const auto st = hdssl::io::read_safetensors(path);
  std::filesystem::remove(path);
  const bool ok = st.at("x")[5].item<float>() == 5.0f && st.metadata.at("from") == "consumer" && second_unit_value() == 42;
  std::printf("hdssl %s consumer: %s\n", HDSSL_VERSION_STRING, ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
