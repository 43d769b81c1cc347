#include "sync/subjects.h"

#include <algorithm>
#include <string>

namespace canopy::sync {
namespace {

constexpr size_t kMaxNodeNameLength = 63;

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string describe_char(char c) {
  if (c >= 0x21 && c < 0x7f) return std::string("'") + c + "'";
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  return std::string("'\\x") + kHex[u >> 4] + kHex[u & 0xf] + "'";
}

// Quotes a name for an error message, cut short so that a hostile name does
// not flood the log.
std::string quoted(std::string_view name) {
  constexpr size_t kShown = 80;
  std::string out = "\"";
  for (char c : name.substr(0, kShown)) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += c;
    } else {
      std::string d = describe_char(c);
      out += d.substr(1, d.size() - 2);
    }
  }
  if (name.size() > kShown) out += "...";
  return out + "\"";
}

}  // namespace

Status validate_node_name(std::string_view name) {
  if (name.empty()) return invalid_argument("node name is empty");
  if (name.size() > kMaxNodeNameLength) {
    return invalid_argument(
        "node name " + quoted(name) + " is not a DNS-1123 label: " + std::to_string(name.size()) +
        " characters, at most " + std::to_string(kMaxNodeNameLength) + " allowed");
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!is_lower_alnum(c) && c != '-') {
      return invalid_argument("node name " + quoted(name) + " is not a DNS-1123 label: character " +
                              describe_char(c) + " at " + std::to_string(i) +
                              " is not allowed (only a-z, 0-9 and '-')");
    }
  }
  if (!is_lower_alnum(name.front()) || !is_lower_alnum(name.back())) {
    return invalid_argument("node name " + quoted(name) +
                            " is not a DNS-1123 label: it must start and end with a-z or 0-9");
  }
  return ok_status();
}

StatusOr<std::vector<std::string>> parse_node_list(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string_view name = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (Status st = validate_node_name(name); !st.ok()) return st;
    if (std::find(out.begin(), out.end(), name) != out.end()) {
      return invalid_argument("node " + quoted(name) + " is named twice");
    }
    out.emplace_back(name);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::vector<std::string> preferred_order(std::string_view child, std::vector<std::string> hubs) {
  if (hubs.size() < 2) return hubs;
  uint64_t h = 14695981039346656037ull;
  for (char c : child) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  std::rotate(hubs.begin(), hubs.begin() + static_cast<std::ptrdiff_t>(h % hubs.size()),
              hubs.end());
  return hubs;
}

}  // namespace canopy::sync
