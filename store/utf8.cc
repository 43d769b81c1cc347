#include "store/utf8.h"

#include <cstdint>
#include <cstring>

#include "store/text_scan.h"

namespace canopy {

using namespace text_scan;

bool valid_utf8(std::string_view s) {
  {
    // Most names are ASCII: a word at a time, the tail as one more word.
    size_t k = 0;
    uint64_t any = 0;
    for (; k + 8 <= s.size(); k += 8) any |= load8(s.data() + k);
    if (k < s.size()) {
      uint64_t w = 0;
      std::memcpy(&w, s.data() + k, s.size() - k);
      any |= w;
    }
    if ((any & kHighs) == 0) return true;
  }
  size_t i = 0;
  while (i < s.size()) {
    if (i + 8 <= s.size() && (load8(s.data() + i) & kHighs) == 0) {
      i += 8;  // eight ASCII bytes
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < lo || b > hi) return false;
      lo = 0x80;
      hi = 0xbf;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace canopy
