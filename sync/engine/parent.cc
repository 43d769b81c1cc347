// ParentSync (see parent.h): the message loop. Receiving (a child's
// changes and acks), sending (sequenced envelopes, with committed changes
// encoded once for every child), and streaming commits to the sessions that
// want them, by catch-up from the log or live; and the tick that times
// sessions out, resends and pumps them. Sessions' lifecycle is in
// parent_sessions.cc, reconciliation in parent_reconcile.cc.
#include "sync/engine/parent.h"

#include <google/protobuf/arena.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "store/document.h"
#include "sync/engine/parent_session.h"
#include "sync/engine/sketch.h"
#include "sync/subjects.h"

namespace canopy::sync {
namespace {

// "canopy.v1.<a>.<b>.<dir>" -> a, b, dir.
bool split_subject(std::string_view subject, std::string* a, std::string* b, std::string* dir) {
  if (!subject.starts_with(kSubjectRoot)) return false;
  subject.remove_prefix(kSubjectRoot.size());
  std::string_view parts[3];
  size_t n = 0;
  while (!subject.empty()) {
    if (subject.front() != '.' || n == 3) return false;
    subject.remove_prefix(1);
    const size_t dot = subject.find('.');
    parts[n++] = subject.substr(0, dot);
    subject = dot == std::string_view::npos ? std::string_view() : subject.substr(dot);
  }
  if (n != 3) return false;
  *a = parts[0];
  *b = parts[1];
  *dir = parts[2];
  return true;
}

const std::string& entry_key(const v1::LogEntry& e) {
  return e.has_delta() ? e.delta().key() : e.doc().key();
}

}  // namespace

ParentSync::ParentSync(std::string name, Store* store, ScopeProvider* scope, Env env,
                       ParentOptions options)
    : ParentSync(std::move(name), static_cast<StoreView*>(nullptr), scope, std::move(env),
                 options) {
  owned_view_ = std::make_unique<StoreReader>(store);
  store_ = owned_view_.get();
  last_commit_index_ = store_->last_log_index();
}

ParentSync::ParentSync(std::string name, StoreView* view, ScopeProvider* scope, Env env,
                       ParentOptions options)
    : name_(std::move(name)), store_(view), scope_(scope), env_(std::move(env)), opts_(options) {
  if (store_ != nullptr) last_commit_index_ = store_->last_log_index();
}

ParentSync::~ParentSync() = default;

std::string ParentSync::subscription() const { return all_up_subjects(name_); }

std::shared_ptr<google::protobuf::Arena> ParentSync::decode_arena() {
  if (!scratch_user_.expired()) return std::make_shared<google::protobuf::Arena>();
  auto arena = std::make_shared<google::protobuf::Arena>(scratch_.arena_options());
  scratch_user_ = arena;
  return arena;
}

Ready ParentSync::take_ready() {
  CANOPY_CHECK(!awaiting_advance_);
  Ready r;
  r.writes.swap(writes_);
  r.messages.swap(outbox_);
  awaiting_advance_ = !r.writes.empty();
  return r;
}

void ParentSync::advance(const Status& persisted) {
  awaiting_advance_ = false;
  if (!persisted.ok()) {
    // Not acked: the child resends, and we log again. Positions go back
    // newest first, so each session ends at its oldest unpersisted one.
    for (auto it = unpersisted_.rbegin(); it != unpersisted_.rend(); ++it) {
      auto s = sessions_.find(it->child);
      if (s != sessions_.end() && s->second->session == it->session) s->second->up = it->before;
      ++stats_.refused_messages;
      spdlog::warn("sync {}: changes from {} refused: {}", name_, it->child, persisted.to_string());
    }
  }
  unpersisted_.clear();
}

bool ParentSync::flush_some(size_t max_sessions) {
  // Changes committed since the last call go out now, batched per session.
  if (dirty_done_ == 0 && !dirty_sorted_) {
    std::sort(dirty_.begin(), dirty_.end());
    dirty_.erase(std::unique(dirty_.begin(), dirty_.end()), dirty_.end());
    dirty_sorted_ = true;
  }
  const size_t end =
      dirty_.size() - dirty_done_ > max_sessions ? dirty_done_ + max_sessions : dirty_.size();
  for_sessions(dirty_.data() + dirty_done_, dirty_.data() + end,
               [&](const std::string&, Session* s) {
                 if (s != nullptr) pump(s);
               });
  dirty_done_ = end;
  if (dirty_done_ < dirty_.size()) return true;
  dirty_.clear();
  dirty_done_ = 0;
  for (const std::string& child : acks_due_) {
    Session* s = find_session(child);
    if (s == nullptr || !s->ack_due) continue;
    s->ack_due = false;
    v1::SyncEnvelope ack;
    ack.mutable_ack()->set_seq(s->up.last_applied());
    send_control(child, s->session, std::move(ack));
  }
  acks_due_.clear();
  return false;
}

void ParentSync::refuse(const std::string& why, const Message& m) {
  ++stats_.refused_messages;
  spdlog::warn("sync {}: refused message on {} ({} bytes): {}", name_, m.subject, m.data.size(),
               why);
}

void ParentSync::send_control(const std::string& child, uint64_t session, v1::SyncEnvelope env) {
  env.set_protocol(kProtocolVersion);
  env.set_from(name_);
  env.set_to(child);
  env.set_session(session);
  Message m{down_subject(name_, child), env.SerializeAsString()};
  stats_.bytes_sent += m.data.size();
  outbox_.push_back(std::move(m));
}

namespace {

void append_varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Wire tags (field number << 3 | 2, length-delimited).
constexpr char kEnvelopeChangesTag = static_cast<char>((12 << 3) | 2);  // SyncEnvelope.changes
constexpr char kChangesEntryTag = static_cast<char>((1 << 3) | 2);      // Changes.entries

}  // namespace

ParentSync::Outgoing::Outgoing(v1::LogEntry e)
    : entry(std::move(e)),
      bytes(entry.SerializeAsString()),
      hlc(entry.has_delta() ? entry.delta().hlc() : 0) {}

void ParentSync::send_sequenced(Session* s, v1::SyncEnvelope env, const OutgoingPtr* encoded,
                                size_t encoded_count) {
  const uint64_t seq = s->down.next_seq();
  env.set_protocol(kProtocolVersion);
  env.set_from(name_);
  env.set_to(s->child);
  env.set_session(s->session);
  env.set_seq(seq);
  if (s->up.last_applied() != 0) env.set_acked(s->up.last_applied());
  s->ack_due = false;
  CANOPY_CHECK(encoded_count == 0 || (env.has_changes() && env.changes().entries_size() == 0));
  if (env.has_changes()) {
    v1::Changes* c = env.mutable_changes();
    Session::Carried carried;
    for (size_t i = 0; i < encoded_count; ++i) {
      carried.hlc = std::max(carried.hlc, encoded[i]->hlc);
      if (encoded[i]->entry.has_delta()) ++stats_.deltas_sent;
    }
    for (const auto& e : c->entries()) {
      if (e.has_delta()) {
        carried.hlc = std::max<uint64_t>(carried.hlc, e.delta().hlc());
        ++stats_.deltas_sent;
      }
    }
    v1::LogPosition& held = s->child_position;
    if (c->has_position()) {
      carried.index = c->position().index();
      if (held.epoch() != 0 && held.epoch() == c->position().epoch() &&
          held.scope_version() == c->position().scope_version()) {
        held.set_index(c->position().index());
        c->clear_position();
        c->set_index(held.index());
      } else {
        held = c->position();
      }
    } else if (unpositions(*c) || (encoded_count > 0 && c->index() == 0)) {
      // (The encoded entries are not in `c`: unpositions() does not see them.)
      held.Clear();
    }
    if (carried.hlc != 0 || carried.index != 0) s->carried.emplace_back(seq, carried);
  }
  std::string bytes;
  if (encoded_count == 0) {
    bytes = env.SerializeAsString();
  } else {
    // The same bytes as env.SerializeAsString() with the entries in place
    // (fields go out in field-number order: the header fields, then
    // `changes`, whose `entries` (1) come before the rest of it), without
    // encoding the entries once per child.
    // All of it is written into one buffer of the final size.
    v1::Changes tail;
    tail.Swap(env.mutable_changes());
    env.clear_body();
    const size_t tail_size = tail.ByteSizeLong();
    size_t body = tail_size;
    for (size_t i = 0; i < encoded_count; ++i) {
      const size_t n = encoded[i]->bytes.size();
      body += 1 + varint_size(n) + n;
    }
    const size_t head_size = env.ByteSizeLong();
    bytes.reserve(head_size + 1 + varint_size(body) + body);
    bytes.resize(head_size);
    env.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(bytes.data()));
    bytes.push_back(kEnvelopeChangesTag);
    append_varint(&bytes, body);
    for (size_t i = 0; i < encoded_count; ++i) {
      const std::string& e = encoded[i]->bytes;
      bytes.push_back(kChangesEntryTag);
      append_varint(&bytes, e.size());
      bytes.append(e);
    }
    const size_t at = bytes.size();
    bytes.resize(at + tail_size);
    tail.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(bytes.data() + at));
  }
  stats_.bytes_sent += bytes.size();
  outbox_.push_back(Message{s->subject, bytes});
  s->down.sent(seq, std::move(bytes), env_.clock->now_ms());
  note_busy(s);  // its resend timer runs
}

