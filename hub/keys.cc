#include "hub/keys.h"

namespace canopy::hub {

bool is_dns1123_label(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : name) {
    if (!alnum(c) && c != '-') return false;
  }
  return alnum(name.front()) && alnum(name.back());
}

std::string site_key(std::string_view site) {
  return std::string(kSitesPrefix) + std::string(site);
}
std::string template_key(std::string_view tenant, std::string_view name) {
  return std::string(kTenantsPrefix) + std::string(tenant) + "/templates/" + std::string(name);
}
std::string placement_key(std::string_view tenant, std::string_view name) {
  return std::string(kTenantsPrefix) + std::string(tenant) + "/placements/" + std::string(name);
}
std::string override_key(std::string_view tenant, std::string_view name) {
  return std::string(kTenantsPrefix) + std::string(tenant) + "/overrides/" + std::string(name);
}

}  // namespace canopy::hub
