#include "model/documents.h"

#include <algorithm>
#include <cstdlib>
#include <initializer_list>

#include "model/document_fields.h"
#include "model/names.h"

namespace canopy::model {
namespace fields {

// The field `name` of `doc`, nullptr when absent or null.
const json* field(const json& doc, std::string_view name) {
  auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return nullptr;
  return &*it;
}

Status require_object(const json& doc, std::string_view what) {
  if (doc.is_object()) return ok_status();
  return invalid_argument(std::string(what) + " must be a JSON object, not " + doc.type_name());
}

Status only_fields(const json& doc, std::initializer_list<std::string_view> allowed) {
  for (const auto& [k, v] : doc.items()) {
    if (v.is_null()) continue;
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return invalid_argument(quote(k) + " is not a field of this document (" + list + ")");
  }
  return ok_status();
}

// An array of DNS-1123 labels, sorted and deduplicated.
StatusOr<std::vector<std::string>> label_array(const json& arr, const std::string& f) {
  if (!arr.is_array()) {
    return invalid_argument(f + " must be an array of names, not " + arr.type_name());
  }
  if (arr.size() > kMaxListedNames) {
    return invalid_argument(f + " lists " + std::to_string(arr.size()) + " names; the limit is " +
                            std::to_string(kMaxListedNames));
  }
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string fi = f + "[" + std::to_string(i) + "]";
    if (!arr[i].is_string()) {
      return invalid_argument(fi + " must be a string, not " + arr[i].type_name());
    }
    const std::string& s = arr[i].get_ref<const std::string&>();
    if (!is_dns1123_label(s)) {
      return invalid_argument(fi + " " + quote(s) + " is not " + std::string(kLabelRule));
    }
    out.push_back(s);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

StatusOr<SiteChoice> parse_choice(const json& doc) {
  SiteChoice out;
  if (const json* sites = field(doc, "sites")) {
    auto s = label_array(*sites, "sites");
    if (!s.ok()) return s.status();
    out.sites = std::move(s).value();
  }
  if (const json* sel = field(doc, "selector")) {
    auto s = LabelSelector::parse(*sel, "selector");
    if (!s.ok()) return s.status();
    out.selector = std::move(s).value();
  }
  return out;
}

Status check_string_map(const json& m, const std::string& f) {
  if (!m.is_object()) return invalid_argument(f + " must be an object, not " + m.type_name());
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string()) {
      return invalid_argument(f + "." + k + " must be a string, not " + v.type_name());
    }
  }
  return ok_status();
}

Status check_labels(const json& m, const std::string& f) {
  CANOPY_RETURN_IF_ERROR(check_string_map(m, f));
  for (const auto& [k, v] : m.items()) {
    if (!is_label_key(k)) {
      return invalid_argument(f + " key " + quote(k) + " is not " + std::string(kLabelKeyRule));
    }
    const std::string& s = v.get_ref<const std::string&>();
    if (!is_label_value(s)) {
      return invalid_argument(f + "." + k + " " + quote(s) + " is not " +
                              std::string(kLabelValueRule));
    }
  }
  return ok_status();
}

StatusOr<json> patch_field(const json& doc, bool required) {
  const json* patch = field(doc, "patch");
  if (patch == nullptr) {
    if (required) return invalid_argument("patch is missing");
    return json::object();
  }
  if (!patch->is_object()) {
    return invalid_argument(std::string("patch must be an object (a JSON merge patch), not ") +
                            patch->type_name());
  }
  return *patch;
}

std::string string_or_empty(const json& doc, std::string_view name) {
  const json* f = field(doc, name);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

}  // namespace fields

using namespace fields;

StatusOr<SiteRecord> parse_site(std::string_view name, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "site record"));
  // Other fields (an address, enrollment details) describe the site and are
  // not read by any rule here.
  if (!is_dns1123_label(name)) {
    return invalid_argument("site name " + quote(name) + " is not " + std::string(kLabelRule));
  }
  SiteRecord out;
  out.name = std::string(name);
  if (const json* n = field(doc, "name")) {
    if (!n->is_string() || n->get_ref<const std::string&>() != name) {
      return invalid_argument("name " + n->dump() + " differs from the site's name " + quote(name));
    }
  }
  if (const json* labels = field(doc, "labels")) {
    CANOPY_RETURN_IF_ERROR(check_labels(*labels, "labels"));
    for (const auto& [k, v] : labels->items()) out.labels.emplace(k, v.get<std::string>());
  }
  if (const json* region = field(doc, "region")) {
    if (!region->is_string() || !is_dns1123_label(region->get_ref<const std::string&>())) {
      return invalid_argument("region " + region->dump() + " is not a regional hub's name (" +
                              std::string(kLabelRule) + ")");
    }
    out.region = region->get<std::string>();
    if (out.region == out.name) {
      return invalid_argument("region " + quote(out.region) + " is the site itself");
    }
  }
  return out;
}

