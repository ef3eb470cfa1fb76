// Strict JSON options (core/json_options.hpp): what is read, what is kept, and every refusal's message.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "hdssl/core/error.hpp"
#include "hdssl/core/json_options.hpp"

namespace {
enum class Mode { fast, exact };
struct Knobs {
  double p = 0.5;
  std::int32_t count = 3;
  bool flag = false;
  std::optional<double> limit = 1.0;
  std::array<std::int64_t, 3> size{{1, 2, 3}};
  std::optional<std::array<double, 2>> range;
  std::string name = "a";
  Mode mode = Mode::fast;
};
Knobs read_knobs(const nlohmann::json& j) {
  Knobs k;
  hdssl::OptionReader r(j, "test.knobs");
  r.probability("p", k.p)
      .read<std::int32_t>("count", k.count, 1, 10)
      .read("flag", k.flag)
      .read<double>("limit", k.limit, 0.0, 5.0)
      .read<std::int64_t, 3>("size", k.size, 1, 100)
      .read<double, 2>("range", k.range, -1.0, 1.0)
      .read("name", k.name)
      .choice("mode", k.mode, {{"fast", Mode::fast}, {"exact", Mode::exact}});
  r.finish();
  return k;
}
std::string error_of(const nlohmann::json& j) {
  try {
    read_knobs(j);
  } catch (const hdssl::ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("OptionReader: present keys are read, absent keys keep their defaults, null empties optionals") {
  const Knobs d = read_knobs(nlohmann::json::object());
  CHECK(d.p == 0.5);
  CHECK(d.count == 3);
  CHECK(d.limit == 1.0);
  CHECK(d.size == std::array<std::int64_t, 3>{{1, 2, 3}});
  CHECK(!d.range);
  const Knobs k = read_knobs(nlohmann::json::parse(
      R"({"p": 1, "count": 10, "flag": true, "limit": null, "size": [4, 5, 100], "range": [-1, 0.5],
          "name": "b", "mode": "exact"})"));
  CHECK(k.p == 1.0);
  CHECK(k.count == 10);
  CHECK(k.flag);
  CHECK(!k.limit);
  CHECK(k.size == std::array<std::int64_t, 3>{{4, 5, 100}});
  REQUIRE(k.range);
  CHECK((*k.range)[0] == -1.0);
  CHECK((*k.range)[1] == 0.5);
  CHECK(k.name == "b");
  CHECK(k.mode == Mode::exact);
}

TEST_CASE("OptionReader: every bad value is a ConfigError naming the object, the key and the reason") {
  const auto has = [](const std::string& msg, const char* part) { return msg.find(part) != std::string::npos; };
  CHECK(has(error_of({{"p", 1.5}}), "test.knobs option 'p': 1.5 is outside [0.0, 1.0]"));
  CHECK(has(error_of({{"count", 2.5}}), "option 'count': expected an integer"));
  // A value far outside int32 is refused, not wrapped into range.
  CHECK(has(error_of({{"count", 4294967298LL}}), "option 'count': 4294967298 is outside [1, 10]"));
  CHECK(has(error_of({{"count", 18446744073709551615ULL}}), "option 'count'"));
  CHECK(has(error_of({{"flag", 1}}), "option 'flag': expected true or false"));
  CHECK(has(error_of({{"limit", "high"}}), "option 'limit': expected a number"));
  CHECK(has(error_of({{"size", {1, 2}}}), "option 'size': expected an array of 3 integers"));
  CHECK(has(error_of({{"size", {1, 2, 101}}}), "option 'size': 101 is outside [1, 100]"));
  CHECK(has(error_of({{"range", {0, 2}}}), "option 'range': 2 is outside"));
  CHECK(has(error_of({{"name", 3}}), "option 'name': expected a string"));
  CHECK(has(error_of({{"mode", "slow"}}), "option 'mode': unknown value 'slow' (known: fast, exact)"));
  CHECK(has(error_of({{"coutn", 2}}), "test.knobs: unknown option 'coutn' (known: "));
  CHECK(has(error_of(nlohmann::json::array()), "test.knobs: expected a JSON object"));
  CHECK(error_of({{"count", 2}}).empty());
}
