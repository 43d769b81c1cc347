// Names and key layout of the hub's documents (docs/keys.md), without the
// index: the client library checks names with them too.
#pragma once

#include <string>
#include <string_view>

namespace canopy::hub {

// True for a DNS-1123 label: 1-63 characters of [a-z0-9-], starting and ending
// with a letter or digit. Every tenant, site, template, placement and override
// name is one.
bool is_dns1123_label(std::string_view name);

// Key layout (docs/keys.md).
inline constexpr std::string_view kSitesPrefix = "sites/";
inline constexpr std::string_view kTenantsPrefix = "t/";
std::string site_key(std::string_view site);
std::string template_key(std::string_view tenant, std::string_view name);
std::string placement_key(std::string_view tenant, std::string_view name);
std::string override_key(std::string_view tenant, std::string_view name);

}  // namespace canopy::hub
