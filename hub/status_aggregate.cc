#include "hub/status_aggregate.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "hub/template_revisions.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"

namespace canopy::hub {
namespace {

using json = nlohmann::json;

constexpr std::string_view kKeyEnd = kKeyMax;

enum class KeyKind { kNone, kSite, kPlacement, kStatus, kGrant };

// `sites/<site>`, `sites/<site>/status/<tenant>/<template>`,
// `t/<tenant>/placements/<name>` or `t/<tenant>/grants/<name>` (model/keys.h);
// parts[] gets the names in that order.
KeyKind classify(std::string_view key, std::string_view parts[4]) {
  const model::ParsedKey k = model::parse_key(key);
  switch (k.kind) {
    case model::KeyKind::kSite:
      parts[0] = k.site;
      return KeyKind::kSite;
    case model::KeyKind::kStatus:
      parts[0] = k.site;
      parts[1] = k.tenant;
      parts[2] = k.name;
      return KeyKind::kStatus;
    case model::KeyKind::kPlacement:
      parts[0] = k.tenant;
      parts[1] = k.name;
      return KeyKind::kPlacement;
    case model::KeyKind::kGrant:
      parts[0] = k.tenant;
      parts[1] = k.name;
      return KeyKind::kGrant;
    default:
      return KeyKind::kNone;
  }
}

using model::placement_key;
using model::site_key;
using model::status_key;

std::string template_ref(std::string_view tenant, std::string_view tmpl) {
  return std::string(tenant) + "/" + std::string(tmpl);
}

// The placement's template names as the model reads them (sorted, unique);
// none for a placement the model refuses, which the index matches nowhere.
std::vector<std::string> templates_of(const Document& doc) {
  if (!doc.exists()) return {};
  auto placement = model::parse_placement(doc.to_value());
  if (!placement.ok()) return {};
  return std::move(placement->templates);
}

const char* state_name(int state) {
  static const char* const kNames[] = {"pending", "applied", "failed"};
  return kNames[state];
}

}  // namespace

StatusAggregate::StatusAggregate(Store* store, PlacementIndex* index)
    : store_(store), index_(index) {}

StatusAggregate::~StatusAggregate() {
  if (subscription_ != 0) store_->unsubscribe(subscription_);
}

StatusOr<std::unique_ptr<StatusAggregate>> StatusAggregate::attach(Store* store,
                                                                   PlacementIndex* index) {
  std::unique_ptr<StatusAggregate> aggregate(new StatusAggregate(store, index));
  StatusAggregate* a = aggregate.get();
  aggregate->subscription_ = store->subscribe([a](const v1::LogEntry& e) { a->on_commit(e); });
  CANOPY_RETURN_IF_ERROR(aggregate->load());
  return aggregate;
}

Status StatusAggregate::load() {
  // Subscribed first: a change landing while this reads is joined either way.
  auto read = [this](std::string_view prefix, KeyKind want) -> Status {
    const std::string end = std::string(prefix) + std::string(kKeyEnd);
    auto is_wanted = [want](std::string_view k) {
      std::string_view parts[4];
      return classify(k, parts) == want;
    };
    std::string from(prefix);
    while (true) {
      auto page = store_->states(from, end, is_wanted, kLoadPageSize);
      if (!page.ok()) return page.status();
      {
        std::lock_guard lock(mu_);
        for (const auto& st : *page) {
          docs_[st.key()].merge(st.root());
          reread_status(st.key());
        }
      }
      if (page->size() < kLoadPageSize) return ok_status();
      from = page->back().key() + '\0';
    }
  };
  CANOPY_RETURN_IF_ERROR(read(model::kTenantsPrefix, KeyKind::kPlacement));
  CANOPY_RETURN_IF_ERROR(read(model::kSitesPrefix, KeyKind::kStatus));

  std::lock_guard lock(mu_);
  for (const auto& [key, doc] : docs_) {
    std::string_view parts[4];
    if (classify(key, parts) == KeyKind::kPlacement) placement_changed(key, parts[0]);
  }
  loaded_ = true;
  return ok_status();
}

void StatusAggregate::on_commit(const v1::LogEntry& entry) {
  const std::string* key = nullptr;
  if (entry.has_delta()) {
    key = &entry.delta().key();
  } else if (entry.has_doc()) {
    key = &entry.doc().key();
  } else {
    return;
  }
  std::string_view parts[4];
  const KeyKind kind = classify(*key, parts);
  if (kind == KeyKind::kNone) return;
  std::lock_guard lock(mu_);
  if (kind == KeyKind::kGrant) {
    // Which sites the tenant's placements target may have changed (the index,
    // subscribed first, has evaluated the grant already); the grant itself is
    // not kept.
    if (!loaded_) return;
    const std::string prefix = "t/" + std::string(parts[0]) + "/placements/";
    std::vector<std::string> keys;
    for (const auto& [k, p] : placements_) {
      if (k.starts_with(prefix)) keys.push_back(k);
    }
    for (const auto& k : keys) placement_changed(k, parts[0]);
    return;
  }
  if (kind != KeyKind::kSite) {
    Document& doc = docs_[*key];
    if (entry.index() == 0) {
      doc = Document();  // dropped locally
    } else if (entry.has_delta()) {
      doc.apply(entry.delta(), nullptr);
    } else {
      doc.merge(entry.doc().root());
    }
    reread_status(*key);
  }
  if (!loaded_) return;
  switch (kind) {
    case KeyKind::kSite:
      site_changed(parts[0]);
      break;
    case KeyKind::kPlacement:
      placement_changed(*key, parts[0]);
      break;
    case KeyKind::kStatus:
      status_changed(*key, parts[0], parts[1], parts[2]);
      break;
    case KeyKind::kGrant:
    case KeyKind::kNone:
      break;
  }
}

// Re-derives what is read from a status document after its copy changed.
void StatusAggregate::reread_status(const std::string& key) {
  std::string_view parts[4];
  if (classify(key, parts) != KeyKind::kStatus) return;
  const Document& doc = docs_.at(key);
  const json v = doc.exists() ? doc.to_value() : json();
  if (!v.is_object()) {
    reported_.erase(key);
    return;
  }
  auto str = [&v](const char* f) {
    auto it = v.find(f);
    return it != v.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  reported_[key] = Reported{str("outcome"), str("message"),        str("hash"), str("revision"),
                            str("health"),  str("health_message"), str("drift")};
}

void StatusAggregate::placement_changed(const std::string& key, std::string_view tenant) {
  Placement& p = placements_[key];
  p.tenant = std::string(tenant);
  index_templates(key, p, false);
  const Document& doc = docs_[key];
  p.exists = doc.exists();
  p.templates = templates_of(doc);
  index_templates(key, p, true);
  refresh_sites(key, &p);
  for (auto& [site, state] : p.sites) {
    const State now = state_of(p, site);
    p.counts[static_cast<int>(state)] -= 1;
    p.counts[static_cast<int>(now)] += 1;
    state = now;
  }
  if (!p.exists && p.sites.empty()) placements_.erase(key);
}

void StatusAggregate::status_changed(const std::string&, std::string_view site,
                                     std::string_view tenant, std::string_view tmpl) {
  auto it = placements_by_template_.find(template_ref(tenant, tmpl));
  if (it == placements_by_template_.end()) return;
  for (const auto& key : it->second) {
    Placement& p = placements_.at(key);
    auto s = p.sites.find(std::string(site));
    if (s != p.sites.end()) set_state(&p, s->first, state_of(p, site));
  }
}

void StatusAggregate::site_changed(std::string_view site) {
  const std::vector<std::string> now = index_->placements_of(site);
  std::set<std::string>& held = placements_of_site_[std::string(site)];
  const std::set<std::string> before = held;
  const std::string name(site);
  for (const auto& key : before) {
    if (std::binary_search(now.begin(), now.end(), key)) continue;
    held.erase(key);
    auto it = placements_.find(key);
    if (it != placements_.end()) set_state(&it->second, name, std::nullopt);
  }
  for (const auto& key : now) {
    if (before.contains(key)) continue;
    auto it = placements_.find(key);
    if (it == placements_.end()) {
      std::string_view parts[4];
      if (classify(key, parts) == KeyKind::kPlacement) placement_changed(key, parts[0]);
      continue;
    }
    held.insert(key);
    set_state(&it->second, name, state_of(it->second, site));
  }
  if (held.empty()) placements_of_site_.erase(name);
}

// Brings the placement's targeted sites in line with the index (new sites
// start pending; their state is set by the caller or set_state).
void StatusAggregate::refresh_sites(const std::string& key, Placement* p) {
  const std::vector<std::string> now = index_->sites_for(key);
  std::vector<std::string> gone;
  for (const auto& [site, state] : p->sites) {
    if (!std::binary_search(now.begin(), now.end(), site)) gone.push_back(site);
  }
  for (const auto& site : gone) {
    set_state(p, site, std::nullopt);
    auto held = placements_of_site_.find(site);
    if (held != placements_of_site_.end()) {
      held->second.erase(key);
      if (held->second.empty()) placements_of_site_.erase(held);
    }
  }
  for (const auto& site : now) {
    if (p->sites.contains(site)) continue;
    placements_of_site_[site].insert(key);
    set_state(p, site, State::kPending);
  }
}

void StatusAggregate::set_state(Placement* p, const std::string& site, std::optional<State> state) {
  auto it = p->sites.find(site);
  if (it != p->sites.end()) {
    p->counts[static_cast<int>(it->second)] -= 1;
    if (!state) {
      p->sites.erase(it);
      return;
    }
    it->second = *state;
  } else {
    if (!state) return;
    p->sites.emplace(site, *state);
  }
  p->counts[static_cast<int>(*state)] += 1;
}

StatusAggregate::State StatusAggregate::state_of(const Placement& p, std::string_view site) const {
  bool all_applied = true;
  for (const auto& t : p.templates) {
    const Reported* r = reported(site, p.tenant, t);
    const std::string_view outcome = r != nullptr ? std::string_view(r->outcome) : "";
    if (outcome == "failed") return State::kFailed;
    all_applied = all_applied && outcome == "applied";
  }
  return all_applied ? State::kApplied : State::kPending;
}

const StatusAggregate::Reported* StatusAggregate::reported(std::string_view site,
                                                           std::string_view tenant,
                                                           std::string_view tmpl) const {
  auto it = reported_.find(status_key(site, tenant, tmpl));
  return it == reported_.end() ? nullptr : &it->second;
}

void StatusAggregate::index_templates(const std::string& key, const Placement& p, bool add) {
  for (const auto& t : p.templates) {
    const std::string ref = template_ref(p.tenant, t);
    if (add) {
      placements_by_template_[ref].insert(key);
    } else if (auto it = placements_by_template_.find(ref); it != placements_by_template_.end()) {
      it->second.erase(key);
      if (it->second.empty()) placements_by_template_.erase(it);
    }
  }
}

StatusOr<v1::GetStatusResponse> StatusAggregate::placement_status(std::string_view tenant,
                                                                  std::string_view name,
                                                                  const std::string& page_token,
                                                                  size_t page_size,
                                                                  const LivenessOf& liveness_of) {
  const std::string key = placement_key(tenant, name);
  v1::GetStatusResponse response;
  // The templates' current revisions, read before taking mu_: the store
  // calls on_commit (which takes mu_) with its own lock held.
  std::vector<std::string> templates;
  std::vector<std::string> targeted;  // asked for their liveness (which reads the store)
  {
    std::lock_guard lock(mu_);
    auto it = placements_.find(key);
    if (it != placements_.end()) {
      templates = it->second.templates;
      if (liveness_of) {
        targeted.reserve(it->second.sites.size());
        for (const auto& [site, state] : it->second.sites) targeted.push_back(site);
      }
    }
  }
  // A site that became targeted since counts as without a session.
  Liveness live_map;
  for (const auto& site : targeted) {
    if (auto l = liveness_of(site)) live_map.emplace(site, *l);
  }
  const Liveness* liveness = liveness_of ? &live_map : nullptr;
  // The rollout controller's record (docs/rollouts.md), one point read.
  if (auto text = store_->get(model::rollout_key(tenant, name)); text.ok()) {
    auto state = model::parse_rollout_state(json::parse(*text, nullptr, false));
    if (state.ok()) {
      v1::RolloutProgress* rollout = response.mutable_rollout();
      rollout->set_paused(state->paused);
      for (const model::TemplateRollout& t : state->templates) {
        v1::TemplateRollout* r = rollout->add_templates();
        r->set_template_(t.template_name);
        r->set_revision(t.revision);
        r->set_wave(static_cast<uint32_t>(t.wave));
        r->set_waves(static_cast<uint32_t>(t.waves));
        r->set_targeted(static_cast<uint32_t>(t.targeted));
        r->set_released(static_cast<uint32_t>(t.released));
        r->set_applied(static_cast<uint32_t>(t.applied));
        r->set_failed(static_cast<uint32_t>(t.failed));
        for (const auto& h : t.held) r->add_held(h);
      }
    }
  }
  // Template name -> the revision each site should report (its template and
  // the hub overrides of it that apply there).
  std::unordered_map<std::string, TemplateRevisions> revisions;
  for (const auto& t : templates) {
    auto r = TemplateRevisions::read(store_, index_, tenant, t);
    if (r.ok()) revisions.emplace(t, std::move(r).value());
  }
  auto current = [&revisions](const std::string& site, const std::string& t, const Reported* r) {
    // An outcome without a revision (a spoke before revisions) counts as current.
    if (r == nullptr || r->revision.empty()) return true;
    auto it = revisions.find(t);
    return it != revisions.end() && it->second.at(site) == r->revision;
  };
  std::lock_guard lock(mu_);
  auto it = placements_.find(key);
  if (it == placements_.end() || !it->second.exists) {
    return not_found("placement " + json(std::string(name)).dump() + " of tenant " +
                     json(std::string(tenant)).dump() + " not found");
  }
  const Placement& p = it->second;
  uint32_t counts[3] = {p.counts[0], p.counts[1], p.counts[2]};
  uint32_t offline = 0, progressing = 0;
  // Applied everywhere, but some template at an older revision.
  auto behind = [&](const std::string& site) {
    for (const auto& t : p.templates) {
      if (!current(site, t, reported(site, p.tenant, t))) return true;
    }
    return false;
  };
  auto live = [liveness](const std::string& site) -> const SiteLiveness* {
    if (liveness == nullptr) return nullptr;
    auto l = liveness->find(site);
    return l == liveness->end() ? nullptr : &l->second;
  };
  if (liveness != nullptr) {
    for (const auto& [site, state] : p.sites) {
      const SiteLiveness* l = live(site);
      if (l != nullptr && l->connected) continue;
      ++offline;
      --counts[static_cast<int>(state)];
    }
  }
  // Only applied sites can be behind; their count is what the revision
  // check costs (templates read once above).
  for (const auto& [site, state] : p.sites) {
    if (state != State::kApplied) continue;
    if (const SiteLiveness* l = live(site);
        liveness != nullptr && (l == nullptr || !l->connected)) {
      continue;  // counted offline
    }
    if (behind(site)) {
      ++progressing;
      --counts[static_cast<int>(State::kApplied)];
    }
  }
  response.set_targeted(static_cast<uint32_t>(p.sites.size()));
  response.set_applied(counts[static_cast<int>(State::kApplied)]);
  response.set_failed(counts[static_cast<int>(State::kFailed)]);
  response.set_pending(counts[static_cast<int>(State::kPending)]);
  response.set_offline(offline);
  response.set_progressing(progressing);
  for (auto s = p.sites.upper_bound(page_token); s != p.sites.end(); ++s) {
    if (static_cast<size_t>(response.sites_size()) == page_size) {
      if (page_size > 0) response.set_next_page_token(response.sites().rbegin()->site());
      break;
    }
    v1::SiteStatus* row = response.add_sites();
    row->set_site(s->first);
    const std::string state = s->second == State::kApplied && behind(s->first)
                                  ? "progressing"
                                  : state_name(static_cast<int>(s->second));
    const SiteLiveness* l = live(s->first);
    if (liveness != nullptr && (l == nullptr || !l->connected)) {
      row->set_state("offline");
      row->set_last_state(state);
    } else {
      row->set_state(state);
      row->set_connected(liveness != nullptr);
    }
    if (l != nullptr) row->set_last_seen_ms(l->last_seen_ms);
    for (const auto& t : p.templates) {
      v1::TemplateStatus* ts = row->add_templates();
      ts->set_template_(t);
      const Reported* r = reported(s->first, p.tenant, t);
      ts->set_outcome(r != nullptr && !r->outcome.empty() ? r->outcome : "pending");
      if (r != nullptr) {
        ts->set_message(r->message);
        ts->set_hash(r->hash);
        ts->set_revision(r->revision);
        ts->set_current(!r->outcome.empty() && current(s->first, t, r));
        ts->set_health(r->health);
        ts->set_health_message(r->health_message);
        ts->set_drift(r->drift);
      }
    }
  }
  return response;
}

}  // namespace canopy::hub
