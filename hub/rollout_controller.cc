#include "hub/rollout_controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "hub/template_revisions.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"

namespace canopy::hub {
namespace {

using json = nlohmann::json;

constexpr size_t kScanPage = 1000;

// The document at `key` as JSON; nullopt when absent, deleted or unreadable.
std::optional<json> read(Store* store, const std::string& key) {
  auto text = store->get(key);
  if (!text.ok()) return std::nullopt;
  json doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded()) return std::nullopt;
  return doc;
}

// Keys of every placement and rollout state document, tenant by tenant
// (templates and the rest skipped by jumping over each tenant's other ranges).
struct CatalogueKeys {
  std::vector<std::string> placements;
  std::vector<std::string> rollouts;
};
Status scan_kind(Store* store, const std::string& tenant, std::string_view kind,
                 model::KeyKind want, std::vector<std::string>* out) {
  const std::string prefix = model::tenant_kind_prefix(tenant, kind);
  std::string after;
  while (true) {
    auto keys = store->scan(prefix, after, kScanPage);
    if (!keys.ok()) return keys.status();
    for (auto& item : keys->items) {
      if (model::parse_key(item.key).kind == want) out->push_back(std::move(item.key));
    }
    if (keys->next_after.empty()) return ok_status();
    after = keys->next_after;
  }
}
StatusOr<CatalogueKeys> catalogue_keys(Store* store) {
  CatalogueKeys out;
  const std::string end = std::string(model::kTenantsPrefix) + "\x7f";
  std::string cursor(model::kTenantsPrefix);
  while (true) {
    auto page = store->states(cursor, end, nullptr, 1);
    if (!page.ok()) return page.status();
    if (page->empty()) return out;
    const std::string& first = page->front().key();
    const std::string_view rest = std::string_view(first).substr(model::kTenantsPrefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      cursor = first + '\0';
      continue;
    }
    const std::string tenant(rest.substr(0, slash));
    CANOPY_RETURN_IF_ERROR(
        scan_kind(store, tenant, "placement", model::KeyKind::kPlacement, &out.placements));
    CANOPY_RETURN_IF_ERROR(
        scan_kind(store, tenant, "rollout", model::KeyKind::kRollout, &out.rollouts));
    cursor = std::string(model::kTenantsPrefix) + tenant + "/\x7f";
  }
}

}  // namespace

std::optional<model::Hold> RolloutController::hold_of(const std::string& site) {
  auto page = store_->scan(model::holds_prefix(site), "", kScanPage);
  if (!page.ok()) return std::nullopt;
  std::optional<model::Hold> out;
  const uint64_t now = clock_->now_ms();
  for (const auto& item : page->items) {
    const json doc = json::parse(item.json, nullptr, false);
    auto hold = model::parse_hold(doc);
    // A hold the model refuses holds nothing: the spoke's API checks it first.
    if (!hold.ok() || !hold->active(now)) continue;
    if (!out || hold->until_ms > out->until_ms) out = *hold;
  }
  return out;
}

StatusOr<RolloutStep> RolloutController::step() {
  RolloutStep out;
  auto keys = catalogue_keys(store_);
  if (!keys.ok()) return keys.status();
  std::set<std::string> live;  // rollout state keys of placements with a policy
  for (const auto& key : keys->placements) {
    CANOPY_RETURN_IF_ERROR(step_placement(key, &out, &live));
  }
  // A placement deleted, or whose policy was removed, has no rollout.
  for (const auto& key : keys->rollouts) {
    if (live.contains(key)) continue;
    auto removed = store_->remove(key);
    if (!removed.ok() && removed.status().code() != StatusCode::kNotFound) {
      return removed.status();
    }
    written_.erase(key);
  }
  return out;
}

Status RolloutController::save_state(const std::string& key, const model::RolloutState& state) {
  if (auto it = written_.find(key); it != written_.end() && it->second == state) {
    return ok_status();
  }
  // After a restart: the document may already say this.
  if (!written_.contains(key)) {
    if (auto doc = read(store_, key)) {
      auto saved = model::parse_rollout_state(*doc);
      if (saved.ok() && *saved == state) {
        written_[key] = state;
        return ok_status();
      }
    }
  }
  auto w = store_->put_value(key, model::rollout_state_document(state));
  if (!w.ok()) return w.status();
  written_[key] = state;
  return ok_status();
}