void ParentSync::set_position(Session* s, v1::Changes* c, uint64_t index) {
  v1::LogPosition* p = c->mutable_position();
  p->set_epoch(store_->log_epoch());
  p->set_index(index);
  // What we send is filtered by the provider's current scope. While a change
  // of it is queued and not yet sent, that is not the scope this session has
  // announced: a key that entered may already have gone out. The position
  // then names no version (0, which no hello matches), so that a session
  // resuming from it reconciles; the queued change's message names the new
  // version. Otherwise a child that lost that message would hold the key
  // under the old version, and keep it once the scope changes back.
  // (The provider's version is asked again only once its generation moved:
  // a fan-out sets a position for each of thousands of sessions.)
  const uint64_t generation = scope_->generation();
  if (generation == 0 || generation != s->provider_generation) {
    s->provider_version = scope_->version(s->child);
    s->provider_generation = generation;
  }
  p->set_scope_version(s->scope_version == s->provider_version ? s->scope_version : 0);
  s->reported_index = index;
  s->last_position_ms = env_.clock->now_ms();
}

void ParentSync::on_message(const Message& m) {
  CANOPY_CHECK(!awaiting_advance_);
  if (m.data.size() > opts_.max_message_bytes) {
    refuse("message larger than the limit of " + std::to_string(opts_.max_message_bytes), m);
    return;
  }
  // Decoded into an arena (on the scratch we keep for it): a batch of
  // changes is thousands of small messages.
  // (Kept alive by the writes that point into it until they are persisted.)
  std::shared_ptr<google::protobuf::Arena> arena = decode_arena();
  auto& env = *google::protobuf::Arena::CreateMessage<v1::SyncEnvelope>(arena.get());
  if (!env.ParseFromString(m.data)) {
    refuse("not a sync envelope (undecodable bytes)", m);
    return;
  }
  std::string parent, child, dir;
  if (!split_subject(m.subject, &parent, &child, &dir) || parent != name_ || dir != "up") {
    refuse("subject is not one of ours", m);
    return;
  }
  if (env.protocol() != kProtocolVersion) {
    refuse("protocol version " + std::to_string(env.protocol()) + " is not supported", m);
    return;
  }
  if (env.from() != child || env.to() != name_) {
    refuse(
        "envelope from \"" + env.from() + "\" to \"" + env.to() + "\" does not match the subject",
        m);
    return;
  }
  if (!validate_node_name(child).ok()) {
    refuse("child name is not a DNS-1123 label", m);
    return;
  }
  if (admit_hook_ && !admit_hook_(child)) {
    ++stats_.refused_not_admitted;
    refuse("child " + child + " is not admitted (its identity was revoked)", m);
    drop_session(child);
    return;
  }
  if (env.has_hello()) {
    handle_hello(child, env);
    return;
  }
  Session* s = find_session(child);
  if (s == nullptr || s->session != env.session()) {
    // We restarted, or forgot the session: ask the child to say hello, at
    // most once a second per child.
    const uint64_t now = env_.clock->now_ms();
    uint64_t& last = last_reset_ms_[child];
    if (now >= last + 1000 || last == 0) {
      last = now;
      v1::SyncEnvelope reset;
      reset.mutable_reset()->set_reason("unknown session");
      send_control(child, env.session(), std::move(reset));
    }
    return;
  }
  s->last_seen_ms = env_.clock->now_ms();
  if (s->away) resume(s);
  if (env.acked() != 0 && !env.has_ack()) {
    v1::Ack piggyback;
    piggyback.set_seq(env.acked());
    handle_ack(s, piggyback);
  }
  if (env.has_ack()) {
    handle_ack(s, env.ack());
    if (env.ack().ping()) {
      // The child watches for our silence (it has other parents to turn
      // to): answer, on the next message out or an ack of its own.
      s->ack_due = true;
      acks_due_.insert(child);
    }
  } else if (env.has_changes() || env.has_sketch_reply()) {
    switch (s->up.check(env.seq())) {
      case RecvChannel::Verdict::kApply:
        // Acked when the outbox is taken: on a sequenced message if one goes
        // out by then (a reply to this one, say), else on its own.
        s->ack_due = true;
        acks_due_.insert(child);
        if (env.has_changes()) {
          handle_changes(s, env, arena);
        } else {
          s->up.applied(env.seq());
          handle_sketch_reply(s, env.sketch_reply());
        }
        break;
      case RecvChannel::Verdict::kDuplicate:
        s->ack_due = true;
        acks_due_.insert(child);
        break;
      case RecvChannel::Verdict::kGap: {
        v1::SyncEnvelope ack;
        ack.mutable_ack()->set_seq(s->up.last_applied());
        ack.mutable_ack()->set_gap(true);
        send_control(child, s->session, std::move(ack));
        return;
      }
    }
  } else {
    refuse("unexpected message kind from a child", m);
  }
  if (unpersisted_.empty()) {
    pump(s);
  } else {
    // What goes out now acks the child's message: not before it is persisted.
    mark_dirty(child);
  }
}

