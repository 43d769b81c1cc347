// Checks at the store's boundary (declared in document.h): store keys,
// deltas received from elsewhere, and documents parsed from text.
#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <string>

#include "store/canonical_json.h"
#include "store/document.h"
#include "store/document_detail.h"
#include "store/text_scan.h"
#include "store/utf8.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using document_detail::quote;
using text_scan::kHighs;
using text_scan::load8;

constexpr auto kKeyChar = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[static_cast<size_t>(c)] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
                                c == '/' || c == ':' || c == '~' || c == '@' || c == '+' ||
                                c == '=';
  }
  return t;
}();

bool key_char_ok(char c) { return kKeyChar[static_cast<unsigned char>(c)]; }

}  // namespace

Status validate_key(std::string_view key, size_t max_key_bytes) {
  if (key.empty()) return invalid_argument("key is empty");
  if (key.size() > max_key_bytes) {
    return invalid_argument("key " + quote(key.substr(0, 64)) + "... is longer than " +
                            std::to_string(max_key_bytes) + " bytes");
  }
  for (char c : key) {
    if (!key_char_ok(c)) {
      std::string shown = (c >= 0x20 && c < 0x7f)
                              ? std::string(1, c)
                              : "\\x" + std::to_string(static_cast<unsigned char>(c));
      return invalid_argument("key " + quote(key) + ": character '" + shown + "' is not allowed");
    }
  }
  if (key.front() == '/' || key.back() == '/' || key.find("//") != std::string_view::npos) {
    return invalid_argument("key " + quote(key) + ": empty path segment");
  }
  return ok_status();
}

namespace {

// The bytes of `s` ORed together, a word at a time: its high bit tells
// whether any byte is outside ASCII.
inline uint64_t or_bytes(std::string_view s) {
  uint64_t any = 0;
  size_t k = 0;
  for (; k + 8 <= s.size(); k += 8) any |= load8(s.data() + k);
  // The tail byte by byte: a memcpy of a variable length is a library call.
  for (; k < s.size(); ++k) any |= static_cast<unsigned char>(s[k]);
  return any;
}

// validate_delta in one pass for a delta that passes: true when every check
// below it holds and every path element is ASCII (which is UTF-8). False
// says only "not this way": validate_delta then runs each check in turn and
// says which one fails (or that non-ASCII names are well-formed UTF-8).
bool delta_plainly_valid(const v1::Delta& delta, const DocumentLimits& limits) {
  const std::string& key = delta.key();
  if (key.empty() || key.size() > limits.max_key_bytes) return false;
  char before = '/';  // a leading '/' is an empty segment, as "//" is
  for (const char c : key) {
    if (!key_char_ok(c) || (c == '/' && before == '/')) return false;
    before = c;
  }
  if (before == '/') return false;
  if (delta.dot().replica() == 0 || delta.dot().seq() == 0 || delta.hlc() == 0) return false;
  if (delta.ops_size() == 0) return false;
  size_t bytes = 0;
  uint64_t any = 0;
  for (const v1::FieldOp& op : delta.ops()) {
    const auto& path = op.path();
    const int depth = path.size();
    if (static_cast<size_t>(depth) > limits.max_depth) return false;
    const std::string& value = op.value();
    switch (op.kind()) {
      case v1::FieldOp::SET:
        if (depth == 0 || !canonical_json_value(value)) return false;
        bytes += value.size();
        break;
      case v1::FieldOp::REMOVE:
      case v1::FieldOp::MAKE_OBJECT:
        if (!value.empty()) return false;
        break;
      default:
        return false;
    }
    // (Through iterators: RepeatedPtrField<std::string>::Get is out of line.)
    for (auto it = path.begin(); it != path.end(); ++it) {
      any |= or_bytes(*it);
      bytes += it->size();
    }
  }
  return (any & kHighs) == 0 && bytes <= limits.max_doc_bytes;
}

}  // namespace