Status RolloutController::step_placement(const std::string& key, RolloutStep* out,
                                         std::set<std::string>* live) {
  auto doc = read(store_, key);
  if (!doc) return ok_status();
  auto placement = model::parse_placement(*doc);
  if (!placement.ok() || !placement->rollout.enabled()) return ok_status();
  ++out->placements;
  const model::ParsedKey k = model::parse_key(key);
  const std::string tenant(k.tenant);
  const std::string name = tenant + "/" + std::string(k.name);
  const model::Rollout& policy = placement->rollout;
  const std::vector<std::string> sites = index_->sites_for(key);  // name order
  const std::string state_key = model::rollout_key(tenant, k.name);
  live->insert(state_key);
  model::RolloutState state;

  std::string why_paused;
  for (const auto& t : placement->templates) {
    // The revision each site should apply: the template's, changed by the
    // hub overrides of it that apply to the site (a changed override rolls
    // out as a changed template does).
    auto revisions = TemplateRevisions::read(store_, index_, tenant, t);
    if (!revisions.ok()) continue;  // no such template: the sites report it failed
    model::TemplateRollout& progress = state.templates.emplace_back();
    progress.template_name = t;
    progress.revision = revisions->base();
    progress.targeted = sites.size();
    size_t in_flight = 0, failed = 0;
    std::vector<bool> done(sites.size(), false);  // applied this revision
    std::vector<size_t> waiting;                  // not released this revision, in order
    std::vector<std::string> revision(sites.size());
    for (size_t i = 0; i < sites.size(); ++i) {
      const std::string& site = sites[i];
      revision[i] = revisions->at(site);
      auto release = read(store_, model::release_key(site, tenant, t));
      auto parsed = release ? model::parse_release(*release)
                            : StatusOr<model::Release>(not_found("no release"));
      if (!parsed.ok() || parsed->revision != revision[i]) {
        waiting.push_back(i);
        continue;
      }
      ++progress.released;
      auto status = read(store_, model::status_key(site, tenant, t));
      auto report = status ? model::parse_status_report(*status)
                           : StatusOr<model::StatusReport>(not_found("no status"));
      const bool at_revision = report.ok() && report->revision == revision[i];
      if (at_revision && report->outcome == model::Outcome::kApplied) {
        // Applied, and healthy where the site reads health back (the kube
        // applier): a wave advances only over healthy sites.
        done[i] = report->health.empty() || report->health == "healthy";
        if (done[i]) {
          ++progress.applied;
          continue;
        }
      }
      ++in_flight;
      if (at_revision && report->outcome == model::Outcome::kFailed) ++failed;
    }
    progress.failed = failed;
    // The waves (those that hold at least one site more than the one before),
    // and the current one: the first whose sites have not all applied it.
    // Only its sites (and those of the waves before it) may be released.
    size_t wave_end = sites.size();
    size_t previous_end = 0;
    bool current_found = false;
    for (size_t w = 0; w <= policy.waves.size(); ++w) {
      const size_t end = policy.wave_end(w, sites.size());
      if (end <= previous_end) continue;
      previous_end = end;
      ++progress.waves;
      if (current_found) continue;
      progress.wave = progress.waves;
      if (!std::all_of(done.begin(), done.begin() + static_cast<std::ptrdiff_t>(end),
                       [](bool d) { return d; })) {
        wave_end = end;
        current_found = true;
      }
    }
    if (policy.paused) {
      why_paused = "paused by its policy";
      continue;
    }
    if (failed > policy.max_failures) {
      why_paused = "template " + t + ": " + std::to_string(failed) +
                   " sites failed the new revision (maxFailures " +
                   std::to_string(policy.max_failures) + ")";
      continue;
    }
    size_t slots = SIZE_MAX;
    if (policy.max_unavailable > 0) {
      slots = policy.max_unavailable > in_flight ? policy.max_unavailable - in_flight : 0;
    }
    for (size_t i : waiting) {
      if (slots == 0 || i >= wave_end) break;
      const std::string& site = sites[i];
      if (auto hold = hold_of(site)) {
        const std::string why = site + ": held until " + std::to_string(hold->until_ms) +
                                (hold->reason.empty() ? "" : " (" + hold->reason + ")");
        out->held.push_back(why);
        progress.held.push_back(why);
        out->next_hold_end_ms = std::min(out->next_hold_end_ms, hold->until_ms);
        continue;
      }
      auto w = store_->put_value(model::release_key(site, tenant, t),
                                 model::release_document(model::Release{revision[i]}));
      if (!w.ok()) return w.status();
      ++out->released;
      ++progress.released;
      --slots;
      spdlog::info("rollout {}: released template {} revision {} to site {}", name, t, revision[i],
                   site);
    }
  }
  state.paused = why_paused;
  CANOPY_RETURN_IF_ERROR(save_state(state_key, state));
  const auto logged = std::find(paused_logged_.begin(), paused_logged_.end(), name);
  if (!why_paused.empty()) {
    out->paused.push_back(name + ": " + why_paused);
    if (logged == paused_logged_.end()) {
      spdlog::warn("rollout {} is paused: {}", name, why_paused);
      paused_logged_.push_back(name);
    }
  } else if (logged != paused_logged_.end()) {
    paused_logged_.erase(logged);
  }
  return ok_status();
}

}  // namespace canopy::hub