json site_document(const SiteRecord& site) {
  json labels = json::object();
  for (const auto& [k, v] : site.labels) labels[k] = v;
  json doc = {{"name", site.name}, {"labels", std::move(labels)}};
  if (!site.region.empty()) doc["region"] = site.region;
  return doc;
}

StatusOr<SitePresence> parse_presence(const json& doc) {
  if (!doc.is_object()) return invalid_argument("presence: must be an object");
  SitePresence out;
  const auto hub = doc.find("hub");
  if (hub == doc.end() || !hub->is_string() || !is_dns1123_label(hub->get<std::string>())) {
    return invalid_argument("presence: hub must be a hub's name");
  }
  out.hub = hub->get<std::string>();
  const auto connected = doc.find("connected");
  if (connected == doc.end() || !connected->is_boolean()) {
    return invalid_argument("presence: connected must be true or false");
  }
  out.connected = connected->get<bool>();
  const auto since = doc.find("sinceMs");
  if (since == doc.end() || !since->is_number_unsigned()) {
    return invalid_argument("presence: sinceMs must be a non-negative integer");
  }
  out.since_ms = since->get<uint64_t>();
  return out;
}

json presence_document(const SitePresence& presence) {
  return {{"hub", presence.hub}, {"connected", presence.connected}, {"sinceMs", presence.since_ms}};
}

bool SiteChoice::matches(std::string_view site, const Labels& labels) const {
  return std::binary_search(sites.begin(), sites.end(), site) || selector.matches(labels);
}

namespace {

// A count field of the rollout: a non-negative integer below 2^31.
StatusOr<uint32_t> count_field(const json& doc, const char* name) {
  const json* f = field(doc, name);
  if (f == nullptr) return uint32_t{0};
  if (!f->is_number_integer() || f->get<int64_t>() < 0 || f->get<int64_t>() > INT32_MAX) {
    return invalid_argument(std::string("rollout.") + name +
                            " must be a non-negative integer, not " + f->dump());
  }
  return static_cast<uint32_t>(f->get<int64_t>());
}

// One entry of rollout.waves: a count of sites (a positive integer) or a
// percent of the targeted sites ("10%", 1 to 100).
StatusOr<WaveEnd> parse_wave(const json& w) {
  WaveEnd out;
  if (w.is_number_integer()) {
    if (w.get<int64_t>() < 1 || w.get<int64_t>() > INT32_MAX) {
      return invalid_argument("rollout.waves: a count of sites must be at least 1, not " +
                              w.dump());
    }
    out.count = static_cast<uint32_t>(w.get<int64_t>());
    return out;
  }
  if (w.is_string()) {
    const std::string& s = w.get_ref<const std::string&>();
    if (s.size() >= 2 && s.size() <= 4 && s.back() == '%' &&
        std::all_of(s.begin(), s.end() - 1, [](char c) { return c >= '0' && c <= '9'; })) {
      const int pct = std::atoi(s.c_str());
      if (pct >= 1 && pct <= 100) {
        out.percent = static_cast<uint32_t>(pct);
        return out;
      }
    }
  }
  return invalid_argument(
      "rollout.waves: each wave ends at a count of sites (1, 2, ...) or a percent of the "
      "targeted sites (\"1%\" to \"100%\"), not " +
      w.dump());
}

StatusOr<Rollout> parse_rollout(const json& doc) {
  if (!doc.is_object()) {
    return invalid_argument(std::string("rollout must be an object, not ") + doc.type_name());
  }
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"maxUnavailable", "maxFailures", "paused", "waves"}));
  Rollout out;
  auto unavailable = count_field(doc, "maxUnavailable");
  if (!unavailable.ok()) return unavailable.status();
  auto failures = count_field(doc, "maxFailures");
  if (!failures.ok()) return failures.status();
  out.max_unavailable = *unavailable;
  out.max_failures = *failures;
  if (const json* paused = field(doc, "paused")) {
    if (!paused->is_boolean()) return invalid_argument("rollout.paused must be true or false");
    out.paused = paused->get<bool>();
  }
  if (const json* waves = field(doc, "waves")) {
    constexpr size_t kMaxWaves = 100;
    if (!waves->is_array() || waves->empty() || waves->size() > kMaxWaves) {
      return invalid_argument("rollout.waves must be a list of 1 to " + std::to_string(kMaxWaves) +
                              " wave ends, such as [1, \"10%\", \"50%\"]");
    }
    for (const json& w : *waves) {
      auto end = parse_wave(w);
      if (!end.ok()) return end.status();
      // Counts grow, and percents grow: each wave must take more sites.
      for (const WaveEnd& before : out.waves) {
        if ((end->count != 0 && before.count >= end->count) ||
            (end->percent != 0 && before.percent >= end->percent)) {
          return invalid_argument("rollout.waves must grow: " + w.dump() +
                                  " comes after a wave that is not smaller");
        }
      }
      out.waves.push_back(*end);
    }
  }
  return out;
}