void ParentSync::mark_dirty(const std::string& child) {
  if (!dirty_.empty()) {
    const int c = child.compare(dirty_.back());
    if (c == 0) return;
    if (c < 0) dirty_sorted_ = false;
  }
  dirty_.push_back(child);
}

ParentSync::Session* ParentSync::find_session(const std::string& child) {
  if (!index_stale_) {
    auto it = by_name_.find(child);
    return it == by_name_.end() ? nullptr : it->second;
  }
  auto it = sessions_.find(child);
  return it == sessions_.end() ? nullptr : it->second.get();
}

template <typename F>
void ParentSync::for_sessions(const std::string* first, const std::string* last, F f) {
  // Sorted as sweep_ is, and dense in it (a change to most children): one
  // merging pass over both, reading ahead, instead of a lookup each.
  if (!index_stale_ && last - first > 8 && std::is_sorted(first, last)) {
    auto by_child = [](const Session* s, const std::string& c) { return s->child < c; };
    auto from = std::lower_bound(sweep_.begin(), sweep_.end(), *first, by_child);
    auto to = std::lower_bound(from, sweep_.end(), *(last - 1), by_child);
    if (to - from <= 8 * (last - first)) {
      constexpr size_t kAhead = 4;
      size_t j = static_cast<size_t>(from - sweep_.begin());
      for (const std::string* child = first; child != last; ++child) {
        while (j < sweep_.size() && sweep_[j]->child < *child) {
          if (j + kAhead < sweep_.size()) __builtin_prefetch(sweep_[j + kAhead]);
          ++j;
        }
        if (j + kAhead < sweep_.size()) __builtin_prefetch(sweep_[j + kAhead]);
        f(*child, j < sweep_.size() && sweep_[j]->child == *child ? sweep_[j] : nullptr);
      }
      return;
    }
  }
  for (const std::string* child = first; child != last; ++child) f(*child, find_session(*child));
}

