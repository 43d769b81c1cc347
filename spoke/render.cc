#include "spoke/render.h"

#include <xxhash.h>

#include <cstdio>
#include <set>
#include <utility>

#include "store/document.h"
#include "store/store.h"

namespace canopy::spoke {

using nlohmann::json;

namespace {

constexpr size_t kScanPage = 512;

// Splits `s` on '/'.
std::vector<std::string_view> split_key(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

// A JSON string literal of `s`, for messages (escapes control characters).
std::string quote_name(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Canonical JSON: nlohmann's object_t is a std::map, so keys come out sorted.
std::string canonical(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// Null counts as absent: a CRDT merge may leave a field null.
const json* field(const json& obj, std::string_view name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Status check_string_map(const json& m, const std::string& what) {
  if (!m.is_object()) {
    return invalid_argument(what + " must be an object, not " + m.type_name());
  }
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string()) {
      return invalid_argument(what + "." + k + " must be a string, not " + v.type_name());
    }
  }
  return ok_status();
}

// tenant of "t/<tenant>/<kind>/<name>".
std::string tenant_of(std::string_view key) {
  auto parts = split_key(key);
  return parts.size() == 4 ? std::string(parts[1]) : std::string();
}

// The `patch` of an override document: nullptr when it has none.
StatusOr<const json*> patch_of(const json& doc, const std::string& what) {
  const json* patch = field(doc, "patch");
  if (patch == nullptr) return static_cast<const json*>(nullptr);
  if (!patch->is_object()) {
    return invalid_argument(what + ": patch must be a JSON object, not " + patch->type_name());
  }
  return patch;
}

}  // namespace

bool is_dns1123_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : s) {
    if (!alnum(c) && c != '-') return false;
  }
  return alnum(s.front()) && alnum(s.back());
}

bool is_dns1123_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (!is_dns1123_label(label)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

std::string template_key(std::string_view tenant, std::string_view template_name) {
  return "t/" + std::string(tenant) + "/templates/" + std::string(template_name);
}

std::string local_override_key(std::string_view site, std::string_view tenant,
                               std::string_view template_name) {
  return "sites/" + std::string(site) + "/overrides/" + std::string(tenant) + "/" +
         std::string(template_name);
}

std::string status_key(std::string_view site, std::string_view tenant,
                       std::string_view template_name) {
  return "sites/" + std::string(site) + "/status/" + std::string(tenant) + "/" +
         std::string(template_name);
}

std::string manifest_file_name(std::string_view tenant, std::string_view template_name) {
  return "canopy-" + std::to_string(tenant.size()) + "-" + std::string(tenant) + "-" +
         std::string(template_name) + ".json";
}

bool parse_manifest_file_name(std::string_view file_name, std::string* tenant,
                              std::string* template_name) {
  constexpr std::string_view kPrefix = "canopy-";
  constexpr std::string_view kSuffix = ".json";
  if (!file_name.starts_with(kPrefix) || !file_name.ends_with(kSuffix)) return false;
  std::string_view rest =
      file_name.substr(kPrefix.size(), file_name.size() - kPrefix.size() - kSuffix.size());
  size_t dash = rest.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash > 2) return false;
  size_t len = 0;
  for (char c : rest.substr(0, dash)) {
    if (c < '0' || c > '9') return false;
    len = len * 10 + static_cast<size_t>(c - '0');
  }
  if (rest[0] == '0') return false;  // no leading zeros: one spelling per name
  rest.remove_prefix(dash + 1);
  if (rest.size() < len + 2 || rest[len] != '-') return false;
  std::string_view t = rest.substr(0, len);
  std::string_view n = rest.substr(len + 1);
  if (!is_dns1123_label(t) || !is_dns1123_label(n)) return false;
  if (tenant) *tenant = std::string(t);
  if (template_name) *template_name = std::string(n);
  return true;
}

StatusOr<bool> match_site(const json& doc, const SiteInfo& site) {
  if (!doc.is_object()) {
    return invalid_argument(std::string("document must be a JSON object, not ") + doc.type_name());
  }
  bool listed = false;
  if (const json* sites = field(doc, "sites")) {
    if (!sites->is_array()) {
      return invalid_argument(std::string("sites must be an array, not ") + sites->type_name());
    }
    for (size_t i = 0; i < sites->size(); ++i) {
      const json& s = (*sites)[i];
      if (!s.is_string()) {
        return invalid_argument("sites[" + std::to_string(i) + "] must be a string, not " +
                                s.type_name());
      }
      if (s.get_ref<const std::string&>() == site.name) listed = true;
    }
  }
  bool selected = false;
  if (const json* selector = field(doc, "selector")) {
    if (!selector->is_object()) {
      return invalid_argument(std::string("selector must be an object, not ") +
                              selector->type_name());
    }
    for (const auto& [k, v] : selector->items()) {
      if (k == "matchLabels" || v.is_null()) continue;
      // Ignoring an expression would select more sites than intended.
      if (k == "matchExpressions" && v.is_array() && v.empty()) continue;
      return invalid_argument("selector." + k + " is not supported (only matchLabels)");
    }
    if (const json* labels = field(*selector, "matchLabels")) {
      CANOPY_RETURN_IF_ERROR(check_string_map(*labels, "selector.matchLabels"));
      selected = !labels->empty();
      for (const auto& [k, v] : labels->items()) {
        auto it = site.labels.find(k);
        if (it == site.labels.end() || it->second != v.get_ref<const std::string&>()) {
          selected = false;
          break;
        }
      }
    }
  }
  return listed || selected;
}

bool placement_matches(const json& placement, const SiteInfo& site) {
  auto m = match_site(placement, site);
  return m.ok() && *m;
}

bool override_matches(const json& override_doc, const SiteInfo& site) {
  auto m = match_site(override_doc, site);
  return m.ok() && *m;
}

Status validate_manifest(const json& m) {
  if (!m.is_object()) {
    return invalid_argument(std::string("manifest must be a JSON object, not ") + m.type_name());
  }
  for (const char* name : {"apiVersion", "kind"}) {
    const json* f = field(m, name);
    if (f == nullptr) return invalid_argument(std::string(name) + " is missing");
    if (!f->is_string()) {
      return invalid_argument(std::string(name) + " must be a string, not " + f->type_name());
    }
    if (f->get_ref<const std::string&>().empty()) {
      return invalid_argument(std::string(name) + " is empty");
    }
  }
  const json* meta = field(m, "metadata");
  if (meta == nullptr) return invalid_argument("metadata is missing");
  if (!meta->is_object()) {
    return invalid_argument(std::string("metadata must be an object, not ") + meta->type_name());
  }
  const json* name = field(*meta, "name");
  if (name == nullptr) return invalid_argument("metadata.name is missing");
  if (!name->is_string()) {
    return invalid_argument(std::string("metadata.name must be a string, not ") +
                            name->type_name());
  }
  if (!is_dns1123_subdomain(name->get_ref<const std::string&>())) {
    return invalid_argument("metadata.name " + quote_name(name->get_ref<const std::string&>()) +
                            " is not a DNS-1123 subdomain");
  }
  if (const json* ns = field(*meta, "namespace")) {
    if (!ns->is_string()) {
      return invalid_argument(std::string("metadata.namespace must be a string, not ") +
                              ns->type_name());
    }
    if (!is_dns1123_label(ns->get_ref<const std::string&>())) {
      return invalid_argument("metadata.namespace " +
                              quote_name(ns->get_ref<const std::string&>()) +
                              " is not a DNS-1123 label");
    }
  }
  for (const char* map : {"labels", "annotations"}) {
    if (const json* f = field(*meta, map)) {
      CANOPY_RETURN_IF_ERROR(check_string_map(*f, std::string("metadata.") + map));
    }
  }
  return ok_status();
}

std::string object_hash(const json& object) {
  std::string text = canonical(object);
  return hex64(XXH3_64bits(text.data(), text.size()));
}

std::string content_hash(const json& rendered_object) {
  const json* meta = field(rendered_object, "metadata");
  const json* ann = meta ? field(*meta, "annotations") : nullptr;
  if (ann == nullptr || !ann->is_object() || !ann->contains(kHashAnnotation)) {
    return object_hash(rendered_object);
  }
  json copy = rendered_object;
  copy["metadata"]["annotations"].erase(std::string(kHashAnnotation));
  return object_hash(copy);
}

SitePlan plan_site(const SiteInfo& site, const DesiredState& desired, const RenderLimits& limits) {
  SitePlan out;
  std::map<std::string, ObjectPlan> placed;
  std::map<std::string, RenderFailure> failed;
  auto fail = [&](const std::string& tk, const std::string& tenant, const std::string& name,
                  std::string error) {
    placed.erase(tk);
    failed.try_emplace(tk, RenderFailure{tk, tenant, name, std::move(error)});
  };
  auto global = [&](const std::string& key, std::string error) {
    out.failures.push_back(RenderFailure{key, tenant_of(key), "", std::move(error)});
  };

  for (const auto& [key, doc] : desired.placements) {
    const std::string tenant = tenant_of(key);
    auto m = match_site(doc, site);
    if (!m.ok()) {
      global(key, "placement " + key + ": " + m.status().message());
      continue;
    }
    if (!*m) continue;
    const json* templates = field(doc, "templates");
    if (templates == nullptr) continue;
    if (!templates->is_array()) {
      global(key,
             "placement " + key + ": templates must be an array, not " + templates->type_name());
      continue;
    }
    for (size_t i = 0; i < templates->size(); ++i) {
      const json& t = (*templates)[i];
      if (!t.is_string() || !is_dns1123_label(t.get_ref<const std::string&>())) {
        global(key, "placement " + key + ": templates[" + std::to_string(i) + "] " +
                        (t.is_string() ? quote_name(t.get_ref<const std::string&>())
                                       : std::string("of type ") + t.type_name()) +
                        " is not a DNS-1123 label");
        continue;
      }
      const std::string& name = t.get_ref<const std::string&>();
      std::string tk = template_key(tenant, name);
      if (placed.count(tk) || failed.count(tk)) continue;
      if (!desired.templates.count(tk)) {
        fail(tk, tenant, name,
             "placement " + key + " lists template " + quote_name(name) +
                 ", which does not exist (" + tk + ")");
        continue;
      }
      placed.emplace(tk, ObjectPlan{tk, tenant, name, {}, ""});
    }
  }

  // Overrides, in key order, so each plan's override_keys come out in key order.
  for (const auto& [key, doc] : desired.overrides) {
    const std::string tenant = tenant_of(key);
    const json* t = field(doc, "template");
    if (t == nullptr || !t->is_string() || !is_dns1123_label(t->get_ref<const std::string&>())) {
      global(key, "override " + key + ": template must be a DNS-1123 label");
      continue;
    }
    const std::string& name = t->get_ref<const std::string&>();
    std::string tk = template_key(tenant, name);
    auto it = placed.find(tk);
    if (it == placed.end()) continue;
    auto m = match_site(doc, site);
    if (!m.ok()) {
      fail(tk, tenant, name, "override " + key + ": " + m.status().message());
      continue;
    }
    if (*m) it->second.override_keys.push_back(key);
  }

  size_t n = 0;
  for (auto& [tk, plan] : placed) {
    if (++n > limits.max_objects) {
      failed.try_emplace(tk, RenderFailure{tk, plan.tenant, plan.template_name,
                                           "site " + site.name + " has more than " +
                                               std::to_string(limits.max_objects) +
                                               " objects in scope; " + tk + " is not rendered"});
      continue;
    }
    std::string lk = local_override_key(site.name, plan.tenant, plan.template_name);
    if (desired.local_overrides.count(lk)) plan.local_override_key = std::move(lk);
    out.objects.push_back(std::move(plan));
  }
  for (auto& [tk, f] : failed) out.failures.push_back(std::move(f));
  return out;
}

StatusOr<RenderedObject> render_object(const ObjectPlan& plan, const DesiredState& desired,
                                       const RenderLimits& limits) {
  try {
    auto tit = desired.templates.find(plan.template_key);
    if (tit == desired.templates.end()) {
      return invalid_argument("template " + plan.template_key + " does not exist");
    }
    Status st = validate_manifest(tit->second);
    if (!st.ok()) return invalid_argument("template " + plan.template_key + ": " + st.message());

    json obj = tit->second;
    bool patched = false;
    for (const std::string& key : plan.override_keys) {
      auto oit = desired.overrides.find(key);
      if (oit == desired.overrides.end()) return invalid_argument("override " + key + " is gone");
      auto patch = patch_of(oit->second, "override " + key);
      if (!patch.ok()) return patch.status();
      if (*patch == nullptr) continue;
      obj = apply_merge_patch(obj, **patch);
      patched = true;
    }
    if (!plan.local_override_key.empty()) {
      auto lit = desired.local_overrides.find(plan.local_override_key);
      if (lit != desired.local_overrides.end()) {
        auto patch = patch_of(lit->second, "local override " + plan.local_override_key);
        if (!patch.ok()) return patch.status();
        if (*patch != nullptr) {
          obj = apply_merge_patch(obj, **patch);
          patched = true;
        }
      }
    }
    if (patched) {
      st = validate_manifest(obj);
      if (!st.ok()) {
        return invalid_argument("template " + plan.template_key +
                                " after overrides: " + st.message());
      }
    }

    json& meta = obj["metadata"];
    meta["labels"][std::string(kManagedByLabel)] = kManagedByValue;
    json& ann = meta["annotations"];
    ann[std::string(kTemplateAnnotation)] = plan.template_key;
    ann.erase(std::string(kHashAnnotation));
    std::string text = canonical(obj);
    if (text.size() > limits.max_object_bytes) {
      return invalid_argument("template " + plan.template_key + ": rendered object of " +
                              std::to_string(text.size()) + " bytes exceeds the limit of " +
                              std::to_string(limits.max_object_bytes));
    }
    std::string hash = hex64(XXH3_64bits(text.data(), text.size()));
    ann[std::string(kHashAnnotation)] = hash;

    RenderedObject out;
    out.template_key = plan.template_key;
    out.tenant = plan.tenant;
    out.template_name = plan.template_name;
    out.object = std::move(obj);
    out.hash = std::move(hash);
    out.file_name = manifest_file_name(plan.tenant, plan.template_name);
    return out;
  } catch (const json::exception& e) {
    return invalid_argument("template " + plan.template_key + ": " + e.what());
  }
}

StatusOr<RenderResult> render_site(const SiteInfo& site, const DesiredState& desired,
                                   const RenderLimits& limits) {
  if (!is_dns1123_label(site.name)) {
    return invalid_argument("site name " + quote_name(site.name) + " is not a DNS-1123 label");
  }
  SitePlan plan = plan_site(site, desired, limits);
  RenderResult out;
  out.failures = std::move(plan.failures);
  for (const ObjectPlan& p : plan.objects) {
    auto r = render_object(p, desired, limits);
    if (r.ok()) {
      out.objects.push_back(std::move(r).value());
    } else {
      out.failures.push_back(
          RenderFailure{p.template_key, p.tenant, p.template_name, r.status().message()});
    }
  }
  return out;
}

DesiredKind desired_kind(std::string_view key, std::string_view site) {
  auto parts = split_key(key);
  if (parts.size() == 4 && parts[0] == "t") {
    if (!is_dns1123_label(parts[1]) || !is_dns1123_label(parts[3])) return DesiredKind::kNone;
    if (parts[2] == "placements") return DesiredKind::kPlacement;
    if (parts[2] == "templates") return DesiredKind::kTemplate;
    if (parts[2] == "overrides") return DesiredKind::kOverride;
    return DesiredKind::kNone;
  }
  if (parts.size() == 5 && parts[0] == "sites" && parts[1] == site && parts[2] == "overrides" &&
      is_dns1123_label(parts[3]) && is_dns1123_label(parts[4])) {
    return DesiredKind::kLocalOverride;
  }
  return DesiredKind::kNone;
}

namespace {
std::map<std::string, json>* map_of(DesiredState* d, DesiredKind kind) {
  switch (kind) {
    case DesiredKind::kPlacement:
      return &d->placements;
    case DesiredKind::kTemplate:
      return &d->templates;
    case DesiredKind::kOverride:
      return &d->overrides;
    case DesiredKind::kLocalOverride:
      return &d->local_overrides;
    case DesiredKind::kNone:
      break;
  }
  return nullptr;
}
}  // namespace

void put_desired(DesiredState* desired, DesiredKind kind, const std::string& key, json doc) {
  if (auto* m = map_of(desired, kind)) (*m)[key] = std::move(doc);
}

bool erase_desired(DesiredState* desired, DesiredKind kind, const std::string& key) {
  auto* m = map_of(desired, kind);
  return m != nullptr && m->erase(key) > 0;
}

std::vector<std::string> desired_prefixes(std::string_view site) {
  return {"t/", "sites/" + std::string(site) + "/overrides/"};
}

StatusOr<DesiredState> load_desired_state(Store& store, const std::string& site) {
  DesiredState out;
  for (const std::string& prefix : desired_prefixes(site)) {
    std::string after;
    while (true) {
      auto page = store.scan(prefix, after, kScanPage);
      if (!page.ok()) return page.status();
      for (ScanItem& item : page->items) {
        DesiredKind kind = desired_kind(item.key, site);
        if (kind == DesiredKind::kNone) continue;
        json doc = json::parse(item.json, nullptr, /*allow_exceptions=*/false);
        if (doc.is_discarded() || !doc.is_object()) {
          return data_loss("document " + item.key + " is not a JSON object");
        }
        put_desired(&out, kind, item.key, std::move(doc));
      }
      if (page->next_after.empty()) break;
      after = std::move(page->next_after);
    }
  }
  return out;
}

}  // namespace canopy::spoke
