// Names: the syntax of every name in the catalogue, in one place.
//
// Tenant, site, template, placement and override names are DNS-1123 labels
// (they are parts of store keys, NATS subjects and file names). Kubernetes
// object names are DNS-1123 subdomains. Label keys and values follow
// Kubernetes' syntax for labels, since selectors are Kubernetes'.
#pragma once

#include <string>
#include <string_view>

namespace canopy::model {

// 1-63 characters of [a-z0-9-], starting and ending with a letter or digit.
bool is_dns1123_label(std::string_view s);
// 1-253 characters, dot-separated DNS-1123 labels.
bool is_dns1123_subdomain(std::string_view s);
// A label key: an optional DNS-1123 subdomain prefix and '/', then a name of
// 1-63 characters of [A-Za-z0-9-_.] starting and ending with a letter or digit.
bool is_label_key(std::string_view s);
// A label value: empty, or 1-63 characters as a label key's name part.
bool is_label_value(std::string_view s);

// The rules, for messages.
inline constexpr std::string_view kLabelRule =
    "a DNS-1123 label (1-63 characters of [a-z0-9-], starting and ending with a letter or digit)";
inline constexpr std::string_view kSubdomainRule =
    "a DNS-1123 subdomain (up to 253 characters of [a-z0-9-.], dot-separated parts starting "
    "and ending with a letter or digit)";
inline constexpr std::string_view kLabelKeyRule =
    "a label key (an optional DNS-1123 subdomain and '/', then 1-63 characters of "
    "[A-Za-z0-9-_.] starting and ending with a letter or digit)";
inline constexpr std::string_view kLabelValueRule =
    "a label value (empty, or 1-63 characters of [A-Za-z0-9-_.] starting and ending with a "
    "letter or digit)";

// `s` as a JSON string literal, for messages (control characters escaped,
// invalid UTF-8 replaced).
std::string quote(std::string_view s);

}  // namespace canopy::model