void ParentSync::note_busy(Session* s) {
  if (s->busy) return;
  s->busy = true;
  busy_.push_back(s);
}

void ParentSync::refresh_index() {
  if (!index_stale_) return;
  // Sessions came or went: busy_ may point at one that is gone. Every
  // session is visited at this tick instead.
  busy_.clear();
  next_sweep_ms_ = 0;
  sweep_.clear();
  by_name_.clear();
  sweep_.reserve(sessions_.size());
  by_name_.reserve(sessions_.size());
  for (auto& [child, s] : sessions_) {
    s->busy = false;
    sweep_.push_back(s.get());
    by_name_.emplace(s->child, s.get());
  }
  index_stale_ = false;
}
void ParentSync::handle_ack(Session* s, const v1::Ack& ack) {
  std::vector<std::string> resend;
  s->down.on_ack(ack.seq(), ack.gap(), env_.clock->now_ms(), &resend);
  for (auto& bytes : resend) {
    stats_.bytes_sent += bytes.size();
    outbox_.push_back(Message{s->subject, std::move(bytes)});
  }
  auto it = s->carried.begin();
  for (; it != s->carried.end() && it->first <= ack.seq(); ++it) {
    s->acked_hlc = std::max(s->acked_hlc, it->second.hlc);
    s->acked_index = std::max(s->acked_index, it->second.index);
  }
  if (it == s->carried.end()) {
    std::vector<std::pair<uint64_t, Session::Carried>>().swap(s->carried);
  } else {
    s->carried.erase(s->carried.begin(), it);
  }
  if (s->refused_seq != 0 && ack.seq() >= s->refused_seq) {
    // The child has every refusal we kept for it.
    s->refused.clear();
    s->refused_seq = 0;
    writes_.push_back(Write::put_local(refused_key(s->child), ""));
  }
}