StatusOr<ApplyPolicy> parse_apply_policy(const json& doc) {
  if (!doc.is_object()) {
    return invalid_argument(std::string("apply must be an object, not ") + doc.type_name());
  }
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"forceConflicts", "drift"}));
  ApplyPolicy out;
  if (const json* force = field(doc, "forceConflicts")) {
    if (!force->is_boolean()) return invalid_argument("apply.forceConflicts must be true or false");
    out.force_conflicts = force->get<bool>();
  }
  if (const json* drift = field(doc, "drift")) {
    if (!drift->is_string() || (*drift != "repair" && *drift != "report")) {
      return invalid_argument("apply.drift must be \"repair\" or \"report\"");
    }
    out.report_drift = *drift == "report";
  }
  return out;
}

}  // namespace

StatusOr<Release> parse_release(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "release"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"revision"}));
  const std::string revision = string_or_empty(doc, "revision");
  if (revision.empty()) return invalid_argument("revision is missing");
  return Release{revision};
}

json release_document(const Release& release) { return {{"revision", release.revision}}; }

StatusOr<RolloutState> parse_rollout_state(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "rollout state"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"paused", "templates"}));
  RolloutState out;
  out.paused = string_or_empty(doc, "paused");
  const json* templates = field(doc, "templates");
  if (templates == nullptr) return out;
  if (!templates->is_array()) return invalid_argument("templates must be a list");
  for (const json& t : *templates) {
    CANOPY_RETURN_IF_ERROR(require_object(t, "templates[]"));
    CANOPY_RETURN_IF_ERROR(only_fields(t, {"template", "revision", "wave", "waves", "targeted",
                                           "released", "applied", "failed", "held"}));
    TemplateRollout r;
    r.template_name = string_or_empty(t, "template");
    if (!is_dns1123_label(r.template_name)) {
      return invalid_argument("templates[].template must be a template's name");
    }
    r.revision = string_or_empty(t, "revision");
    for (auto [name, out_count] : {std::pair<const char*, size_t*>{"wave", &r.wave},
                                   {"waves", &r.waves},
                                   {"targeted", &r.targeted},
                                   {"released", &r.released},
                                   {"applied", &r.applied},
                                   {"failed", &r.failed}}) {
      const json* v = field(t, name);
      if (v == nullptr) continue;
      if (!v->is_number_unsigned()) {
        return invalid_argument(std::string("templates[].") + name + " must be a count");
      }
      *out_count = v->get<size_t>();
    }
    if (const json* held = field(t, "held"); held != nullptr) {
      if (!held->is_array()) return invalid_argument("templates[].held must be a list");
      for (const json& h : *held) {
        if (!h.is_string()) return invalid_argument("templates[].held[] must be text");
        r.held.push_back(h.get<std::string>());
      }
    }
    out.templates.push_back(std::move(r));
  }
  return out;
}