Status validate_delta(const v1::Delta& delta, const DocumentLimits& limits) {
  // The causal context: sorted, unique, no zero dot, within the limit (it is
  // kept with every register the delta writes).
  if (static_cast<size_t>(delta.seen_size()) > limits.max_context_entries) {
    return invalid_argument("delta for " + quote(delta.key()) + ": causal context of " +
                            std::to_string(delta.seen_size()) + " entries exceeds the limit of " +
                            std::to_string(limits.max_context_entries));
  }
  uint64_t last_replica = 0;
  for (const v1::Dot& d : delta.seen()) {
    if (d.replica() <= last_replica || d.seq() == 0) {
      return invalid_argument("delta for " + quote(delta.key()) +
                              ": causal context is not sorted by replica, or has a zero dot");
    }
    last_replica = d.replica();
  }
  if (delta_plainly_valid(delta, limits)) return ok_status();
  CANOPY_RETURN_IF_ERROR(validate_key(delta.key(), limits.max_key_bytes));
  const std::string& k = delta.key();
  if (delta.dot().replica() == 0 || delta.dot().seq() == 0) {
    return invalid_argument("delta for " + quote(k) + ": dot has a zero replica or seq");
  }
  if (delta.hlc() == 0) return invalid_argument("delta for " + quote(k) + ": zero HLC stamp");
  if (delta.ops_size() == 0) return invalid_argument("delta for " + quote(k) + ": no ops");
  size_t bytes = 0;
  for (const v1::FieldOp& op : delta.ops()) {
    if (static_cast<size_t>(op.path_size()) > limits.max_depth) {
      return invalid_argument("delta for " + quote(k) + ": path deeper than " +
                              std::to_string(limits.max_depth));
    }
    switch (op.kind()) {
      case v1::FieldOp::SET: {
        const std::string& v = op.value();
        if (op.path_size() == 0) {
          return invalid_argument("delta for " + quote(k) + ": SET at the document root");
        }
        if (!canonical_json_value(v)) {
          return invalid_argument("delta for " + quote(k) +
                                  ": SET value is not a JSON scalar or array in canonical form");
        }
        bytes += v.size();
        break;
      }
      case v1::FieldOp::REMOVE:
      case v1::FieldOp::MAKE_OBJECT:
        if (!op.value().empty()) {
          return invalid_argument("delta for " + quote(k) + ": value on a REMOVE/MAKE_OBJECT op");
        }
        break;
      default:
        return invalid_argument("delta for " + quote(k) + ": unknown op kind " +
                                std::to_string(static_cast<int>(op.kind())));
    }
    for (const std::string& p : op.path()) {
      if (!valid_utf8(p)) {
        return invalid_argument("delta for " + quote(k) + ": path element " + quote(p) +
                                " is not UTF-8");
      }
      bytes += p.size();
    }
  }
  if (bytes > limits.max_doc_bytes) {
    return invalid_argument("delta for " + quote(k) + ": " + std::to_string(bytes) +
                            " bytes exceed the document limit of " +
                            std::to_string(limits.max_doc_bytes));
  }
  return ok_status();
}

namespace {
size_t depth_of(const json& j) {
  if (!j.is_object() && !j.is_array()) return 0;
  size_t d = 0;
  for (const auto& v : j) d = std::max(d, depth_of(v));
  return d + 1;
}
}  // namespace

StatusOr<json> parse_document(std::string_view text, const DocumentLimits& limits) {
  if (text.size() > limits.max_doc_bytes) {
    return invalid_argument("document of " + std::to_string(text.size()) +
                            " bytes exceeds the limit of " + std::to_string(limits.max_doc_bytes));
  }
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return invalid_argument("document is not valid JSON");
  if (!doc.is_object()) {
    return invalid_argument(std::string("document must be a JSON object, not ") + doc.type_name());
  }
  if (depth_of(doc) > limits.max_depth) {
    return invalid_argument("document nests deeper than " + std::to_string(limits.max_depth));
  }
  return doc;
}

}  // namespace canopy
