// Keys: the store's key layout (docs/keys.md), built and parsed in one place.
//
//   sites/<site>                                 site record
//   sites/<site>/overrides/<tenant>/<template>   local override (written at the site)
//   sites/<site>/status/<tenant>/<template>      status (written at the site)
//   sites/<site>/releases/<tenant>/<template>    rollout release (written by the hub)
//   sites/<site>/presence                        the site's session with its regional
//                                                hub (written by that hub)
//   sites/<site>/holds/<hold>                    a hold on rollouts to the site
//                                                (written at the site)
//   sites/<site>/devices/<tenant>/<device>       a device of the site's bus
//                                                (written by the hub's API)
//   sites/<site>/reported/<tenant>/<device>      a device's reported twin
//                                                (written at the site)
//   t/<tenant>/templates/<template>              template (a Kubernetes manifest)
//   t/<tenant>/placements/<placement>            placement
//   t/<tenant>/overrides/<override>              hub override
//   t/<tenant>/rollouts/<placement>              a placement's rollout progress
//                                                (written by the hub, kept there)
//   t/<tenant>                                   tenant record
//   t/<tenant>/grants/<grant>                    grant of sites to the tenant
//   tokens/<id>                                  API token (hub only)
//   enrollment/tokens/<id>                       one-time bootstrap token of a
//                                                site's enrollment (hub only)
//   enrollment/sites/<site>                      a site's enrolled identity:
//                                                NATS user, certificate,
//                                                revocation (hub only)
//
// Every name is a DNS-1123 label (names.h). parse_key accepts exactly these
// shapes with valid names; anything else is kOther, which no rule of the
// catalogue reads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace canopy::model {

inline constexpr std::string_view kSitesPrefix = "sites/";
inline constexpr std::string_view kTenantsPrefix = "t/";
inline constexpr std::string_view kTokensPrefix = "tokens/";
// Hub-only: no site's scope and no regional hub's scope holds these keys
// (kOther for parse_key, which no scope rule reads).
inline constexpr std::string_view kEnrollmentPrefix = "enrollment/";
inline constexpr std::string_view kEnrollmentTokensPrefix = "enrollment/tokens/";
inline constexpr std::string_view kSiteIdentitiesPrefix = "enrollment/sites/";
inline constexpr std::string_view kPendingEnrollmentsPrefix = "enrollment/pending/";

enum class KeyKind {
  kOther,
  kSite,
  kLocalOverride,
  kStatus,
  kRelease,
  kPresence,
  kHold,
  kTemplate,
  kPlacement,
  kOverride,
  kTenant,
  kGrant,
  kToken,
  kRollout,
  kDevice,
  kReported,
};

struct ParsedKey {
  KeyKind kind = KeyKind::kOther;
  // kSite, kLocalOverride, kStatus, kRelease, kPresence, kHold, kDevice, kReported
  std::string_view site;
  std::string_view tenant;  // all but kSite and kToken
  // The object's own name; the template's for kLocalOverride, kStatus; the
  // token's id for kToken; the hold's for kHold; the device's id for kDevice
  // and kReported; empty for kSite and kTenant.
  std::string_view name;
};

// Views into `key`, which must outlive the result.
ParsedKey parse_key(std::string_view key);

std::string site_key(std::string_view site);
std::string template_key(std::string_view tenant, std::string_view name);
std::string placement_key(std::string_view tenant, std::string_view name);
std::string override_key(std::string_view tenant, std::string_view name);
std::string tenant_key(std::string_view tenant);
std::string grant_key(std::string_view tenant, std::string_view name);
std::string rollout_key(std::string_view tenant, std::string_view placement);
std::string token_key(std::string_view id);
std::string enrollment_token_key(std::string_view id);
std::string site_identity_key(std::string_view site);
std::string pending_enrollment_key(std::string_view site);
std::string local_override_key(std::string_view site, std::string_view tenant,
                               std::string_view template_name);
std::string status_key(std::string_view site, std::string_view tenant,
                       std::string_view template_name);
std::string release_key(std::string_view site, std::string_view tenant,
                        std::string_view template_name);
std::string presence_key(std::string_view site);
std::string hold_key(std::string_view site, std::string_view name);
std::string device_key(std::string_view site, std::string_view tenant, std::string_view device);
std::string reported_key(std::string_view site, std::string_view tenant, std::string_view device);

// `sites/<site>/`: the subtree a site writes (and always holds).
std::string site_subtree(std::string_view site);
std::string status_prefix(std::string_view site);
std::string local_overrides_prefix(std::string_view site);
std::string releases_prefix(std::string_view site);
std::string holds_prefix(std::string_view site);
// `sites/<site>/devices/` and, with a tenant, `sites/<site>/devices/<tenant>/`.
std::string devices_prefix(std::string_view site, std::string_view tenant = {});
std::string reported_prefix(std::string_view site);

// The prefixes under which a site's spoke may write (and nothing else):
// status, local overrides, holds and its devices' reported twins. The hub's
// sync refuses a site's write elsewhere.
std::vector<std::string> site_writable_prefixes(std::string_view site);
// `t/<tenant>/<kind>s/` for kind "template", "placement", "override", "grant"
// or "rollout".
std::string tenant_kind_prefix(std::string_view tenant, std::string_view kind);

// True when `key` is `sites/<site>` or under `sites/<site>/`.
bool in_site_subtree(std::string_view site, std::string_view key);

}  // namespace canopy::model
