// Word-at-a-time and SSE2 scans of bytes, shared by the UTF-8 check, the
// canonical JSON check and key and delta validation. Internal to store/.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace canopy::text_scan {

// Word-at-a-time tests of 8 bytes (exact for "any byte ...?").
constexpr uint64_t kOnes = ~uint64_t{0} / 255;
constexpr uint64_t kHighs = kOnes * 0x80;
inline uint64_t load8(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline bool any_zero(uint64_t w) { return ((w - kOnes) & ~w & kHighs) != 0; }
inline bool any_byte(uint64_t w, unsigned char c) { return any_zero(w ^ (kOnes * c)); }
inline bool any_below(uint64_t w, unsigned char n) { return ((w - kOnes * n) & ~w & kHighs) != 0; }

// Bytes a JSON string holds as they are: printable ASCII but '"' and '\\'.
constexpr auto kPlainByte = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[static_cast<size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

// The first position at or after `pos` (or `n`) of a byte that a JSON string
// does not hold as it is: a quote, a backslash, a control character or a
// byte of a multibyte UTF-8 sequence. Sixteen bytes at a time where SSE2 is
// there, eight otherwise.
inline size_t skip_plain(const char* d, size_t pos, size_t n) {
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  while (pos + 16 <= n) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + pos));
    // Signed compare: bytes from 0x80 up are negative, below 0x20 too.
    const __m128i stop =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                     _mm_cmplt_epi8(x, space));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(stop));
    if (mask != 0) return pos + static_cast<size_t>(__builtin_ctz(mask));
    pos += 16;
  }
#endif
  while (pos + 8 <= n) {
    const uint64_t w = load8(d + pos);
    if ((w & kHighs) != 0 || any_below(w, 0x20) || any_byte(w, '"') || any_byte(w, '\\')) break;
    pos += 8;
  }
  while (pos < n && kPlainByte[static_cast<unsigned char>(d[pos])]) ++pos;
  return pos;
}

}  // namespace canopy::text_scan
