// The Catalog API's objects without a server: their kinds, their store keys
// (docs/keys.md), the checks a Put makes, and the wording of messages about
// them. Pure functions, no store and no network: the hub's CatalogService and
// the client library (kubectl-canopy checks every document before it sends
// anything) both use them, so the two cannot disagree.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "canopy/v1/hub.pb.h"
#include "store/document.h"
#include "store/status.h"

namespace canopy::api {

// List and GetStatus page sizes.
inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 1000;

// Object kinds.
inline constexpr std::string_view kTemplate = "template";
inline constexpr std::string_view kPlacement = "placement";
inline constexpr std::string_view kOverride = "override";
inline constexpr std::string_view kSite = "site";
inline constexpr std::string_view kGrant = "grant";
inline constexpr std::string_view kTenantKind = "tenant";
// A device of a site's bus: named by (tenant, site, name), stored at
// sites/<site>/devices/<tenant>/<name>, so it is in exactly that site's scope.
inline constexpr std::string_view kDevice = "device";

// Whether objects of `kind` belong to no tenant (sites and tenants).
bool is_fleet_kind(std::string_view kind);

// The store key of an object, or INVALID_ARGUMENT naming the bad field
// (`field_prefix` is prepended to field names, e.g. "object."). `site` is
// required for a device and must be empty for the other kinds.
StatusOr<std::string> object_key(std::string_view kind, std::string_view tenant,
                                 std::string_view name, std::string_view field_prefix = "",
                                 std::string_view site = "");

// Checks `object.json` for the object's kind and returns the document to
// store. The kind and name must already be valid (object_key). When
// `canonical` is given, it is set to the document's canonical text (its
// dump(), which the checks compute anyway).
StatusOr<nlohmann::json> validate_object(const v1::Object& object, const DocumentLimits& limits,
                                         std::string* canonical = nullptr);

// A token's record as REST and the CLI print it (never its secret).
nlohmann::json token_json(const v1::TokenInfo& token);

// The placement document with its rollout paused (or resumed), for REST's
// `:pause`/`:resume` and `kubectl canopy rollout pause|resume`, which write it
// back at the version read. FAILED_PRECONDITION when the placement has no
// rollout policy (nothing to pause: its sites apply every revision at once).
StatusOr<nlohmann::json> with_rollout_paused(const nlohmann::json& placement, bool paused);

// --- Wording shared by the service's messages.

// `s` as a JSON string literal.
std::string quote(std::string_view s);
// `<kind> "<name>"`, the subject of every message about an object.
std::string subject(std::string_view kind, std::string_view name);
// INVALID_ARGUMENT unless `value` is a DNS-1123 label (`field` names it).
Status check_label(std::string_view field, std::string_view value);
// The store key prefix of the objects of `kind` (of `tenant`; of `site` for
// devices).
std::string prefix_of(std::string_view kind, std::string_view tenant, std::string_view site = "");
// Sets the object's kind, tenant, name (and site, when not empty).
void name_object(std::string_view kind, std::string_view tenant, std::string_view name,
                 v1::Object* out, std::string_view site = "");
// `<kind> "<name>" [of tenant "<tenant>"] [at site "<site>"] not found`.
std::string not_found_message(std::string_view kind, std::string_view tenant, std::string_view name,
                              std::string_view site = "");

}  // namespace canopy::api