json rollout_state_document(const RolloutState& state) {
  json templates = json::array();
  for (const TemplateRollout& t : state.templates) {
    templates.push_back({{"template", t.template_name},
                         {"revision", t.revision},
                         {"wave", t.wave},
                         {"waves", t.waves},
                         {"targeted", t.targeted},
                         {"released", t.released},
                         {"applied", t.applied},
                         {"failed", t.failed},
                         {"held", t.held}});
  }
  return {{"paused", state.paused}, {"templates", std::move(templates)}};
}

StatusOr<Hold> parse_hold(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "hold"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"untilMs", "reason"}));
  Hold out;
  const json* until = field(doc, "untilMs");
  if (until == nullptr) return invalid_argument("untilMs is missing (when the hold ends)");
  if (!until->is_number_unsigned() && !(until->is_number_integer() && *until > 0)) {
    return invalid_argument("untilMs must be a time in milliseconds since the epoch, not " +
                            until->dump());
  }
  out.until_ms = until->get<uint64_t>();
  if (const json* reason = field(doc, "reason")) {
    constexpr size_t kMaxReason = 1024;
    if (!reason->is_string() || reason->get_ref<const std::string&>().size() > kMaxReason) {
      return invalid_argument("reason must be a string of at most " + std::to_string(kMaxReason) +
                              " bytes");
    }
    out.reason = reason->get<std::string>();
  }
  return out;
}

json hold_document(const Hold& hold) {
  json doc = {{"untilMs", hold.until_ms}};
  if (!hold.reason.empty()) doc["reason"] = hold.reason;
  return doc;
}

StatusOr<Placement> parse_placement(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "placement"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"templates", "sites", "selector", "rollout", "apply"}));
  Placement out;
  const json* templates = field(doc, "templates");
  if (templates == nullptr) return invalid_argument("templates is missing");
  auto t = label_array(*templates, "templates");
  if (!t.ok()) return t.status();
  out.templates = std::move(t).value();
  auto choice = parse_choice(doc);
  if (!choice.ok()) return choice.status();
  out.choice = std::move(choice).value();
  if (const json* rollout = field(doc, "rollout")) {
    auto r = parse_rollout(*rollout);
    if (!r.ok()) return r.status();
    out.rollout = *r;
  }
  if (const json* apply = field(doc, "apply")) {
    auto a = parse_apply_policy(*apply);
    if (!a.ok()) return a.status();
    out.apply = *a;
  }
  if (out.choice.empty()) {
    return invalid_argument(
        "sites or selector is missing or empty (a placement must say which sites it targets)");
  }
  return out;
}

StatusOr<Override> parse_override(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "override"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"template", "patch", "sites", "selector"}));
  Override out;
  const json* t = field(doc, "template");
  if (t == nullptr) return invalid_argument("template is missing");
  if (!t->is_string()) {
    return invalid_argument(std::string("template must be a string, not ") + t->type_name());
  }
  if (!is_dns1123_label(t->get_ref<const std::string&>())) {
    return invalid_argument("template " + quote(t->get_ref<const std::string&>()) + " is not " +
                            std::string(kLabelRule));
  }
  out.template_name = t->get<std::string>();
  auto patch = patch_field(doc, /*required=*/true);
  if (!patch.ok()) return patch.status();
  out.patch = std::move(patch).value();
  auto choice = parse_choice(doc);
  if (!choice.ok()) return choice.status();
  out.choice = std::move(choice).value();
  return out;
}

StatusOr<LocalOverride> parse_local_override(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "local override"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"patch"}));
  auto patch = patch_field(doc, /*required=*/false);
  if (!patch.ok()) return patch.status();
  return LocalOverride{std::move(patch).value()};
}

