#include "store/canonical_json.h"

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "store/text_scan.h"
#include "store/utf8.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace text_scan;

// A register value must be the canonical JSON (nlohmann's dump) of a scalar or
// an array: merges never parse values, so to_json() copies them verbatim.
//
// CanonicalScanner checks that form in one pass without building a value:
// no whitespace; strings with raw UTF-8 and only the escapes dump() writes
// (\" \\ \b \f \n \r \t, other control characters as \u00xx in lower case);
// integers in shortest decimal form; objects (inside arrays) with strictly
// increasing keys. What it cannot judge cheaply (floats, integers beyond 18
// digits, escaped object keys, nesting beyond kMaxFastDepth) it reports as
// kUnsure, and the caller takes the full parse-and-dump round trip.
class CanonicalScanner {
 public:
  enum Result { kOk, kBad, kUnsure };
  explicit CanonicalScanner(std::string_view v) : v_(v) {}

  Result run() {
    Result r = value(0);
    if (r == kOk && pos_ != v_.size()) return kBad;
    return r;
  }

 private:
  static constexpr size_t kMaxFastDepth = 64;

  Result value(size_t depth) {
    if (pos_ >= v_.size()) return kBad;
    switch (v_[pos_]) {
      case '"':
        return string(nullptr);
      case '[':
        return array(depth);
      case '{':
        return object(depth);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }

  Result literal(std::string_view word) {
    if (v_.substr(pos_, word.size()) != word) return kBad;
    pos_ += word.size();
    return kOk;
  }

  Result number() {
    const size_t start = pos_;
    if (v_[pos_] == '-') ++pos_;
    const size_t digits = pos_;
    while (pos_ < v_.size() && v_[pos_] >= '0' && v_[pos_] <= '9') ++pos_;
    const size_t n = pos_ - digits;
    if (n == 0) return kBad;
    if (pos_ < v_.size() && (v_[pos_] == '.' || v_[pos_] == 'e' || v_[pos_] == 'E')) {
      return kUnsure;  // a float: its shortest form is dump()'s to judge
    }
    if (v_[digits] == '0') {
      // "0" alone; "-0" dumps as "0", "01" is not JSON.
      return n == 1 && digits == start ? kOk : kBad;
    }
    return n > 18 ? kUnsure : kOk;
  }

  // A string at pos_. With `contents`, also returns its raw bytes between the
  // quotes, and kUnsure when they hold escapes (not comparable bytewise).
  Result string(std::string_view* contents) {
    const char* const d = v_.data();
    const size_t n = v_.size();
    size_t pos = pos_ + 1;  // kept in a register, stored back at the end
    const size_t start = pos;
    bool escaped = false;
    bool ascii = true;
    for (;;) {
      pos = skip_plain(d, pos, n);
      if (pos >= n) break;
      const auto c = static_cast<unsigned char>(d[pos]);
      if (c >= 0x80) {
        ascii = false;
        ++pos;
        continue;
      }
      if (c == '"') {
        const std::string_view body(d + start, pos - start);
        pos_ = pos + 1;
        if (!ascii && !valid_utf8(body)) return kBad;
        if (contents != nullptr) {
          *contents = body;
          if (escaped) return kUnsure;
        }
        return kOk;
      }
      if (c < 0x20) return kBad;
      escaped = true;  // c is a backslash
      if (pos + 1 >= n) return kBad;
      switch (d[pos + 1]) {
        case '"':
        case '\\':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          pos += 2;
          break;
        case 'u': {
          // Only control characters without a short escape, as \u00xx.
          if (pos + 6 > n || d[pos + 2] != '0' || d[pos + 3] != '0') return kBad;
          const auto hex = [](char h) -> int {
            if (h >= '0' && h <= '9') return h - '0';
            if (h >= 'a' && h <= 'f') return h - 'a' + 10;
            return -1;
          };
          const int hi = hex(d[pos + 4]), lo = hex(d[pos + 5]);
          if (hi < 0 || lo < 0 || hi > 1) return kBad;
          const int code = hi * 16 + lo;
          if (code == '\b' || code == '\f' || code == '\n' || code == '\r' || code == '\t') {
            return kBad;
          }
          pos += 6;
          break;
        }
        default:
          return kBad;
      }
    }
    return kBad;  // unterminated
  }

  Result array(size_t depth) {
    if (depth >= kMaxFastDepth) return kUnsure;
    ++pos_;
    if (pos_ < v_.size() && v_[pos_] == ']') {
      ++pos_;
      return kOk;
    }
    for (;;) {
      Result r = value(depth + 1);
      if (r != kOk) return r;
      if (pos_ >= v_.size()) return kBad;
      if (v_[pos_] == ']') {
        ++pos_;
        return kOk;
      }
      if (v_[pos_] != ',') return kBad;
      ++pos_;
    }
  }

  Result object(size_t depth) {
    if (depth >= kMaxFastDepth) return kUnsure;
    ++pos_;
    if (pos_ < v_.size() && v_[pos_] == '}') {
      ++pos_;
      return kOk;
    }
    std::string_view last;
    bool first = true;
    for (;;) {
      if (pos_ >= v_.size() || v_[pos_] != '"') return kBad;
      std::string_view key;
      Result r = string(&key);
      if (r != kOk) return r;
      // dump() writes keys in std::map order (bytes compared as unsigned
      // char, which is what string_view comparison does), each once.
      if (!first && !(last < key)) return kBad;
      first = false;
      last = key;
      if (pos_ >= v_.size() || v_[pos_] != ':') return kBad;
      ++pos_;
      r = value(depth + 1);
      if (r != kOk) return r;
      if (pos_ >= v_.size()) return kBad;
      if (v_[pos_] == '}') {
        ++pos_;
        return kOk;
      }
      if (v_[pos_] != ',') return kBad;
      ++pos_;
    }
  }

  std::string_view v_;
  size_t pos_ = 0;
};

}  // namespace

bool canonical_json_value(std::string_view v) {
  if (v.empty() || v[0] == '{') return false;
  // The common case, a string of plain ASCII bytes, in one scan.
  if (v[0] == '"' && v.size() >= 2 && skip_plain(v.data(), 1, v.size()) == v.size() - 1 &&
      v.back() == '"') {
    return true;
  }
  switch (CanonicalScanner(v).run()) {
    case CanonicalScanner::kOk:
      return true;
    case CanonicalScanner::kBad:
      return false;
    case CanonicalScanner::kUnsure:
      break;
  }
  json parsed = json::parse(v, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || parsed.is_object()) return false;
  return parsed.dump() == v;
}

}  // namespace canopy