void ParentSync::handle_changes(Session* s, const v1::SyncEnvelope& env,
                                std::shared_ptr<const void> owner) {
  const v1::Changes& c = env.changes();
  std::vector<const v1::Delta*> batch;
  std::vector<v1::DocState> docs;
  std::map<std::string, uint64_t> orphans;  // refused, outside the child's scope: newest stamp
  for (const v1::LogEntry& e : c.entries()) {
    const std::string& key = entry_key(e);
    if (!scope_->writable_by(s->child, key)) {
      ++stats_.refused_writes;
      spdlog::warn("sync {}: refused write of {} by {}: outside its writable scope", name_, key,
                   s->child);
      if (!scope_->in_scope(s->child, key)) {
        uint64_t hlc = 0;
        if (e.has_delta()) {
          hlc = e.delta().hlc();
        } else if (auto doc = Document::from_proto(e.doc().root()); doc.ok()) {
          hlc = doc->max_hlc();
        }
        uint64_t& newest = orphans[key];
        newest = std::max(newest, hlc);
      }
      continue;
    }
    if (e.has_delta()) {
      batch.push_back(&e.delta());
    } else if (e.has_doc()) {
      docs.push_back(e.doc());
    }
  }
  uint64_t own_seq = 0, own_hlc = 0;
  for (const v1::Delta* d : batch) {
    if (d->dot().replica() == s->replica && d->dot().seq() > own_seq) {
      own_seq = d->dot().seq();
      own_hlc = d->hlc();
    }
  }
  // Refused whole (a bad delta) or not stored: advance() takes the receive
  // position back, so that the child resends. Nothing of a refused batch is
  // merged.
  const size_t first_write = writes_.size();
  if (!batch.empty()) writes_.push_back(Write::apply_deltas(std::move(batch), owner, s->replica));
  if (!docs.empty()) writes_.push_back(Write::apply_states(std::move(docs), s->replica));
  if (own_seq != 0) {
    // With the replica: a child that took a new replica id (restored from a
    // backup) starts its seqs again, and must not be told of the old id's.
    writes_.push_back(Write::put_local(up_seq_key(s->child), std::to_string(own_seq) + " " +
                                                                 std::to_string(own_hlc) + " " +
                                                                 std::to_string(s->replica)));
  }
  if (!orphans.empty()) {
    // Kept before the position that skips past them (writes persist in
    // order, each atomic): if the refusal is lost with the session, the next
    // one tells it again. Nor is it told again of keys its scope took
    // since their refusal: it may hold our copy of one by now, and would
    // drop it (simulation seed 29180 with moves, active-active).
    std::erase_if(s->refused, [&](const auto& r) {
      return scope_->in_scope(s->child, r.first) || scope_->writable_by(s->child, r.first);
    });
    for (const auto& [k, hlc] : orphans) {
      uint64_t& newest = s->refused[k];
      newest = std::max(newest, hlc);
    }
    writes_.push_back(Write::put_local(refused_key(s->child), refusals(*s).SerializeAsString()));
  }
  if (c.has_position()) {
    writes_.push_back(
        Write::put_local(up_position_key(s->child), c.position().SerializeAsString()));
  }
  if (writes_.size() > first_write) unpersisted_.push_back({s->child, s->session, s->up});
  s->up.applied(env.seq());
  // The child holds what it may neither read nor write here: say so, or
  // it keeps the keys forever (its own writes survive every drop).
  if (!orphans.empty()) send_refusals(s);
}

