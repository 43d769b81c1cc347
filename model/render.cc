#include "model/render.h"

#include <xxhash.h>

#include <cstdio>
#include <set>
#include <utility>

#include "store/merge_patch.h"

namespace canopy::model {

using nlohmann::json;

namespace {

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

}  // namespace

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

std::string object_hash(const json& object) {
  std::string text = canonical(object);
  return hex64(XXH3_64bits(text.data(), text.size()));
}

std::string template_revision(std::string_view canonical_json) {
  return template_revision(XXH3_64bits(canonical_json.data(), canonical_json.size()));
}

std::string template_revision(uint64_t xxh3_of_canonical_json) {
  return hex64(xxh3_of_canonical_json);
}

std::string template_revision(uint64_t template_hash,
                              const std::vector<uint64_t>& override_hashes) {
  uint64_t h = template_hash;
  for (uint64_t o : override_hashes) {
    unsigned char bytes[8];  // little-endian, the same on every machine
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(o >> (8 * i));
    h = XXH3_64bits_withSeed(bytes, sizeof bytes, h);
  }
  return hex64(h);
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

SitePlan plan_site(const SiteRecord& site, const DesiredState& desired,
                   const RenderLimits& limits) {
  SitePlan out;
  std::map<std::string, ObjectPlan> placed;
  std::map<std::string, RenderFailure> failed;
  auto fail = [&](const std::string& tk, std::string_view tenant, std::string_view name,
                  std::string error, bool missing = false) {
    placed.erase(tk);
    failed.try_emplace(
        tk, RenderFailure{tk, std::string(tenant), std::string(name), std::move(error), missing});
  };
  auto global = [&](const std::string& key, std::string_view tenant, std::string error) {
    out.failures.push_back(RenderFailure{key, std::string(tenant), "", std::move(error)});
  };

  for (const auto& [key, doc] : desired.placements) {
    const std::string_view tenant = parse_key(key).tenant;
    auto p = parse_placement(doc);
    if (!p.ok()) {
      global(key, tenant, "placement " + key + ": " + p.status().message());
      continue;
    }
    if (!p->choice.matches(site)) continue;
    for (const std::string& name : p->templates) {
      std::string tk = template_key(tenant, name);
      if (placed.count(tk) || failed.count(tk)) continue;
      if (!desired.templates.count(tk)) {
        fail(tk, tenant, name,
             "placement " + key + " lists template " + quote(name) + ", which does not exist (" +
                 tk + ")",
             /*missing=*/true);
        continue;
      }
      placed.emplace(tk, ObjectPlan{tk, std::string(tenant), name, {}, ""});
    }
  }

  // Overrides, in key order, so each plan's override_keys come out in key order.
  for (const auto& [key, doc] : desired.overrides) {
    const std::string_view tenant = parse_key(key).tenant;
    auto o = parse_override(doc);
    if (!o.ok()) {
      // As the hub's index reads it: an override the model refuses applies to
      // no site. It is reported (and blocks pruning) while the site holds it.
      global(key, tenant, "override " + key + ": " + o.status().message());
      continue;
    }
    std::string tk = template_key(tenant, o->template_name);
    auto it = placed.find(tk);
    if (it == placed.end()) continue;
    if (o->choice.matches(site)) it->second.override_keys.push_back(key);
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
      auto o = parse_override(oit->second);
      if (!o.ok()) return invalid_argument("override " + key + ": " + o.status().message());
      obj = apply_merge_patch(obj, o->patch);
      patched = true;
    }
    if (!plan.local_override_key.empty()) {
      auto lit = desired.local_overrides.find(plan.local_override_key);
      if (lit != desired.local_overrides.end()) {
        auto lo = parse_local_override(lit->second);
        if (!lo.ok()) {
          return invalid_argument("local override " + plan.local_override_key + ": " +
                                  lo.status().message());
        }
        obj = apply_merge_patch(obj, lo->patch);
        patched = true;
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

StatusOr<RenderResult> render_site(const SiteRecord& site, const DesiredState& desired,
                                   const RenderLimits& limits) {
  if (!is_dns1123_label(site.name)) {
    return invalid_argument("site name " + quote(site.name) + " is not a DNS-1123 label");
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
  const ParsedKey k = parse_key(key);
  switch (k.kind) {
    case KeyKind::kPlacement:
      return DesiredKind::kPlacement;
    case KeyKind::kTemplate:
      return DesiredKind::kTemplate;
    case KeyKind::kOverride:
      return DesiredKind::kOverride;
    case KeyKind::kLocalOverride:
      return k.site == site ? DesiredKind::kLocalOverride : DesiredKind::kNone;
    case KeyKind::kRelease:
      return k.site == site ? DesiredKind::kRelease : DesiredKind::kNone;
    default:
      return DesiredKind::kNone;
  }
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
    case DesiredKind::kRelease:
      return &d->releases;
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
  return {std::string(kTenantsPrefix), local_overrides_prefix(site), releases_prefix(site)};
}

}  // namespace canopy::model
