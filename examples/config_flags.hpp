#pragma once
// Command-line flags that override the keys of a JSON configuration, for every driver: `--config FILE`
// gives a JSON object, each flag given on the command line replaces one key of it, and the result goes
// through the configuration's own strict reader (so a file and a flag are checked by the same code and
// named the same way in errors). A flag's value is read with the JSON type of the key's default:
// strings as they are, numbers, true/false, X,Y,Z lists, and JSON objects written inline.
#include <hdssl/core/error.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace hdssl::cli {

class ConfigFlags {
 public:
  ConfigFlags(CLI::App& app, nlohmann::json defaults) : app_(app), defaults_(std::move(defaults)) {}

  /// Registers `flag` for configuration key `key` (which must exist in the defaults).
  void add(const std::string& flag, const std::string& key, const std::string& help) {
    if (!defaults_.contains(key)) throw ConfigError("internal: no default for configuration key '" + key + "'");
    flags_.push_back({flag, key, std::make_unique<std::string>()});
    const auto& d = defaults_.at(key);
    std::string shown = d.is_string() ? d.get<std::string>() : d.is_array() ? join(d) : d.dump();
    if (shown.empty()) shown = "none";
    app_.add_option(flag, *flags_.back().value, help)->default_str(shown)->type_name(type_name(d));
  }

  /// The configuration file's object (or {}) with every given flag applied.
  nlohmann::json merged(const std::string& config_file) const {
    nlohmann::json j = nlohmann::json::object();
    if (!config_file.empty()) {
      std::ifstream in(config_file);
      if (!in) throw IoError("config file '" + config_file + "': cannot open");
      try {
        in >> j;
      } catch (const nlohmann::json::exception& e) {
        throw ConfigError("config file '" + config_file + "': not valid JSON: " + e.what());
      }
      if (!j.is_object()) throw ConfigError("config file '" + config_file + "': must hold a JSON object of options");
    }
    for (const auto& f : flags_)
      if (app_.count(f.flag) > 0) j[f.key] = convert(f, defaults_.at(f.key));
    return j;
  }

 private:
  struct Flag {
    std::string flag, key;
    std::unique_ptr<std::string> value;
  };

  static std::string join(const nlohmann::json& a) {
    std::string s;
    for (const auto& v : a) s += (s.empty() ? "" : ",") + v.dump();
    return s;
  }
  static std::string type_name(const nlohmann::json& d) {
    if (d.is_boolean()) return "BOOL";
    if (d.is_number_integer()) return "INT";
    if (d.is_number()) return "NUM";
    if (d.is_array()) return "X,Y,Z";
    if (d.is_object()) return "JSON";
    if (d.is_null()) return "NUM";
    return "TEXT";
  }

  static nlohmann::json scalar(const Flag& f, const std::string& s, const nlohmann::json& like) {
    auto bad = [&](const std::string& what) {
      return ConfigError("option " + f.flag + ": '" + s + "' is not " + what);
    };
    if (like.is_string()) return s;
    if (like.is_boolean()) {
      if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
      if (s == "false" || s == "0" || s == "no" || s == "off") return false;
      throw bad("true or false");
    }
    if (like.is_null() && s == "null") return nullptr;
    std::istringstream in(s);
    if (like.is_number_integer()) {
      long long v;
      if (!(in >> v) || !(in >> std::ws).eof()) throw bad("an integer");
      return v;
    }
    double v;
    if (!(in >> v) || !(in >> std::ws).eof()) throw bad("a number");
    return v;
  }

  static nlohmann::json convert(const Flag& f, const nlohmann::json& like) {
    const std::string& s = *f.value;
    if (like.is_object()) {
      try {
        return nlohmann::json::parse(s);
      } catch (const nlohmann::json::exception&) {
        throw ConfigError("option " + f.flag + ": '" + s + "' is not a JSON object");
      }
    }
    if (like.is_array()) {
      nlohmann::json out = nlohmann::json::array();
      std::stringstream in(s);
      std::string item;
      const nlohmann::json element = like.empty() ? nlohmann::json(0.0) : like.at(0);
      while (std::getline(in, item, ',')) out.push_back(scalar(f, item, element));
      return out;
    }
    return scalar(f, s, like);
  }

  CLI::App& app_;
  nlohmann::json defaults_;
  std::vector<Flag> flags_;
};

}  // namespace hdssl::cli
