#include "spoke/reconciler.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>

#include "store/store.h"

namespace canopy::spoke {

using nlohmann::json;

namespace {

constexpr size_t kScanPage = 512;
// Below this many items, bulk work stays on the caller's thread: threads cost
// more than they save, and the steady state (nothing changed) never pays them.
constexpr size_t kParallelMin = 64;
constexpr size_t kMaxThreads = 8;

// Runs fn(i) for every i in [0, n), on up to `threads` threads (the caller's
// included) when n is large enough.
template <typename Fn>
void parallel_for(size_t n, size_t threads, const Fn& fn) {
  if (threads <= 1 || n < kParallelMin) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  const size_t extra = std::min(threads, n / (kParallelMin / 2)) - 1;
  pool.reserve(extra);
  for (size_t t = 0; t < extra; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

uint64_t hash_text(std::string_view s, uint64_t seed = 0) {
  return XXH3_64bits_withSeed(s.data(), s.size(), seed);
}

std::string string_field(const json& doc, const char* name) {
  if (!doc.is_object()) return "";
  auto it = doc.find(name);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json status_doc(const std::string& tk, const std::string& hash, model::Outcome outcome,
                const std::string& message, const std::string& file, const std::string& revision,
                const ApplyOutcome* applied = nullptr) {
  model::StatusReport r{tk, hash, outcome, message, file, revision, {}, {}, {}};
  if (applied != nullptr) {
    r.health = applied->health;
    r.health_message = applied->health_message;
    r.drift = applied->drift;
  }
  return model::status_document(r);
}

}  // namespace

Reconciler::Reconciler(Store* store, std::string site, Applier* applier, ReconcilerOptions options)
    : store_(store),
      site_{std::move(site), {}, {}},
      applier_(applier),
      limits_(options.limits),
      threads_(options.threads != 0
                   ? options.threads
                   : std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxThreads)),
      store_write_threads_(std::max<size_t>(options.store_write_threads, 1)),
      may_prune_(std::move(options.may_prune)) {}

Status Reconciler::refresh_site() {
  auto text = store_->get(model::site_key(site_.name));
  if (!text.ok()) {
    if (text.status().code() != StatusCode::kNotFound) return text.status();
    site_known_ = false;
    site_error_ = "site record " + model::site_key(site_.name) +
                  " has not reached this site yet: nothing is rendered or removed until it does";
    return ok_status();
  }
  auto doc = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto record = doc.is_discarded() ? StatusOr<model::SiteRecord>(invalid_argument("not JSON"))
                                   : model::parse_site(site_.name, doc);
  if (!record.ok()) {
    site_known_ = false;
    site_error_ = "site record " + model::site_key(site_.name) + ": " + record.status().message();
    return ok_status();
  }
  site_known_ = true;
  site_error_.clear();
  site_.labels = std::move(record->labels);
  return ok_status();
}

Status Reconciler::refresh_desired() {
  ++generation_;
  struct Changed {
    std::string key;
    std::string text;
    model::DesiredKind kind;
    uint64_t hash;
    json doc;
  };
  std::vector<Changed> changed;
  for (const std::string& prefix : model::desired_prefixes(site_.name)) {
    std::string after;
    while (true) {
      auto page = store_->scan(prefix, after, kScanPage);
      if (!page.ok()) return page.status();
      for (ScanItem& item : page->items) {
        model::DesiredKind kind = model::desired_kind(item.key, site_.name);
        if (kind == model::DesiredKind::kNone) continue;
        const uint64_t h = hash_text(item.json);
        Seen& seen = seen_[item.key];
        seen.generation = generation_;
        if (seen.text_hash == h && h != 0) continue;
        changed.push_back(Changed{std::move(item.key), std::move(item.json), kind, h, json()});
      }
      if (page->next_after.empty()) break;
      after = std::move(page->next_after);
    }
  }
  parallel_for(changed.size(), threads_, [&](size_t i) {
    changed[i].doc = json::parse(changed[i].text, nullptr, /*allow_exceptions=*/false);
  });
  for (Changed& c : changed) {
    if (c.doc.is_discarded() || !c.doc.is_object()) {
      seen_.erase(c.key);
      return data_loss("document " + c.key + " is not a JSON object");
    }
    seen_[c.key].text_hash = c.hash;
    model::put_desired(&desired_, c.kind, c.key, std::move(c.doc));
    ++stats_.documents_parsed;
  }
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (it->second.generation == generation_) {
      ++it;
      continue;
    }
    model::erase_desired(&desired_, model::desired_kind(it->first, site_.name), it->first);
    it = seen_.erase(it);
  }
  return ok_status();
}

std::string Reconciler::revision_of(const std::string& template_key) const {
  if (auto r = revisions_.find(template_key); r != revisions_.end()) return r->second;
  // seen_ holds XXH3 (seed 0) of each document's canonical text, which is
  // what model::template_revision hashes.
  auto it = seen_.find(template_key);
  return it == seen_.end() ? std::string() : model::template_revision(it->second.text_hash);
}

std::string Reconciler::revision_of(const model::ObjectPlan& plan) const {
  auto it = seen_.find(plan.template_key);
  if (it == seen_.end()) return std::string();
  std::vector<uint64_t> overrides;
  overrides.reserve(plan.override_keys.size());
  for (const std::string& k : plan.override_keys) {
    auto o = seen_.find(k);
    overrides.push_back(o == seen_.end() ? 0 : o->second.text_hash);
  }
  return model::template_revision(it->second.text_hash, overrides);
}

uint64_t Reconciler::fingerprint(const model::ObjectPlan& plan) const {
  auto text_hash = [&](const std::string& key) {
    auto it = seen_.find(key);
    return it == seen_.end() ? 0 : it->second.text_hash;
  };
  uint64_t fp = hash_text(plan.template_key, text_hash(plan.template_key));
  for (const std::string& k : plan.override_keys) fp = hash_text(k, fp ^ text_hash(k));
  fp = hash_text(plan.local_override_key, fp ^ text_hash(plan.local_override_key));
  return fp;
}

Status Reconciler::reconcile_once() {
  stats_ = ReconcileStats{};
  Status first_error;
  auto note = [&](const Status& st) {
    if (!st.ok() && first_error.ok()) first_error = st;
  };

  CANOPY_RETURN_IF_ERROR(refresh_desired());
  CANOPY_RETURN_IF_ERROR(refresh_site());

  // Plan and render, reusing the renders whose inputs did not change.
  // Rendered by the hub's record of the site (its labels), as the hub's
  // index chose its scope; without a record, nothing is known for sure.
  model::SitePlan plan;
  if (site_known_) {
    plan = model::plan_site(site_, desired_, limits_);
  } else {
    plan.failures.push_back(model::RenderFailure{model::site_key(site_.name), "", "", site_error_});
  }
  failures_ = std::move(plan.failures);
  revisions_.clear();
  for (const model::ObjectPlan& p : plan.objects) revisions_[p.template_key] = revision_of(p);
  std::set<std::string> global_now;
  for (const model::RenderFailure& f : failures_) {
    if (!f.template_name.empty()) continue;
    ++stats_.global_failures;
    global_now.insert(f.error);
    if (!logged_global_.count(f.error)) spdlog::warn("spoke {}: {}", site_.name, f.error);
  }
  logged_global_ = std::move(global_now);

  std::map<std::string, Memo> memo;
  std::vector<std::pair<const model::ObjectPlan*, Memo*>> misses;
  for (const model::ObjectPlan& p : plan.objects) {
    const uint64_t fp = fingerprint(p);
    auto old = memo_.find(p.template_key);
    Memo& m = memo[p.template_key];
    if (old != memo_.end() && old->second.fingerprint == fp) {
      m = std::move(old->second);
    } else {
      m.fingerprint = fp;
      misses.emplace_back(&p, &m);
    }
  }
  stats_.renders_computed = misses.size();
  // Templates are held as keys only between passes (their documents are most
  // of what a spoke would keep in memory): a render reads its template again
  // unless this pass parsed it already. Each plan names a distinct template,
  // so each worker fills in its own entry of the map.
  std::vector<Status> loads(misses.size());
  parallel_for(misses.size(), threads_, [&](size_t i) {
    Memo& m = *misses[i].second;
    const std::string& tk = misses[i].first->template_key;
    json& tdoc = desired_.templates.at(tk);
    if (tdoc.is_null()) {
      auto text = store_->get(tk);
      if (!text.ok()) {
        loads[i] = text.status();
      } else {
        tdoc = json::parse(*text, nullptr, /*allow_exceptions=*/false);
        if (tdoc.is_discarded() || !tdoc.is_object()) {
          loads[i] = data_loss("document " + tk + " is not a JSON object");
          tdoc = json();
        }
      }
      if (!loads[i].ok()) {
        // Not memoized: the next pass renders it again.
        m.fingerprint = 0;
        m.ok = false;
        m.error = "reading " + tk + ": " + loads[i].message();
        return;
      }
    }
    auto r = model::render_object(*misses[i].first, desired_, limits_);
    m.ok = r.ok();
    if (r.ok()) {
      m.object = std::move(r).value();
    } else {
      m.error = r.status().message();
    }
  });
  for (auto& [tk, doc] : desired_.templates) doc = json();
  for (const Status& st : loads) note(st);
  // The rendered objects kept from earlier passes, parsed again.
  std::vector<Memo*> kept;
  for (auto& [tk, m] : memo) {
    if (m.ok && m.object.object.is_null() && !m.text.empty()) kept.push_back(&m);
  }
  parallel_for(kept.size(), threads_, [&](size_t i) {
    kept[i]->object.object = json::parse(kept[i]->text, nullptr, /*allow_exceptions=*/false);
  });
  std::vector<const model::RenderedObject*> to_apply;
  for (const model::ObjectPlan& p : plan.objects) {
    const Memo& m = memo[p.template_key];
    if (m.ok) {
      ++stats_.rendered;
      to_apply.push_back(&m.object);
    } else {
      failures_.push_back(model::RenderFailure{p.template_key, p.tenant, p.template_name, m.error});
    }
  }
  memo_ = std::move(memo);

  // Rollouts (docs/rollouts.md): a template listed by a placement with a
  // rollout policy is applied at a new revision only once the hub has
  // released that revision to this site. Until then what the site applied
  // stays: not rewritten, not pruned, its status (with the older revision)
  // unchanged; a site that never had it applies nothing yet.
  std::set<std::string> gated;
  // The apply policies of the placements (docs/kube-applier.md): a template
  // is forced if any placement of it here forces, and its drift only
  // reported if any says report.
  std::map<std::string, model::ApplyPolicy> policies;
  for (const auto& [key, doc] : desired_.placements) {
    auto p = model::parse_placement(doc);
    if (!p.ok()) continue;
    const std::string_view tenant = model::parse_key(key).tenant;
    if (p->apply.force_conflicts || p->apply.report_drift) {
      for (const auto& t : p->templates) {
        model::ApplyPolicy& policy = policies[model::template_key(tenant, t)];
        policy.force_conflicts |= p->apply.force_conflicts;
        policy.report_drift |= p->apply.report_drift;
      }
    }
    if (!p->rollout.enabled()) continue;
    for (const auto& t : p->templates) gated.insert(model::template_key(tenant, t));
  }
  applier_->set_policies(std::move(policies));
  std::vector<const model::RenderedObject*> held;
  if (!gated.empty()) {
    std::vector<const model::RenderedObject*> released;
    for (const model::RenderedObject* o : to_apply) {
      bool ok = !gated.contains(o->template_key);
      if (!ok) {
        auto r =
            desired_.releases.find(model::release_key(site_.name, o->tenant, o->template_name));
        if (r != desired_.releases.end()) {
          auto release = model::parse_release(r->second);
          ok = release.ok() && release->revision == revision_of(o->template_key);
        }
      }
      (ok ? released : held).push_back(o);
    }
    to_apply = std::move(released);
  }
  stats_.held = held.size();

  // Current status documents, by template key.
  const std::string status_prefix = model::status_prefix(site_.name);
  std::map<std::string, CurrentStatus> current;
  {
    std::string after;
    while (true) {
      auto page = store_->scan(status_prefix, after, kScanPage);
      if (!page.ok()) return page.status();
      for (ScanItem& item : page->items) {
        CurrentStatus c;
        const model::ParsedKey k = model::parse_key(item.key);
        if (k.kind != model::KeyKind::kStatus || k.site != site_.name) continue;
        c.tenant = std::string(k.tenant);
        c.name = std::string(k.name);
        c.key = std::move(item.key);
        c.doc = json::parse(item.json, nullptr, /*allow_exceptions=*/false);
        if (c.doc.is_discarded()) c.doc = json::object();
        current.emplace(model::template_key(c.tenant, c.name), std::move(c));
      }
      if (page->next_after.empty()) break;
      after = std::move(page->next_after);
    }
  }
  auto previous = [&](const std::string& tk, const char* f) {
    auto it = current.find(tk);
    return it == current.end() ? std::string() : string_field(it->second.doc, f);
  };

  // Apply, and the status each template should have.
  std::map<std::string, std::pair<std::string, json>> wanted;  // tk -> (status key, doc)
  std::vector<StatusOr<ApplyOutcome>> outcomes = applier_->apply_all(to_apply);
  std::set<std::string> retained;  // applier ids to keep
  for (size_t i = 0; i < to_apply.size(); ++i) {
    const model::RenderedObject& o = *to_apply[i];
    const std::string id = applier_->id_of(o);
    retained.insert(id);
    const StatusOr<ApplyOutcome>& r = outcomes[i];
    json doc;
    if (r.ok()) {
      ++(r->changed ? stats_.changed : stats_.unchanged);
      if (!r->drift.empty()) ++stats_.drifted;
      doc = status_doc(o.template_key, o.hash, model::Outcome::kApplied, r->message, id,
                       revision_of(o.template_key), &*r);
    } else {
      ++stats_.failed;
      note(r.status());
      doc = status_doc(o.template_key, previous(o.template_key, "hash"), model::Outcome::kFailed,
                       applier_->name() + ": " + r.status().message(),
                       previous(o.template_key, "file"), revision_of(o.template_key));
    }
    wanted[o.template_key] = {model::status_key(site_.name, o.tenant, o.template_name),
                              std::move(doc)};
  }
  // A template whose status stays as it is (held back, or waiting).
  auto keep_status = [&](const std::string& tk) {
    auto it = current.find(tk);
    if (it != current.end()) wanted[tk] = {it->second.key, it->second.doc};
  };
  for (const model::RenderedObject* o : held) {
    retained.insert(applier_->id_of(*o));
    keep_status(o->template_key);
  }
  // While the site's scope is still arriving (its first sync, a store
  // refilled after loss: no pruning yet), a template a placement lists may
  // simply not be here yet: the placement can come in an earlier batch than
  // its templates. It waits, its status as it was, rather than fail for a
  // moment; once the scope is complete, a template still missing fails.
  const bool scope_complete = !may_prune_ || may_prune_();
  for (const model::RenderFailure& f : failures_) {
    if (f.template_name.empty()) continue;
    std::string file = previous(f.template_key, "file");
    if (!file.empty()) retained.insert(file);
    if (f.missing_template && !scope_complete) {
      ++stats_.waiting;
      keep_status(f.template_key);
      continue;
    }
    ++stats_.failed;
    wanted[f.template_key] = {
        model::status_key(site_.name, f.tenant, f.template_name),
        status_doc(f.template_key, previous(f.template_key, "hash"), model::Outcome::kFailed,
                   f.error, file, revision_of(f.template_key))};
  }

  // Prune.
  bool prune = stats_.global_failures == 0 && scope_complete;
  if (prune) {
    auto inventory = applier_->inventory();
    if (!inventory.ok()) {
      note(inventory.status());
      prune = false;
    } else {
      std::map<std::string, std::string> owner;  // id -> template key, from status documents
      for (const auto& [tk, c] : current) {
        std::string file = string_field(c.doc, "file");
        if (!file.empty()) owner.emplace(std::move(file), tk);
      }
      for (const std::string& id : *inventory) {
        if (retained.count(id)) continue;
        Status st = applier_->remove(id);
        if (st.ok()) {
          ++stats_.pruned;
          continue;
        }
        note(st);
        // Keep reporting the object that could not be removed.
        auto o = owner.find(id);
        if (o == owner.end()) continue;
        const CurrentStatus& c = current[o->second];
        ++stats_.failed;
        wanted[o->second] = {
            c.key, status_doc(o->second, string_field(c.doc, "hash"), model::Outcome::kFailed,
                              applier_->name() + ": removing " + id + ": " + st.message(), id,
                              string_field(c.doc, "revision"))};
      }
    }
  }
  stats_.prune_skipped = !prune;

  // Status documents: write what changed; delete those of templates no longer
  // desired, only after a prune (otherwise their objects are still there).
  struct StoreWrite {
    const std::string* key;
    const json* doc;  // nullptr: remove
    Status status;
  };
  std::vector<StoreWrite> writes;
  for (auto& [tk, entry] : wanted) {
    auto it = current.find(tk);
    if (it != current.end() && it->second.doc == entry.second) continue;
    writes.push_back(StoreWrite{&entry.first, &entry.second, {}});
  }
  if (prune) {
    for (const auto& [tk, c] : current) {
      if (!wanted.count(tk)) writes.push_back(StoreWrite{&c.key, nullptr, {}});
    }
  }
  // In parallel when there are many: with group commit, concurrent writers
  // share fsyncs.
  parallel_for(writes.size(), store_write_threads_, [&](size_t i) {
    StoreWrite& w = writes[i];
    if (w.doc != nullptr) {
      w.status = store_->put_value(*w.key, *w.doc).status();
    } else {
      auto r = store_->remove(*w.key);
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) w.status = r.status();
    }
  });
  for (const StoreWrite& w : writes) {
    note(w.status);
    if (!w.status.ok()) continue;
    ++(w.doc != nullptr ? stats_.status_written : stats_.status_removed);
  }

  note(applier_->collect_garbage());
  // Back to text until the next pass.
  for (auto& [tk, m] : memo_) {
    if (!m.ok || m.object.object.is_null()) continue;
    if (m.text.empty()) m.text = m.object.object.dump();
    m.object.object = json();
  }
  return first_error;
}

}  // namespace canopy::spoke
