// The canonical JSON form of register values: exactly what nlohmann::json's
// dump() writes.
#pragma once

#include <string_view>

namespace canopy {

// True when `v` is exactly what nlohmann::json's dump() writes for a JSON
// scalar or array (the form of every register value). Checked in one pass
// without building a value; only floats and other rare shapes take a full
// parse-and-dump round trip.
bool canonical_json_value(std::string_view v);

}  // namespace canopy
