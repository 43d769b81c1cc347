// JSON merge patch (RFC 7386) on nlohmann::json values: the one definition
// that the store's patch writes, rendering (overrides) and the CLI share.
#pragma once

#include <nlohmann/json.hpp>

namespace canopy {

// Returns `target` with `patch` applied: a non-object patch replaces the
// target; an object patch merges key by key, a null value removing the key.
nlohmann::json apply_merge_patch(const nlohmann::json& target, const nlohmann::json& patch);

}  // namespace canopy