v1::Changes ParentSync::refusals(const Session& s) {
  v1::Changes c;
  for (const auto& [k, hlc] : s.refused) {
    v1::Refused* r = c.add_refused();
    r->set_key(k);
    r->set_hlc(hlc);
  }
  return c;
}

void ParentSync::send_refusals(Session* s) {
  v1::SyncEnvelope env;
  *env.mutable_changes() = refusals(*s);
  s->refused_seq = s->down.next_seq();
  send_sequenced(s, std::move(env));
}

bool ParentSync::wanted(const Session* s, const v1::LogEntry& e) const {
  return !echo(s, e) && scope_->in_scope(s->child, entry_key(e));
}

bool ParentSync::echo(const Session* s, const v1::LogEntry& e) {
  // No echo of what the child sent, except its whole documents while it
  // reconciles: one may be stale, a copy it has forgotten since (a write
  // we refused and it dropped, in flight then, that we accept now that its
  // scope took the key back). Its reconciliation compared our documents as
  // they were before, so only the echo gives it back; a copy it holds
  // merges as a no-op. Deltas are never echoed: one applied where the
  // child lacks the key would rebuild only its own fields.
  // The child's own writes that came another way (through a peer hub of an
  // active-active level) are sent: the child drops them as duplicates unless
  // it lost them (restored from a backup older than them), and then only
  // this brings them back.
  return e.source() == s->replica && s->replica != 0 &&
         (s->mode != Mode::kReconcile || !e.has_doc());
}

void ParentSync::send_entries(Session* s, const std::vector<OutgoingPtr>& entries,
                              bool with_position, uint64_t final_index) {
  const size_t limit = batch_limit();
  size_t i = 0;
  std::vector<OutgoingPtr>& batch = batch_scratch_;
  do {
    batch.clear();
    size_t bytes = 0;
    while (i < entries.size()) {
      const size_t sz = entries[i]->bytes.size() + 8;
      if (!batch.empty() && bytes + sz > limit) break;
      if (sz > limit) {
        spdlog::error("sync {}: change {} for {} is larger than the payload limit; skipped", name_,
                      entries[i]->entry.index(), s->child);
        ++i;
        continue;
      }
      bytes += sz;
      batch.push_back(entries[i]);
      ++i;
    }
    v1::SyncEnvelope env;
    v1::Changes* c = env.mutable_changes();
    if (with_position) {
      const uint64_t idx = i < entries.size() ? batch.back()->entry.index() : final_index;
      set_position(s, c, idx);
    }
    if (batch.empty() && !with_position) break;
    send_sequenced(s, std::move(env), batch.data(), batch.size());
  } while (i < entries.size());
  batch.clear();
}

