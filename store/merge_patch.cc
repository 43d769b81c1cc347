#include "store/merge_patch.h"

namespace canopy {

nlohmann::json apply_merge_patch(const nlohmann::json& target, const nlohmann::json& patch) {
  if (!patch.is_object()) return patch;
  nlohmann::json result = target.is_object() ? target : nlohmann::json::object();
  for (const auto& [k, v] : patch.items()) {
    if (v.is_null()) {
      result.erase(k);
    } else {
      auto it = result.find(k);
      result[k] = apply_merge_patch(it == result.end() ? nlohmann::json() : *it, v);
    }
  }
  return result;
}

}  // namespace canopy
