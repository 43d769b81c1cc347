#include "model/keys.h"

#include <array>

#include "model/names.h"

namespace canopy::model {
namespace {

// Splits `s` on '/' into at most N parts; returns the number of parts, or
// N + 1 when there are more.
template <size_t N>
size_t split(std::string_view s, std::array<std::string_view, N>* parts) {
  size_t n = 0;
  while (true) {
    const size_t slash = s.find('/');
    if (n == N) return N + 1;
    (*parts)[n++] = s.substr(0, slash);
    if (slash == s.npos) return n;
    s.remove_prefix(slash + 1);
  }
}

std::string join(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

}  // namespace

ParsedKey parse_key(std::string_view key) {
  std::array<std::string_view, 5> p;
  const size_t n = split(key, &p);
  ParsedKey out;
  if (n == 2 && p[0] == "t" && is_dns1123_label(p[1])) {
    out.kind = KeyKind::kTenant;
    out.tenant = p[1];
    return out;
  }
  if (n == 2 && p[0] == "tokens" && is_dns1123_label(p[1])) {
    out.kind = KeyKind::kToken;
    out.name = p[1];
    return out;
  }
  if (n == 4 && p[0] == "t" && is_dns1123_label(p[1]) && is_dns1123_label(p[3])) {
    if (p[2] == "templates") {
      out.kind = KeyKind::kTemplate;
    } else if (p[2] == "placements") {
      out.kind = KeyKind::kPlacement;
    } else if (p[2] == "overrides") {
      out.kind = KeyKind::kOverride;
    } else if (p[2] == "grants") {
      out.kind = KeyKind::kGrant;
    } else if (p[2] == "rollouts") {
      out.kind = KeyKind::kRollout;
    } else {
      return out;
    }
    out.tenant = p[1];
    out.name = p[3];
    return out;
  }
  if (p[0] != "sites" || n < 2 || !is_dns1123_label(p[1])) return out;
  if (n == 2) {
    out.kind = KeyKind::kSite;
    out.site = p[1];
    return out;
  }
  if (n == 3 && p[2] == "presence") {
    out.kind = KeyKind::kPresence;
    out.site = p[1];
    return out;
  }
  if (n == 4 && p[2] == "holds" && is_dns1123_label(p[3])) {
    out.kind = KeyKind::kHold;
    out.site = p[1];
    out.name = p[3];
    return out;
  }
  if (n == 5 && is_dns1123_label(p[3]) && is_dns1123_label(p[4])) {
    if (p[2] == "overrides") {
      out.kind = KeyKind::kLocalOverride;
    } else if (p[2] == "status") {
      out.kind = KeyKind::kStatus;
    } else if (p[2] == "releases") {
      out.kind = KeyKind::kRelease;
    } else if (p[2] == "devices") {
      out.kind = KeyKind::kDevice;
    } else if (p[2] == "reported") {
      out.kind = KeyKind::kReported;
    } else {
      return out;
    }
    out.site = p[1];
    out.tenant = p[3];
    out.name = p[4];
  }
  return out;
}

std::string site_key(std::string_view site) { return join({kSitesPrefix, site}); }
std::string template_key(std::string_view tenant, std::string_view name) {
  return join({kTenantsPrefix, tenant, "/templates/", name});
}
std::string placement_key(std::string_view tenant, std::string_view name) {
  return join({kTenantsPrefix, tenant, "/placements/", name});
}
std::string override_key(std::string_view tenant, std::string_view name) {
  return join({kTenantsPrefix, tenant, "/overrides/", name});
}
std::string tenant_key(std::string_view tenant) { return join({kTenantsPrefix, tenant}); }
std::string grant_key(std::string_view tenant, std::string_view name) {
  return join({kTenantsPrefix, tenant, "/grants/", name});
}
std::string rollout_key(std::string_view tenant, std::string_view placement) {
  return join({kTenantsPrefix, tenant, "/rollouts/", placement});
}
std::string token_key(std::string_view id) { return join({kTokensPrefix, id}); }
std::string enrollment_token_key(std::string_view id) {
  return join({kEnrollmentTokensPrefix, id});
}
std::string site_identity_key(std::string_view site) { return join({kSiteIdentitiesPrefix, site}); }
std::string pending_enrollment_key(std::string_view site) {
  return join({kPendingEnrollmentsPrefix, site});
}
std::string presence_key(std::string_view site) { return join({kSitesPrefix, site, "/presence"}); }
std::string local_override_key(std::string_view site, std::string_view tenant,
                               std::string_view template_name) {
  return join({kSitesPrefix, site, "/overrides/", tenant, "/", template_name});
}
std::string status_key(std::string_view site, std::string_view tenant,
                       std::string_view template_name) {
  return join({kSitesPrefix, site, "/status/", tenant, "/", template_name});
}
std::string release_key(std::string_view site, std::string_view tenant,
                        std::string_view template_name) {
  return join({kSitesPrefix, site, "/releases/", tenant, "/", template_name});
}
std::string hold_key(std::string_view site, std::string_view name) {
  return join({kSitesPrefix, site, "/holds/", name});
}
std::string device_key(std::string_view site, std::string_view tenant, std::string_view device) {
  return join({kSitesPrefix, site, "/devices/", tenant, "/", device});
}
std::string reported_key(std::string_view site, std::string_view tenant, std::string_view device) {
  return join({kSitesPrefix, site, "/reported/", tenant, "/", device});
}
std::string devices_prefix(std::string_view site, std::string_view tenant) {
  if (tenant.empty()) return join({kSitesPrefix, site, "/devices/"});
  return join({kSitesPrefix, site, "/devices/", tenant, "/"});
}
std::string reported_prefix(std::string_view site) {
  return join({kSitesPrefix, site, "/reported/"});
}
std::vector<std::string> site_writable_prefixes(std::string_view site) {
  if (!is_dns1123_label(site)) return {};
  return {status_prefix(site), local_overrides_prefix(site), holds_prefix(site),
          reported_prefix(site)};
}
std::string holds_prefix(std::string_view site) { return join({kSitesPrefix, site, "/holds/"}); }
std::string releases_prefix(std::string_view site) {
  return join({kSitesPrefix, site, "/releases/"});
}
std::string site_subtree(std::string_view site) { return join({kSitesPrefix, site, "/"}); }
std::string status_prefix(std::string_view site) { return join({kSitesPrefix, site, "/status/"}); }
std::string local_overrides_prefix(std::string_view site) {
  return join({kSitesPrefix, site, "/overrides/"});
}
std::string tenant_kind_prefix(std::string_view tenant, std::string_view kind) {
  return join({kTenantsPrefix, tenant, "/", kind, "s/"});
}

bool in_site_subtree(std::string_view site, std::string_view key) {
  if (!is_dns1123_label(site) || !key.starts_with(kSitesPrefix)) return false;
  key.remove_prefix(kSitesPrefix.size());
  if (!key.starts_with(site)) return false;
  key.remove_prefix(site.size());
  return key.empty() || key.front() == '/';
}

}  // namespace canopy::model