Status validate_manifest(const json& m) {
  CANOPY_RETURN_IF_ERROR(require_object(m, "manifest"));
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
    return invalid_argument("metadata.name " + quote(name->get_ref<const std::string&>()) +
                            " is not " + std::string(kSubdomainRule));
  }
  if (const json* ns = field(*meta, "namespace")) {
    if (!ns->is_string()) {
      return invalid_argument(std::string("metadata.namespace must be a string, not ") +
                              ns->type_name());
    }
    if (!is_dns1123_label(ns->get_ref<const std::string&>())) {
      return invalid_argument("metadata.namespace " + quote(ns->get_ref<const std::string&>()) +
                              " is not " + std::string(kLabelRule));
    }
  }
  if (const json* labels = field(*meta, "labels")) {
    CANOPY_RETURN_IF_ERROR(check_labels(*labels, "metadata.labels"));
  }
  if (const json* ann = field(*meta, "annotations")) {
    CANOPY_RETURN_IF_ERROR(check_string_map(*ann, "metadata.annotations"));
  }
  return ok_status();
}

std::string_view outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::kApplied:
      return kOutcomeApplied;
    case Outcome::kFailed:
      return kOutcomeFailed;
    case Outcome::kRemoved:
      return kOutcomeRemoved;
  }
  return "?";
}

StatusOr<StatusReport> parse_status_report(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "status"));
  StatusReport out;
  out.template_key = string_or_empty(doc, "template");
  out.hash = string_or_empty(doc, "hash");
  out.message = string_or_empty(doc, "message");
  out.file = string_or_empty(doc, "file");
  out.revision = string_or_empty(doc, "revision");
  out.health = string_or_empty(doc, "health");
  out.health_message = string_or_empty(doc, "health_message");
  out.drift = string_or_empty(doc, "drift");
  const std::string outcome = string_or_empty(doc, "outcome");
  if (outcome == kOutcomeApplied) {
    out.outcome = Outcome::kApplied;
  } else if (outcome == kOutcomeFailed) {
    out.outcome = Outcome::kFailed;
  } else if (outcome == kOutcomeRemoved) {
    out.outcome = Outcome::kRemoved;
  } else {
    return invalid_argument("outcome " + quote(outcome) +
                            " is not one of applied, failed, removed");
  }
  return out;
}

json status_document(const StatusReport& r) {
  json out = {{"template", r.template_key},
              {"hash", r.hash},
              {"outcome", outcome_name(r.outcome)},
              {"message", r.message},
              {"file", r.file}};
  if (!r.revision.empty()) out["revision"] = r.revision;
  if (!r.health.empty()) out["health"] = r.health;
  if (!r.health_message.empty()) out["health_message"] = r.health_message;
  if (!r.drift.empty()) out["drift"] = r.drift;
  return out;
}

StatusOr<TenantRecord> parse_tenant(std::string_view name, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "tenant"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"name", "description"}));
  if (!is_dns1123_label(name)) {
    return invalid_argument("tenant name " + quote(name) + " is not " + std::string(kLabelRule));
  }
  TenantRecord out;
  out.name = std::string(name);
  if (const json* n = field(doc, "name")) {
    if (!n->is_string() || n->get_ref<const std::string&>() != name) {
      return invalid_argument("name " + n->dump() + " differs from the tenant's name " +
                              quote(name));
    }
  }
  if (const json* d = field(doc, "description")) {
    if (!d->is_string()) {
      return invalid_argument(std::string("description must be a string, not ") + d->type_name());
    }
    out.description = d->get<std::string>();
  }
  return out;
}

json tenant_document(const TenantRecord& t) {
  return {{"name", t.name}, {"description", t.description}};
}

StatusOr<Grant> parse_grant(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "grant"));
  CANOPY_RETURN_IF_ERROR(only_fields(doc, {"sites", "selector", "allSites"}));
  auto choice = parse_choice(doc);
  if (!choice.ok()) return choice.status();
  bool all_sites = false;
  if (const json* all = field(doc, "allSites")) {
    if (!all->is_boolean()) return invalid_argument("allSites must be true or false");
    all_sites = all->get<bool>();
  }
  if (all_sites && !choice->empty()) {
    return invalid_argument("allSites is true: sites and selector must be left out");
  }
  if (!all_sites && choice->empty()) {
    return invalid_argument(
        "sites, selector or allSites is missing or empty (a grant must say which sites it "
        "gives)");
  }
  return Grant{std::move(choice).value(), all_sites};
}

