// Field checks shared by the files that parse the catalogue's documents
// (documents.cc, identity_documents.cc). Private to model/: include nowhere
// else.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy::model::fields {

using json = nlohmann::json;

// The field `name` of `doc`, nullptr when absent or null.
const json* field(const json& doc, std::string_view name);
Status require_object(const json& doc, std::string_view what);
// Refuses any non-null field not in `allowed`, naming those that are.
Status only_fields(const json& doc, std::initializer_list<std::string_view> allowed);
// A map of label keys to label values (`f` names it in errors).
Status check_labels(const json& m, const std::string& f);
// Milliseconds since 1970 (absent: 0).
StatusOr<uint64_t> millis_field(const json& doc, std::string_view name);
// true or false (absent: false).
StatusOr<bool> bool_field(const json& doc, std::string_view name);
// 64 lower-case hex digits (a SHA-256).
bool is_hex_digest(std::string_view s);

}  // namespace canopy::model::fields