void ParentSync::pump(Session* s) {
  if (s->away) return;
  if (s->mode == Mode::kCatchup) pump_catchup(s);
  if (s->mode == Mode::kLive || s->mode == Mode::kReconcile) pump_live(s);
}

void ParentSync::pump_catchup(Session* s) {
  const std::string child = s->child;
  auto filter = [&](std::string_view k) { return scope_->in_scope(child, k); };
  while (s->down.can_send() && s->mode == Mode::kCatchup) {
    auto read = store_->log_since(store_->log_epoch(), s->sent_index, filter, opts_.log_read_limit);
    if (!read.ok()) {
      spdlog::error("sync {}: reading the log for {}: {}", name_, child, read.status().to_string());
      retry_later(s, Mode::kCatchup);
      return;
    }
    if (!read->complete) {
      start_reconcile(s);
      return;
    }
    std::vector<OutgoingPtr> entries;
    for (auto& e : read->entries) {
      if (wanted(s, e)) entries.push_back(std::make_shared<const Outgoing>(std::move(e)));
    }
    const bool at_end = read->entries.size() < opts_.log_read_limit;
    const uint64_t upto = read->last_index;
    if (!entries.empty() || upto > s->reported_index) {
      send_entries(s, entries, true, upto);
    }
    s->sent_index = upto;
    if (at_end) {
      // Caught up: from here on, committed changes are pushed as they come.
      // Entries committed after `upto` are still in our commit queue and will
      // reach on_commit; ones at or below it are skipped there.
      s->mode = Mode::kLive;
      s->pending.clear();
      release_slot(s);
      grant_slots();
    }
  }
}

void ParentSync::pump_live(Session* s) {
  if (s->pending.empty() || !s->down.can_send()) return;
  // (In place: the vector keeps its capacity for the next change.)
  std::vector<OutgoingPtr>& pending = s->pending;
  // The scope may have changed since these were queued: a key that left it
  // was dropped at the child, and must not come back through a late change.
  // (Each was wanted when queued; only a scope change handled since, whose
  // drops may have gone out, can make one unwanted.)
  if (s->scope_moved) {
    std::erase_if(pending, [&](const OutgoingPtr& e) { return !wanted(s, e->entry); });
    s->scope_moved = !pending.empty();
  }
  if (pending.empty()) return;
  const uint64_t last = pending.back()->entry.index();
  const bool live = s->mode == Mode::kLive;
  send_entries(s, pending, live, std::max(last, last_commit_index_));
  pending.clear();
  s->scope_moved = false;
  if (live) s->sent_index = std::max(last, last_commit_index_);
}

void ParentSync::on_commit(const v1::LogEntry& entry) {
  if (entry.index() == 0) return;  // a local drop, not a change to replicate
  last_commit_index_ = std::max(last_commit_index_, entry.index());
  OutgoingPtr out;  // encoded once, for the first session that wants it
  const ScopeProvider::Route route = scope_->route(entry_key(entry));
  const std::vector<std::string>& children = route.children;
  // Listed exactly: each of them holds the key in its scope now.
  const bool listed_in_scope = route.exact;
  for_sessions(children.data(), children.data() + children.size(),
               [&](const std::string& child, Session* s) {
                 if (s == nullptr) return;
                 if (s->mode != Mode::kLive && s->mode != Mode::kReconcile) return;
                 if (entry.index() <= s->sent_index) return;
                 if (listed_in_scope ? echo(s, entry) : !wanted(s, entry)) return;
                 if (!out) out = std::make_shared<const Outgoing>(entry);
                 s->pending.push_back(out);
                 if (s->pending.size() > opts_.max_pending_entries && s->mode == Mode::kLive) {
                   // The child does not keep up: stop buffering, read the log instead.
                   fall_back(s, Mode::kCatchup);
                   return;
                 }
                 mark_dirty(child);
               });
  grant_slots();
}

