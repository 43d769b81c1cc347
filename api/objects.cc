#include "api/objects.h"

#include <utility>

#include "hub/keys.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

constexpr char kLabelRule[] =
    "a DNS-1123 label (1-63 characters of [a-z0-9-], starting and ending with a letter or digit)";
constexpr char kSubdomainRule[] =
    "a DNS-1123 subdomain (up to 253 characters of [a-z0-9-.], dot-separated parts starting "
    "and ending with a letter or digit)";

}  // namespace

std::string quote(std::string_view s) { return json(std::string(s)).dump(); }

Status check_label(std::string_view field, std::string_view value) {
  if (value.empty()) return invalid_argument(std::string(field) + " is missing");
  if (!hub::is_dns1123_label(value)) {
    return invalid_argument(std::string(field) + " " + quote(value) + " is not " + kLabelRule);
  }
  return ok_status();
}

std::string prefix_of(std::string_view kind, std::string_view tenant) {
  if (kind == kSite) return std::string(hub::kSitesPrefix);
  return std::string(hub::kTenantsPrefix) + std::string(tenant) + "/" + std::string(kind) + "s/";
}

// The object's kind, tenant and name from its key.
void name_object(std::string_view kind, std::string_view tenant, std::string_view name,
                 v1::Object* out) {
  out->set_kind(std::string(kind));
  out->set_tenant(std::string(tenant));
  out->set_name(std::string(name));
}

// `<kind> "<name>"`, the subject of every message about an object.
std::string subject(std::string_view kind, std::string_view name) {
  return std::string(kind) + " " + quote(name);
}

std::string not_found_message(std::string_view kind, std::string_view tenant,
                              std::string_view name) {
  std::string m = subject(kind, name);
  if (kind != kSite) m += " of tenant " + quote(tenant);
  return m + " not found";
}

namespace {

bool is_dns1123_subdomain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty()) return false;
    for (char c : part) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    if (part.front() == '-' || part.back() == '-') return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// --- Document checks. Each returns INVALID_ARGUMENT naming the field.

Status check_string_field(const json& doc, const std::string& field, const std::string& what) {
  auto it = doc.find(field);
  if (it == doc.end()) return invalid_argument(what + ": " + field + " is missing");
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return invalid_argument(what + ": " + field + " must be a non-empty string");
  }
  return ok_status();
}

Status check_label_array(const json& doc, const std::string& field, const std::string& what) {
  const json& arr = doc.at(field);
  if (!arr.is_array()) {
    return invalid_argument(what + ": " + field + " must be an array of names, not " +
                            arr.type_name());
  }
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string f = field + "[" + std::to_string(i) + "]";
    if (!arr[i].is_string()) return invalid_argument(what + ": " + f + " must be a string");
    const std::string& name = arr[i].get_ref<const std::string&>();
    if (!hub::is_dns1123_label(name)) {
      return invalid_argument(what + ": " + f + " " + quote(name) + " is not " + kLabelRule);
    }
  }
  return ok_status();
}

Status check_string_map(const json& m, const std::string& field, const std::string& what) {
  if (!m.is_object()) {
    return invalid_argument(what + ": " + field + " must be an object, not " + m.type_name());
  }
  for (const auto& [k, v] : m.items()) {
    if (k.empty()) return invalid_argument(what + ": " + field + " has an empty key");
    if (!v.is_string()) {
      return invalid_argument(what + ": " + field + "." + k + " must be a string, not " +
                              v.type_name());
    }
  }
  return ok_status();
}

// `selector.matchLabels` and `sites`, as placements and overrides have them.
// Sets *chooses when either is present.
Status check_site_choice(const json& doc, const std::string& what, bool* chooses) {
  *chooses = false;
  auto sel = doc.find("selector");
  if (sel != doc.end()) {
    if (!sel->is_object()) {
      return invalid_argument(what + ": selector must be an object, not " + sel->type_name());
    }
    auto ml = sel->find("matchLabels");
    if (ml != sel->end()) {
      CANOPY_RETURN_IF_ERROR(check_string_map(*ml, "selector.matchLabels", what));
      *chooses = true;
    }
  }
  if (doc.contains("sites")) {
    CANOPY_RETURN_IF_ERROR(check_label_array(doc, "sites", what));
    *chooses = true;
  }
  return ok_status();
}