namespace fields {

StatusOr<uint64_t> millis_field(const json& doc, std::string_view name) {
  const json* f = field(doc, name);
  if (f == nullptr) return uint64_t{0};
  if (!f->is_number_unsigned() && !(f->is_number_integer() && f->get<int64_t>() >= 0)) {
    return invalid_argument(std::string(name) + " must be a non-negative integer (milliseconds " +
                            "since 1970), not " + f->dump());
  }
  return f->get<uint64_t>();
}

StatusOr<bool> bool_field(const json& doc, std::string_view name) {
  const json* f = field(doc, name);
  if (f == nullptr) return false;
  if (!f->is_boolean()) {
    return invalid_argument(std::string(name) + " must be a boolean, not " + f->type_name());
  }
  return f->get<bool>();
}

bool is_hex_digest(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace fields

StatusOr<TokenRecord> parse_token(std::string_view id, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "token"));
  CANOPY_RETURN_IF_ERROR(only_fields(
      doc, {"role", "tenant", "hash", "createdAtMs", "expiresAtMs", "revoked", "description"}));
  if (id.size() != kTokenIdChars || !std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return invalid_argument("token id " + quote(id) + " is not " + std::to_string(kTokenIdChars) +
                            " lowercase hex digits");
  }
  TokenRecord out;
  out.id = std::string(id);
  const json* role = field(doc, "role");
  if (role == nullptr) return invalid_argument("role is missing");
  if (!role->is_string()) {
    return invalid_argument(std::string("role must be a string, not ") + role->type_name());
  }
  auto r = parse_role(role->get_ref<const std::string&>());
  if (!r.ok()) return r.status();
  out.role = *r;
  out.tenant = string_or_empty(doc, "tenant");
  if (const json* t = field(doc, "tenant"); t != nullptr && !t->is_string()) {
    return invalid_argument(std::string("tenant must be a string, not ") + t->type_name());
  }
  if (out.role == Role::kFleetAdmin) {
    if (!out.tenant.empty()) {
      return invalid_argument("a fleet-admin token is bound to no tenant, not " +
                              quote(out.tenant));
    }
  } else if (!is_dns1123_label(out.tenant)) {
    return invalid_argument("tenant " + quote(out.tenant) + " of a " +
                            std::string(role_name(out.role)) + " token is not " +
                            std::string(kLabelRule));
  }
  out.hash = string_or_empty(doc, "hash");
  if (!is_hex_digest(out.hash)) {
    return invalid_argument("hash must be a SHA-256 digest in 64 lowercase hex digits");
  }
  auto created = millis_field(doc, "createdAtMs");
  if (!created.ok()) return created.status();
  out.created_at_ms = *created;
  auto expires = millis_field(doc, "expiresAtMs");
  if (!expires.ok()) return expires.status();
  out.expires_at_ms = *expires;
  auto revoked = bool_field(doc, "revoked");
  if (!revoked.ok()) return revoked.status();
  out.revoked = *revoked;
  if (const json* d = field(doc, "description")) {
    if (!d->is_string()) {
      return invalid_argument(std::string("description must be a string, not ") + d->type_name());
    }
    out.description = d->get<std::string>();
  }
  return out;
}

json token_document(const TokenRecord& t) {
  json doc = {{"role", role_name(t.role)},      {"hash", t.hash},
              {"createdAtMs", t.created_at_ms}, {"expiresAtMs", t.expires_at_ms},
              {"revoked", t.revoked},           {"description", t.description}};
  if (!t.tenant.empty()) doc["tenant"] = t.tenant;
  return doc;
}

size_t Rollout::wave_end(size_t i, size_t targeted) const {
  size_t end = 0;
  for (size_t w = 0; w <= i && w < waves.size(); ++w) {
    const size_t n =
        waves[w].count != 0 ? waves[w].count : (targeted * waves[w].percent + 99) / 100;
    end = std::max(end, std::min(n, targeted));
  }
  return i >= waves.size() ? targeted : end;
}

}  // namespace canopy::model
