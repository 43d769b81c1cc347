// ParentSync's sessions (see parent.h): hello and welcome, the slots that
// bound concurrent catch-ups and reconciliations, away and dropped children,
// fall-backs, scope changes, and what it reports of its children.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "sync/engine/parent.h"
#include "sync/engine/parent_session.h"
#include "sync/subjects.h"

namespace canopy::sync {

void ParentSync::go_away(Session* s) {
  spdlog::info("sync {}: {} is away (silent for {} ms)", name_, s->child,
               env_.clock->now_ms() - s->last_seen_ms);
  s->away = true;
  // Nothing is queued for it while away, and a catch-up or reconciliation
  // gives its slot up. When it is back, a reconciliation starts over, and
  // the rest reads the log from what was sent (in flight or not: what is in
  // flight is resent first).
  if (s->mode != Mode::kWaiting) {
    s->wanted_mode = s->mode == Mode::kReconcile ? Mode::kReconcile : Mode::kCatchup;
    s->mode = Mode::kWaiting;
    s->pending.clear();
    release_slot(s);
    grant_slots();
  }
  std::erase(waiting_, s->child);
}

void ParentSync::resume(Session* s) {
  s->away = false;
  s->retry_at_ms = 0;
  note_busy(s);  // what it had in flight is resent at the next tick
  spdlog::info("sync {}: {} is back; its session resumes", name_, s->child);
  if (s->mode == Mode::kWaiting) {
    waiting_.push_back(s->child);
    grant_slots();
  }
}

void ParentSync::handle_hello(const std::string& child, const v1::SyncEnvelope& env) {
  const v1::Hello& hello = env.hello();
  if (hello.replica_id() == 0 || env.session() == 0) {
    refuse("hello without replica id or session", Message{up_subject(name_, child), ""});
    return;
  }
  auto existing = sessions_.find(child);
  if (existing == sessions_.end() || existing->second->session != env.session()) {
    // A new session. The hook first: it may make the child known (the root
    // registers a new site from its hello).
    if (hello_hook_) hello_hook_(child, hello);
    if (!scope_->serves(child)) {
      ++stats_.unserved_hellos;
      spdlog::warn(
          "sync {}: hello from {}, which this hub does not serve (no record of it here, "
          "or it belongs to a regional hub): no session",
          name_, child);
      if (existing != sessions_.end()) drop_session(child);
      // A site below one of our regional hubs (moved there, or pointed at
      // us), or one our parent may know: tell it where to go, on the
      // session it opened.
      if (std::string to = redirect_target(child); !to.empty()) {
        ++stats_.redirects;
        spdlog::info("sync {}: {} syncs through {}; redirecting it there", name_, child, to);
        v1::SyncEnvelope redirect;
        redirect.mutable_redirect()->set_parent(std::move(to));
        send_control(child, env.session(), std::move(redirect));
      }
      return;
    }
  }
  auto& slot = sessions_[child];
  if (!slot || slot->session != env.session()) index_stale_ = true;  // a new session
  const uint64_t now = env_.clock->now_ms();
  if (slot && slot->session == env.session()) {
    // A repeated hello (our welcome was lost): answer again, keep the session.
    slot->last_seen_ms = now;
    if (slot->away) resume(slot.get());
  } else {
    if (slot) release_slot(slot.get());
    std::erase(waiting_, child);
    slot = std::make_unique<Session>(child, name_, opts_);
    slot->session = env.session();
    // The clock and a count (never 0): a restarted parent's differ from its
    // last run's, and the random stream (the simulation's) is left alone.
    slot->opening = (now << 16) + (++sessions_opened_ & 0xffff);
    slot->replica = hello.replica_id();
    slot->last_seen_ms = now;
    slot->labels.insert(hello.labels().begin(), hello.labels().end());
    slot->scope_version = scope_->version(child);
    const v1::LogPosition& p = hello.down();
    bool usable = p.epoch() == store_->log_epoch() && p.index() + 1 >= store_->first_log_index() &&
                  p.index() <= store_->last_log_index() && p.scope_version() == slot->scope_version;
    if (auto marker = store_->get_local(reconcile_marker_key(child));
        marker.ok() && marker->has_value() && !(*marker)->empty()) {
      // We dropped a key of its scope when our log ended at this index, and
      // no log entry says so: a position up to there does not know it. A
      // later one comes from a reconciliation since (or later commits).
      const uint64_t dropped_at = std::strtoull((*marker)->c_str(), nullptr, 10);
      if (p.index() <= dropped_at) {
        usable = false;
      } else if (usable) {
        writes_.push_back(Write::put_local(reconcile_marker_key(child), ""));
      }
    }
    spdlog::debug("sync {}: hello from {} at index {} of epoch {}, scope version {}: {}", name_,
                  child, p.index(), p.epoch(), p.scope_version(),
                  usable ? "resumes" : "reconciles");
    slot->sent_index = usable ? p.index() : 0;
    slot->acked_index = slot->sent_index;
    if (usable) slot->child_position = p;
    slot->wanted_mode = usable ? Mode::kCatchup : Mode::kReconcile;
    slot->mode = Mode::kWaiting;
    waiting_.push_back(child);
    if (auto kept = store_->get_local(refused_key(child));
        kept.ok() && kept->has_value() && !(*kept)->empty()) {
      v1::Changes c;
      if (!c.ParseFromString(**kept)) {
        spdlog::warn("sync {}: the record of writes refused to {} does not parse; ignored", name_,
                     child);
      } else {
        // Only what it still may neither read nor write: a key its scope
        // took since may have reached it from us, and the child would drop
        // our copy with its own write.
        for (const v1::Refused& r : c.refused()) {
          if (!scope_->in_scope(child, r.key()) && !scope_->writable_by(child, r.key()))
            slot->refused[r.key()] = r.hlc();
        }
      }
    }
  }
  Session* s = slot.get();
  v1::SyncEnvelope welcome;
  welcome.mutable_welcome()->set_replica_id(store_->replica_id());
  welcome.mutable_welcome()->set_reconcile(s->wanted_mode == Mode::kReconcile);
  welcome.mutable_welcome()->set_session_timeout_ms(opts_.session_timeout_ms);
  welcome.mutable_welcome()->set_opening(s->opening);
  for (const auto& a : opts_.ancestors) welcome.mutable_welcome()->add_ancestors(a);
  for (auto& p : scope_->writable_prefixes(child))
    welcome.mutable_welcome()->add_writable_prefixes(std::move(p));
  auto seen = store_->get_local(up_seq_key(child));
  if (seen.ok() && seen->has_value()) {
    // "seq hlc replica" (before the replica was recorded: "seq hlc").
    unsigned long long seq = 0, hlc = 0, replica = 0;
    const int fields = std::sscanf((*seen)->c_str(), "%llu %llu %llu", &seq, &hlc, &replica);
    if (fields == 2 || (fields == 3 && replica == hello.replica_id())) {
      welcome.mutable_welcome()->set_child_max_seq(seq);
      welcome.mutable_welcome()->set_child_max_seq_hlc(hlc);
    }
  }
  // The child's writes may have reached us through another hub of our level
  // (active-active): what we hold of them counts too, or a child restored
  // from an old backup that fails over here would reuse its seqs. The
  // store's top dot of the child carries its stamp, so that a child that
  // wrote that seq again since sees it is another write; a count from the
  // version vector alone does not (0: the child checks only the seq).
  const TopDot top = store_->top_dot(hello.replica_id());
  if (top.seq > welcome.welcome().child_max_seq()) {
    welcome.mutable_welcome()->set_child_max_seq(top.seq);
    welcome.mutable_welcome()->set_child_max_seq_hlc(top.hlc);
  }
  const uint64_t held = store_->contiguous_seq(hello.replica_id());
  if (held > welcome.welcome().child_max_seq()) {
    welcome.mutable_welcome()->set_child_max_seq(held);
    welcome.mutable_welcome()->set_child_max_seq_hlc(0);
  }
  auto up = store_->get_local(up_position_key(child));
  if (up.ok() && up->has_value()) {
    welcome.mutable_welcome()->mutable_up()->ParseFromString(**up);
  }
  send_control(child, s->session, std::move(welcome));
  // Refusals an earlier session did not see acked go first (the sequenced
  // channel resends them within this one).
  if (s->refused_seq == 0 && !s->refused.empty()) send_refusals(s);
  grant_slots();
}

void ParentSync::grant_slots() {
  while (slots_in_use_ < opts_.max_concurrent_catchups && !waiting_.empty()) {
    const std::string child = waiting_.front();
    waiting_.pop_front();
    auto it = sessions_.find(child);
    if (it == sessions_.end() || it->second->mode != Mode::kWaiting) continue;
    Session* s = it->second.get();
    s->holds_slot = true;
    ++slots_in_use_;
    start_down(s, s->wanted_mode);
  }
}

void ParentSync::release_slot(Session* s) {
  if (!s->holds_slot) return;
  s->holds_slot = false;
  --slots_in_use_;
}

void ParentSync::start_down(Session* s, Mode mode) {
  if (mode == Mode::kReconcile) {
    start_reconcile(s);
  } else {
    ++stats_.catchups;
    s->mode = Mode::kCatchup;
    note_busy(s);
    pump(s);
  }
}
void ParentSync::fall_back(Session* s, Mode mode, bool queue) {
  s->retry_at_ms = 0;
  s->pending.clear();
  s->sketch.reset();
  release_slot(s);
  s->mode = Mode::kWaiting;
  s->wanted_mode = mode;
  std::erase(waiting_, s->child);
  if (queue && !s->away) waiting_.push_back(s->child);
}

void ParentSync::retry_later(Session* s, Mode mode) {
  ++stats_.read_failures;
  // Not in line at once: grant_slots would start it again, failing as long
  // as the store does. tick() puts it back in line (and grants the slot it
  // freed) at retry_at_ms.
  fall_back(s, mode, /*queue=*/false);
  s->retry_at_ms = env_.clock->now_ms() + opts_.read_retry_ms;
  note_busy(s);
}

void ParentSync::on_commits_lost() {
  last_commit_index_ = std::max(last_commit_index_, store_->last_log_index());
  for (auto& [child, s] : sessions_) {
    if (s->mode == Mode::kLive) {
      // What was sent is in order up to sent_index; the rest is in the log.
      fall_back(s.get(), Mode::kCatchup);
    } else if (s->mode == Mode::kReconcile) {
      // Its pending entries would complete the snapshot: start it over.
      fall_back(s.get(), Mode::kReconcile);
    }
  }
  grant_slots();
}

std::string ParentSync::redirect_target(const std::string& child) {
  const std::vector<std::string> below = preferred_order(child, scope_->redirect_for(child));
  std::string to;
  for (const std::string& hub : below) {
    auto it = sessions_.find(hub);
    if (it != sessions_.end() && !it->second->away) {
      to = hub;
      break;
    }
  }
  if (to.empty() && !below.empty()) to = below.front();
  if (to.empty() && !opts_.ancestors.empty()) to = preferred_order(child, opts_.ancestors).front();
  return to == child || to == name_ ? std::string() : to;
}

void ParentSync::on_scope_lost(const std::string& child) {
  auto it = sessions_.find(child);
  if (it == sessions_.end()) return;  // it reconciles on hello (version differs)
  Session* s = it->second.get();
  s->scope_moved = true;
  spdlog::warn("sync {}: a scope change of {} was lost; reconciling its scope", name_, child);
  s->scope_version = scope_->version(child);
  fall_back(s, Mode::kReconcile);
  grant_slots();
}

void ParentSync::on_scope_change(const ScopeChange& change) {
  const bool served = scope_->serves(change.child);
  if (!served) {
    // What it wrote is dropped here with its scope: what we recorded of
    // its log no longer says what we hold, should it come back.
    writes_.push_back(
        Write::put_local(up_position_key(change.child), v1::LogPosition().SerializeAsString()));
  }
  if (!served || change.reconcile) {
    // Its position in our log no longer says what it holds: drops are not
    // logged, nor what we refused of it while what it may write was other
    // (a member of a regional hub left or came back), and its scope's
    // version may well be the same again by its next hello. A position up
    // to here reconciles, should it come back or its session end before its
    // reconciliation does (simulation seed 21394 with moves, active-active).
    writes_.push_back(Write::put_local(reconcile_marker_key(change.child),
                                       std::to_string(store_->last_log_index())));
  }
  auto it = sessions_.find(change.child);
  if (it == sessions_.end()) return;  // it reconciles on hello
  Session* s = it->second.get();
  if (!served) {
    // Moved to another hub (or its record is gone): it keeps what it holds.
    // Our parent knows where it went: send the child there rather than
    // leave it to notice our silence.
    spdlog::info("sync {}: {} is no longer served here; its session ends", name_, change.child);
    if (std::string to = redirect_target(change.child); !to.empty()) {
      ++stats_.redirects;
      v1::SyncEnvelope redirect;
      redirect.mutable_redirect()->set_parent(std::move(to));
      send_control(change.child, s->session, std::move(redirect));
    }
    drop_session(change.child);
    return;
  }
  s->scope_moved = true;
  if (change.reconcile) {
    spdlog::info("sync {}: the scope of {} changed as a whole; reconciling it", name_,
                 change.child);
    // The prefixes the child may write, before the reconciliation: what it
    // may keep of its own depends on them. Sent every time rather than kept
    // per session to compare (a whole-scope change is rare; the copy cost
    // every idle session its size).
    v1::SyncEnvelope update;
    auto* prefixes = update.mutable_changes()->mutable_writable()->mutable_prefixes();
    for (auto& p : scope_->writable_prefixes(change.child)) prefixes->Add(std::move(p));
    send_sequenced(s, std::move(update));
    s->scope_version = scope_->version(change.child);
    if (s->mode == Mode::kWaiting) {
      s->wanted_mode = Mode::kReconcile;
    } else {
      fall_back(s, Mode::kReconcile);
      grant_slots();
    }
    return;
  }
  if (s->mode == Mode::kWaiting) {
    spdlog::debug("sync {}: scope of {} changed while it waits", name_, change.child);
    // Its position predates the change: reconcile when its turn comes.
    s->wanted_mode = Mode::kReconcile;
    s->scope_version = scope_->version(change.child);
    return;
  }
  spdlog::debug("sync {}: scope of {} changed in mode {}: {} keys entered, {} left", name_,
                change.child, static_cast<int>(s->mode), change.entered.size(), change.left.size());
  std::vector<v1::DocState> docs;
  for (const std::string& key : change.entered) {
    if (!scope_->in_scope(change.child, key)) continue;  // left again since
    auto st = store_->state(key);
    if (st.ok() && st->has_value()) docs.push_back(std::move(**st));
  }
  size_t i = 0;
  bool dropped = false;
  do {
    v1::SyncEnvelope env;
    v1::Changes* c = env.mutable_changes();
    if (!dropped) {
      for (const auto& k : change.left) {
        if (!scope_->in_scope(change.child, k)) c->add_drop(k);
      }
      dropped = true;
      s->scope_version = change.version != 0 ? change.version : scope_->version(change.child);
    }
    i = add_documents(&docs, i, c);
    // The position names the new version; its index claims no entry still
    // pending (those go out below, and carry the position on).
    if (s->mode == Mode::kLive) {
      if (s->pending.empty()) s->sent_index = std::max(s->sent_index, last_commit_index_);
      set_position(s, c, s->sent_index);
    }
    send_sequenced(s, std::move(env));
  } while (i < docs.size());
  // The documents that entered go out before what was pending: the change
  // that moved the scope (a placement, a site's labels) is among the pending
  // entries, and a child that applied it before the documents it brings
  // would act on half of it (a placement without its templates). A pending
  // entry of a key that entered merges as a no-op after its whole document;
  // one of a key that left is no longer wanted (scope_moved).
  pump_live(s);
}

void ParentSync::drop_session(const std::string& child) {
  auto it = sessions_.find(child);
  if (it == sessions_.end()) return;
  release_slot(it->second.get());
  sessions_.erase(it);
  index_stale_ = true;
  std::erase(waiting_, child);
}

std::vector<ChildLiveness> ParentSync::liveness() const {
  std::vector<ChildLiveness> out;
  out.reserve(sessions_.size());
  const uint64_t now = env_.clock->now_ms();
  for (const auto& [child, s] : sessions_) {  // (a std::map: sorted by name)
    out.push_back(ChildLiveness{child, heard_lately(s.get(), now), s->last_seen_ms});
  }
  return out;
}

std::vector<ChildInfo> ParentSync::children() const {
  std::vector<ChildInfo> out;
  out.reserve(sessions_.size());
  const uint64_t now = env_.clock->now_ms();
  for (const auto& [child, s] : sessions_) {
    ChildInfo info;
    info.name = child;
    info.replica_id = s->replica;
    switch (s->mode) {
      case Mode::kWaiting:
        info.mode = "waiting";
        break;
      case Mode::kCatchup:
        info.mode = "catch-up";
        break;
      case Mode::kReconcile:
        info.mode = "reconcile";
        break;
      case Mode::kLive:
        info.mode = "live";
        break;
    }
    info.last_seen_ms = s->last_seen_ms;
    info.connected = heard_lately(s.get(), now);
    info.acked_index = s->acked_index;
    info.unacked = s->down.in_flight();
    info.labels = s->labels;
    out.push_back(std::move(info));
  }
  return out;
}

uint64_t ParentSync::acknowledged_hlc() const {
  uint64_t m = 0;
  bool first = true;
  for (const auto& [child, s] : sessions_) {
    if (first || s->acked_hlc < m) m = s->acked_hlc;
    first = false;
  }
  return m;
}

}  // namespace canopy::sync