std::vector<Write> ParentSync::drop_marks(const std::vector<std::string>& keys) {
  // The keys leave our own scope (our parent dropped them, or refused
  // them). A child of ours may hold them still: what we recorded of its log
  // claims that we do too (forgotten), and its position in ours says
  // nothing of the drop, which is in no log entry. A session from a position
  // up to our log's end now reconciles; a live one reconciles now (no
  // position goes out before), in which the child sends up what we lack and
  // may take back, and forgets what it must. No slot is granted here: the
  // store still holds the keys (see drops_persisted).
  std::vector<Write> out;
  std::set<std::string> children;
  for (const std::string& key : keys) {
    for (std::string& child : scope_->children_for(key)) children.insert(std::move(child));
  }
  const std::string at = std::to_string(store_->last_log_index());
  for (const std::string& child : children) {
    out.push_back(Write::put_local(up_position_key(child), v1::LogPosition().SerializeAsString()));
    out.push_back(Write::put_local(reconcile_marker_key(child), at));
    auto it = sessions_.find(child);
    if (it == sessions_.end()) continue;
    Session* s = it->second.get();
    if (s->mode == Mode::kWaiting) {
      s->wanted_mode = Mode::kReconcile;
    } else {
      fall_back(s, Mode::kReconcile);
    }
  }
  return out;
}

void ParentSync::tick() {
  const uint64_t now = env_.clock->now_ms();
  std::vector<std::string> expired;
  // Sessions with something in flight, a catch-up or a retry due, every
  // tick; every session (idle ones are the common case: tens of thousands)
  // every idle_sweep_ms, from a vector in sessions_' order, reading ahead.
  refresh_index();
  const bool full = now >= next_sweep_ms_;
  if (full) next_sweep_ms_ = now + opts_.idle_sweep_ms;
  std::vector<Session*> busy;
  busy.swap(busy_);
  for (Session* s : busy) s->busy = false;
  const std::vector<Session*>& visit = full ? sweep_ : busy;
  constexpr size_t kAhead = 4;
  for (size_t i = 0; i < visit.size(); ++i) {
    if (i + kAhead < visit.size()) __builtin_prefetch(visit[i + kAhead]);
    Session* s = visit[i];
    if (now > s->last_seen_ms + opts_.session_timeout_ms) {
      expired.push_back(s->child);
      continue;
    }
    if (!heard_lately(s, now)) {
      if (!s->away) go_away(s);
      continue;
    }
    if (s->retry_at_ms != 0 && now >= s->retry_at_ms) {
      s->retry_at_ms = 0;
      if (s->mode == Mode::kWaiting) waiting_.push_back(s->child);
    }
    std::vector<std::string> resend;
    s->down.on_tick(now, &resend);
    for (auto& bytes : resend) {
      stats_.bytes_sent += bytes.size();
      outbox_.push_back(Message{s->subject, std::move(bytes)});
    }
    pump(s);
    // An idle live child learns that the log moved on, so that its position,
    // and a later resume, does not lag behind changes outside its scope.
    if (s->mode == Mode::kLive && s->pending.empty() && s->down.can_send() &&
        last_commit_index_ > s->reported_index &&
        now >= s->last_position_ms + opts_.idle_position_ms) {
      s->sent_index = std::max(s->sent_index, last_commit_index_);
      send_entries(s, {}, true, s->sent_index);
    }
    if (s->down.in_flight() > 0 || s->mode == Mode::kCatchup || s->retry_at_ms != 0 ||
        !s->pending.empty()) {
      note_busy(s);
    }
  }
  for (const auto& child : expired) {
    spdlog::info("sync {}: session of {} expired", name_, child);
    drop_session(child);
  }
  grant_slots();
}

}  // namespace canopy::sync
