#pragma once
// Strict reading of JSON options, the one way hdssl turns a JSON object into an options struct
// (augmentations, the pair sampler, preprocessing, pre-training): every key is read with its type and
// range checked, keys nobody asked for are refused, and every error is a ConfigError that names the
// object and the key:  "<where> option '<key>': <why>".
//
//   hdssl::OptionReader r(j, "augment.bezier");
//   r.probability("p", o.p).read<std::int32_t>("points", o.points, 2, 1000).choice("mode", o.mode, {{"a", A}, {"b", B}});
//   r.finish();  // unknown keys -> ConfigError listing the known ones
#include "hdssl/core/error.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

namespace hdssl {

/// The error for option `key` of the object `where` (also for checks across options, after reading).
inline ConfigError option_error(const std::string& where, const std::string& key, const std::string& why) {
  return ConfigError(where + " option '" + key + "': " + why);
}

/// The name of `value` in a table of (name, value) pairs (what OptionReader::choice reads back).
template <typename Names, typename E>
const char* option_name(const Names& names, E value) {
  for (const auto& [name, e] : names)
    if (e == value) return name;
  return "?";
}

/// Reads the fields of one options object, range-checks them, and rejects keys it does not know.
/// Keys that are absent keep the field's current value (the default).
class OptionReader {
 public:
  OptionReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object())
      throw ConfigError(where_ + ": expected a JSON object of options, got " + std::string(j_.type_name()));
  }

  /// A number (T floating or integral) with lo <= value <= hi, or a boolean (T = bool).
  template <typename T>
  OptionReader& read(const char* key, T& field, T lo, T hi) {
    if (const auto* v = find(key)) field = value<T>(*v, key, lo, hi);
    return *this;
  }
  OptionReader& read(const char* key, bool& field) { return read<bool>(key, field, false, true); }
  /// A probability in [0, 1].
  OptionReader& probability(const char* key, double& field) { return read<double>(key, field, 0.0, 1.0); }

  /// As read(), and JSON null empties the field.
  template <typename T>
  OptionReader& read(const char* key, std::optional<T>& field, T lo, T hi) {
    if (const auto* v = find(key)) field = v->is_null() ? std::nullopt : std::optional<T>(value<T>(*v, key, lo, hi));
    return *this;
  }

  /// An array of exactly N numbers, each in [lo, hi].
  template <typename T, std::size_t N>
  OptionReader& read(const char* key, std::array<T, N>& field, T lo, T hi) {
    const auto* v = find(key);
    if (v == nullptr) return *this;
    if (!v->is_array() || v->size() != N)
      fail(key, "expected an array of " + std::to_string(N) + (std::is_integral_v<T> ? " integers" : " numbers") +
                    ", got " + v->dump());
    std::array<T, N> out{};
    for (std::size_t i = 0; i < N; ++i) out[i] = value<T>((*v)[i], key, lo, hi);
    field = out;
    return *this;
  }
  /// As above, and JSON null empties the field.
  template <typename T, std::size_t N>
  OptionReader& read(const char* key, std::optional<std::array<T, N>>& field, T lo, T hi) {
    const auto* v = find(key);
    if (v == nullptr) return *this;
    if (v->is_null()) {
      field.reset();
      return *this;
    }
    std::array<T, N> out{};
    read(key, out, lo, hi);
    field = out;
    return *this;
  }

  /// A string.
  OptionReader& read(const char* key, std::string& field) {
    if (const auto* v = find(key)) {
      if (!v->is_string()) fail(key, "expected a string, got " + v->dump());
      field = v->get<std::string>();
    }
    return *this;
  }

  /// A string naming one of `names` (pairs of name and value, e.g. an enum's: the table that to_json
  /// uses too, see option_name).
  template <typename E>
  OptionReader& choice(const char* key, E& field, std::initializer_list<std::pair<const char*, E>> names) {
    return choice<E, std::initializer_list<std::pair<const char*, E>>>(key, field, names);
  }
  template <typename E, typename Names>
  OptionReader& choice(const char* key, E& field, const Names& names) {
    std::string s;
    if (find(key) == nullptr) return *this;
    read(key, s);
    std::string list;
    for (const auto& [name, e] : names) {
      if (s == name) {
        field = e;
        return *this;
      }
      list += (list.empty() ? "" : ", ") + std::string(name);
    }
    fail(key, "unknown value '" + s + "' (known: " + list + ")");
  }

  /// Declares a key that the caller reads itself, so finish() accepts it.
  OptionReader& known(const char* key) {
    known_.insert(key);
    return *this;
  }

  /// Throws the ConfigError for option `key` (for checks the caller makes after reading).
  [[noreturn]] void fail(const std::string& key, const std::string& why) const { throw option_error(where_, key, why); }

  /// Throws ConfigError naming the first key that no read asked for, and the known ones.
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (known_.count(it.key())) continue;
      std::string allowed;
      for (const auto& k : known_) allowed += (allowed.empty() ? "" : ", ") + k;
      throw ConfigError(where_ + ": unknown option '" + it.key() + "' (known: " + allowed + ")");
    }
  }

 private:
  const nlohmann::json* find(const char* key) {
    known_.insert(key);
    const auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  template <typename T>
  T value(const nlohmann::json& v, const char* key, T lo, T hi) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) fail(key, "expected true or false, got " + v.dump());
      return v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      // Range-checked as int64 before narrowing, so a huge value cannot wrap into range.
      if (!v.is_number_integer()) fail(key, "expected an integer, got " + v.dump());
      const auto x = v.get<std::int64_t>();
      if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
        fail(key, v.dump() + " is too large");
      if (!(x >= static_cast<std::int64_t>(lo) && x <= static_cast<std::int64_t>(hi))) out_of_range(v, key, lo, hi);
      return static_cast<T>(x);
    } else {
      if (!v.is_number()) fail(key, "expected a number, got " + v.dump());
      const T x = v.get<T>();
      if (!(x >= lo && x <= hi)) out_of_range(v, key, lo, hi);
      return x;
    }
  }
  template <typename T>
  [[noreturn]] void out_of_range(const nlohmann::json& v, const char* key, T lo, T hi) const {
    fail(key, v.dump() + " is outside [" + nlohmann::json(lo).dump() + ", " + nlohmann::json(hi).dump() + "]");
  }

  const nlohmann::json& j_;
  std::string where_;
  std::set<std::string> known_;
};

}  // namespace hdssl
