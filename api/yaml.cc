#include "api/yaml.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace canopy::api {
namespace {

using json = nlohmann::json;

// Unwinds a conversion to its entry point, which returns it as a Status.
struct YamlError {
  std::string message;
};
[[noreturn]] void throw_error(std::string message) { throw YamlError{std::move(message)}; }

bool all_of(std::string_view s, size_t from, bool (*pred)(char)) {
  if (from >= s.size()) return false;
  for (size_t i = from; i < s.size(); ++i) {
    if (!pred(s[i])) return false;
  }
  return true;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_octal(char c) { return c >= '0' && c <= '7'; }

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?  (YAML 1.2 core schema)
bool is_float(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exponent = 0;
    while (i < s.size() && is_digit(s[i])) ++i, ++exponent;
    if (exponent == 0) return false;
  }
  return i == s.size();
}

// A scalar as the YAML 1.2 core schema reads it: quoted scalars (and
// `!!str`) are strings; plain ones may be null, booleans, integers or floats.
json scalar_to_json(const YAML::Node& node, const std::string& field) {
  const std::string& s = node.Scalar();
  const std::string& tag = node.Tag();
  if (tag == "!" || tag == "tag:yaml.org,2002:str") return s;
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  const bool negative = s[0] == '-';
  const size_t sign = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (all_of(s, sign, is_digit)) {
    const char* begin = s.data() + sign;
    const char* end = s.data() + s.size();
    if (negative) {
      int64_t v = 0;
      if (std::from_chars(s.data(), end, v).ec == std::errc()) return v;
    } else {
      uint64_t v = 0;
      if (std::from_chars(begin, end, v).ec == std::errc()) {
        if (v <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v);
        return v;
      }
    }
    // Too large for 64 bits: a float, as JSON parsers would read it.
    return std::strtod(s.c_str(), nullptr);
  }
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
    const bool hex = s[1] == 'x';
    if (all_of(s, 2, hex ? is_hex : is_octal)) {
      uint64_t v = 0;
      if (std::from_chars(s.data() + 2, s.data() + s.size(), v, hex ? 16 : 8).ec == std::errc() &&
          v <= static_cast<uint64_t>(INT64_MAX)) {
        return static_cast<int64_t>(v);
      }
    }
  }
  if (is_float(s)) return std::strtod(s.c_str(), nullptr);
  static const std::vector<std::string> not_json = {".inf",  ".Inf",  ".INF",  "+.inf",
                                                    "+.Inf", "+.INF", "-.inf", "-.Inf",
                                                    "-.INF", ".nan",  ".NaN",  ".NAN"};
  if (std::find(not_json.begin(), not_json.end(), s) != not_json.end()) {
    throw_error(field + ": " + s + " has no JSON equivalent (quote it to make it a string)");
  }
  return s;
}

json convert(const YAML::Node& node, const std::string& field, int depth) {
  if (depth > kMaxYamlDepth)
    throw_error(field + ": nested deeper than " + std::to_string(kMaxYamlDepth));
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node, field);
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      size_t i = 0;
      for (const auto& item : node) {
        arr.push_back(convert(item, field + "[" + std::to_string(i++) + "]", depth + 1));
      }
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) throw_error(field + ": a mapping key is not a string");
        const std::string key = kv.first.Scalar();
        obj[key] = convert(kv.second, field.empty() ? key : field + "." + key, depth + 1);
      }
      return obj;
    }
  }
  return nullptr;
}

}  // namespace

StatusOr<json> yaml_to_json(const YAML::Node& node, const std::string& field) {
  try {
    return convert(node, field, 0);
  } catch (const YamlError& e) {
    return invalid_argument(e.message);
  }
}

StatusOr<json> parse_yaml_document(std::string_view text) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return invalid_argument("the body is not valid YAML: " + e.msg + " (line " +
                            std::to_string(e.mark.line + 1) + ")");
  }
  if (docs.size() != 1 || docs[0].IsNull()) {
    return invalid_argument("the body must hold exactly one YAML document, not " +
                            std::to_string(docs.size()));
  }
  return yaml_to_json(docs[0], "");
}

}  // namespace canopy::api
