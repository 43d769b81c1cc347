// UTF-8 well-formedness, as document names must have it.
#pragma once

#include <string_view>

namespace canopy {

// Well-formed UTF-8 (Unicode 15, table 3-7): what nlohmann::json accepts when it
// prints a string. Names that are not would make to_json() throw.
bool valid_utf8(std::string_view s);

}  // namespace canopy
