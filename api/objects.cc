#include "api/objects.h"

#include <utility>

#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

// --- Document checks: the model's, with the object named first.

Status named(const std::string& what, const Status& st) {
  if (st.ok()) return st;
  return Status(st.code(), what + ": " + st.message());
}

Status check_site(json* doc, std::string_view name, const std::string& what) {
  CANOPY_RETURN_IF_ERROR(named(what, model::parse_site(name, *doc).status()));
  if (!doc->contains("name")) (*doc)["name"] = std::string(name);
  return ok_status();
}

}  // namespace

StatusOr<json> with_rollout_paused(const json& placement, bool paused) {
  auto parsed = model::parse_placement(placement);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->rollout.enabled()) {
    return failed_precondition(
        std::string(
            "the placement has no rollout policy (rollout.maxUnavailable or waves): its sites "
            "apply every revision at once, there is nothing to ") +
        (paused ? "pause" : "resume"));
  }
  json out = placement;
  out["rollout"]["paused"] = paused;
  return out;
}

json token_json(const v1::TokenInfo& t) {
  return {{"id", t.id()},
          {"role", t.role()},
          {"tenant", t.tenant()},
          {"createdAtMs", t.created_at_ms()},
          {"expiresAtMs", t.expires_at_ms()},
          {"revoked", t.revoked()},
          {"description", t.description()}};
}

std::string quote(std::string_view s) { return json(std::string(s)).dump(); }

// `<kind> "<name>"`, the subject of every message about an object.
std::string subject(std::string_view kind, std::string_view name) {
  return std::string(kind) + " " + quote(name);
}

Status check_label(std::string_view field, std::string_view value) {
  if (value.empty()) return invalid_argument(std::string(field) + " is missing");
  if (!model::is_dns1123_label(value)) {
    return invalid_argument(std::string(field) + " " + quote(value) + " is not " +
                            std::string(model::kLabelRule));
  }
  return ok_status();
}

bool is_fleet_kind(std::string_view kind) { return kind == kSite || kind == kTenantKind; }

std::string prefix_of(std::string_view kind, std::string_view tenant, std::string_view site) {
  if (kind == kDevice) return model::devices_prefix(site, tenant);
  if (kind == kSite) return std::string(model::kSitesPrefix);
  if (kind == kTenantKind) return std::string(model::kTenantsPrefix);
  return model::tenant_kind_prefix(tenant, kind);
}

// The object's kind, tenant and name from its key.
void name_object(std::string_view kind, std::string_view tenant, std::string_view name,
                 v1::Object* out, std::string_view site) {
  if (!site.empty()) out->set_site(std::string(site));
  out->set_kind(std::string(kind));
  out->set_tenant(std::string(tenant));
  out->set_name(std::string(name));
}

std::string not_found_message(std::string_view kind, std::string_view tenant, std::string_view name,
                              std::string_view site) {
  std::string m = subject(kind, name);
  if (!is_fleet_kind(kind)) m += " of tenant " + quote(tenant);
  if (!site.empty()) m += " at site " + quote(site);
  return m + " not found";
}

StatusOr<std::string> object_key(std::string_view kind, std::string_view tenant,
                                 std::string_view name, std::string_view field_prefix,
                                 std::string_view site) {
  const std::string p(field_prefix);
  if (kind.empty()) return invalid_argument(p + "kind is missing");
  if (kind != kTemplate && kind != kPlacement && kind != kOverride && kind != kGrant &&
      kind != kSite && kind != kTenantKind && kind != kDevice) {
    return invalid_argument(
        p + "kind " + quote(kind) +
        " is not one of template, placement, override, grant, site, tenant, device");
  }
  if (kind == kDevice) {
    CANOPY_RETURN_IF_ERROR(check_label(p + "site", site));
  } else if (!site.empty()) {
    return invalid_argument(p + "site must be empty for kind " + std::string(kind) +
                            " (only devices belong to a site)");
  }
  if (is_fleet_kind(kind)) {
    if (!tenant.empty()) {
      return invalid_argument(p + "tenant must be empty for kind " + std::string(kind) + " (" +
                              std::string(kind) + "s belong to no tenant)");
    }
  } else {
    CANOPY_RETURN_IF_ERROR(check_label(p + "tenant", tenant));
  }
  CANOPY_RETURN_IF_ERROR(check_label(p + "name", name));
  return prefix_of(kind, tenant, site) + std::string(name);
}

StatusOr<json> validate_object(const v1::Object& object, const DocumentLimits& limits,
                               std::string* canonical) {
  const std::string what = subject(object.kind(), object.name());
  const std::string& text = object.json();
  if (text.empty()) return invalid_argument(what + ": object.json is missing");
  if (text.size() > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(text.size()) +
                            " bytes exceeds the limit of " + std::to_string(limits.max_doc_bytes));
  }
  // One parse when the text is good; a refused one is parsed again below to
  // say exactly why.
  auto parsed = parse_document(text, limits);
  if (!parsed.ok()) {
    json probe = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (probe.is_discarded()) {
      // Parse again for the position and reason of the error.
      try {
        const json unused = json::parse(text);
        (void)unused;
      } catch (const json::parse_error& e) {
        return invalid_argument(what + ": object.json is not valid JSON: " + e.what());
      }
      return invalid_argument(what + ": object.json is not valid JSON");
    }
    if (!probe.is_object()) {
      return invalid_argument(what + ": object.json must be a JSON object, not " +
                              probe.type_name());
    }
    return Status(parsed.status().code(), what + ": object.json: " + parsed.status().message());
  }
  json doc = std::move(parsed).value();
  const std::string_view kind = object.kind();
  if (kind == kTemplate) {
    CANOPY_RETURN_IF_ERROR(named(what, model::validate_manifest(doc)));
  } else if (kind == kPlacement) {
    CANOPY_RETURN_IF_ERROR(named(what, model::parse_placement(doc).status()));
  } else if (kind == kOverride) {
    CANOPY_RETURN_IF_ERROR(named(what, model::parse_override(doc).status()));
  } else if (kind == kSite) {
    CANOPY_RETURN_IF_ERROR(check_site(&doc, object.name(), what));
  } else if (kind == kGrant) {
    CANOPY_RETURN_IF_ERROR(named(what, model::parse_grant(doc).status()));
  } else if (kind == kTenantKind) {
    CANOPY_RETURN_IF_ERROR(named(what, model::parse_tenant(object.name(), doc).status()));
    if (!doc.contains("name")) doc["name"] = object.name();
  } else if (kind == kDevice) {
    CANOPY_RETURN_IF_ERROR(named(
        what, model::parse_device(object.site(), object.tenant(), object.name(), doc).status()));
    // The document names itself, so a site's copy says whose it is.
    doc["site"] = object.site();
    doc["tenant"] = object.tenant();
    doc["id"] = object.name();
  }
  std::string dumped = doc.dump();
  if (dumped.size() > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(dumped.size()) +
                            " bytes (canonical) exceeds the limit of " +
                            std::to_string(limits.max_doc_bytes));
  }
  if (canonical != nullptr) *canonical = std::move(dumped);
  return doc;
}

}  // namespace canopy::api
