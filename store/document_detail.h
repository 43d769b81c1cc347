// Helpers shared by the files that implement Document (document.cc,
// document_json.cc, document_proto.cc, document_validate.cc): the stamps of a
// serialized node, child-name prefixes and quoting for messages and JSON.
// Internal to store/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "canopy/v1/store.pb.h"
#include "store/document.h"

namespace canopy::document_detail {

inline Stamp reg_stamp(const v1::NodeState& s) { return Stamp{s.reg_hlc(), s.reg_replica()}; }
inline Stamp obj_stamp(const v1::NodeState& s) { return Stamp{s.obj_hlc(), s.obj_replica()}; }

// Quotes `s` for a message; bytes that are not UTF-8 are replaced, not thrown on.
inline std::string quote(std::string_view s) {
  using json = nlohmann::json;
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// The first 8 bytes of `s` as a big-endian number, zero-padded: comparing two
// of these orders the names as bytewise comparison does, unless they are equal.
inline uint64_t name_prefix(std::string_view s) {
  unsigned char b[8] = {};
  std::memcpy(b, s.data(), std::min<size_t>(s.size(), 8));
  uint64_t p = 0;
  for (unsigned char c : b) p = (p << 8) | c;
  return p;
}

}  // namespace canopy::document_detail