Status check_template(const json& doc, const std::string& what) {
  CANOPY_RETURN_IF_ERROR(check_string_field(doc, "apiVersion", what));
  CANOPY_RETURN_IF_ERROR(check_string_field(doc, "kind", what));
  auto md = doc.find("metadata");
  if (md == doc.end()) return invalid_argument(what + ": metadata is missing");
  if (!md->is_object()) {
    return invalid_argument(what + ": metadata must be an object, not " + md->type_name());
  }
  auto name = md->find("name");
  if (name == md->end()) return invalid_argument(what + ": metadata.name is missing");
  if (!name->is_string()) return invalid_argument(what + ": metadata.name must be a string");
  if (!is_dns1123_subdomain(name->get_ref<const std::string&>())) {
    return invalid_argument(what + ": metadata.name " + quote(name->get_ref<const std::string&>()) +
                            " is not " + kSubdomainRule);
  }
  auto ns = md->find("namespace");
  if (ns != md->end()) {
    if (!ns->is_string()) return invalid_argument(what + ": metadata.namespace must be a string");
    if (!hub::is_dns1123_label(ns->get_ref<const std::string&>())) {
      return invalid_argument(what + ": metadata.namespace " +
                              quote(ns->get_ref<const std::string&>()) + " is not " + kLabelRule);
    }
  }
  return ok_status();
}

Status check_placement(const json& doc, const std::string& what) {
  if (!doc.contains("templates")) return invalid_argument(what + ": templates is missing");
  CANOPY_RETURN_IF_ERROR(check_label_array(doc, "templates", what));
  bool chooses = false;
  CANOPY_RETURN_IF_ERROR(check_site_choice(doc, what, &chooses));
  if (!chooses) {
    return invalid_argument(what + ": selector.matchLabels or sites is missing (a placement " +
                            "must say which sites it targets)");
  }
  return ok_status();
}

Status check_override(const json& doc, const std::string& what) {
  auto t = doc.find("template");
  if (t == doc.end()) return invalid_argument(what + ": template is missing");
  if (!t->is_string()) return invalid_argument(what + ": template must be a string");
  if (!hub::is_dns1123_label(t->get_ref<const std::string&>())) {
    return invalid_argument(what + ": template " + quote(t->get_ref<const std::string&>()) +
                            " is not " + kLabelRule);
  }
  auto patch = doc.find("patch");
  if (patch == doc.end()) return invalid_argument(what + ": patch is missing");
  if (!patch->is_object()) {
    return invalid_argument(what + ": patch must be an object (a JSON merge patch), not " +
                            patch->type_name());
  }
  bool chooses = false;
  return check_site_choice(doc, what, &chooses);
}

Status check_site(json* doc, std::string_view name, const std::string& what) {
  auto n = doc->find("name");
  if (n == doc->end()) {
    (*doc)["name"] = std::string(name);
  } else if (!n->is_string() || n->get_ref<const std::string&>() != name) {
    return invalid_argument(what + ": name " + n->dump() + " differs from the object's name " +
                            quote(name));
  }
  auto labels = doc->find("labels");
  if (labels != doc->end()) CANOPY_RETURN_IF_ERROR(check_string_map(*labels, "labels", what));
  return ok_status();
}

}  // namespace

StatusOr<std::string> object_key(std::string_view kind, std::string_view tenant,
                                 std::string_view name, std::string_view field_prefix) {
  const std::string p(field_prefix);
  if (kind.empty()) return invalid_argument(p + "kind is missing");
  if (kind != kTemplate && kind != kPlacement && kind != kOverride && kind != kSite) {
    return invalid_argument(p + "kind " + quote(kind) +
                            " is not one of template, placement, override, site");
  }
  if (kind == kSite) {
    if (!tenant.empty()) {
      return invalid_argument(p + "tenant must be empty for kind site (sites belong to no tenant)");
    }
  } else {
    CANOPY_RETURN_IF_ERROR(check_label(p + "tenant", tenant));
  }
  CANOPY_RETURN_IF_ERROR(check_label(p + "name", name));
  return prefix_of(kind, tenant) + std::string(name);
}

StatusOr<json> validate_object(const v1::Object& object, const DocumentLimits& limits) {
  const std::string what = subject(object.kind(), object.name());
  const std::string& text = object.json();
  if (text.empty()) return invalid_argument(what + ": object.json is missing");
  if (text.size() > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(text.size()) +
                            " bytes exceeds the limit of " + std::to_string(limits.max_doc_bytes));
  }
  {
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
  }
  auto parsed = parse_document(text, limits);
  if (!parsed.ok()) {
    return Status(parsed.status().code(), what + ": object.json: " + parsed.status().message());
  }
  json doc = std::move(parsed).value();
  const std::string_view kind = object.kind();
  if (kind == kTemplate) {
    CANOPY_RETURN_IF_ERROR(check_template(doc, what));
  } else if (kind == kPlacement) {
    CANOPY_RETURN_IF_ERROR(check_placement(doc, what));
  } else if (kind == kOverride) {
    CANOPY_RETURN_IF_ERROR(check_override(doc, what));
  } else if (kind == kSite) {
    CANOPY_RETURN_IF_ERROR(check_site(&doc, object.name(), what));
  }
  const size_t canonical = doc.dump().size();
  if (canonical > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(canonical) +
                            " bytes (canonical) exceeds the limit of " +
                            std::to_string(limits.max_doc_bytes));
  }
  return doc;
}

}  // namespace canopy::api
