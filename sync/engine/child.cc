#include "sync/engine/child.h"

#include <google/protobuf/arena.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "sync/engine/parent.h"
#include "sync/engine/sketch.h"
#include "sync/protocol.h"
#include "sync/subjects.h"

namespace canopy::sync {
namespace {

// Local meta: the ancestors the last welcome named ("root-a,root-b").
constexpr std::string_view kAncestorsKey = "sync/ancestors";
// forgotten_, persisted: one "<log index> <key>" line per key.
constexpr std::string_view kForgottenKey = "sync/forgotten";
// The parent whose log our saved down position is in, once a welcome opened
// a session with it: positions in any other's are forgotten at the next
// welcome, whichever hubs we know of then.
constexpr std::string_view kPositionedKey = "sync/positioned";
constexpr size_t kForgottenMax = 4096;  // the oldest go first

// Log entries skipped (none of ours) before the up position is reported.
constexpr uint64_t kUpPositionEvery = 256;

bool node_has_replica(const v1::NodeState& n, uint64_t replica) {
  if (n.reg_replica() == replica || n.obj_replica() == replica) return true;
  for (const auto& c : n.children()) {
    if (node_has_replica(c.node(), replica)) return true;
  }
  return false;
}

}  // namespace

std::string ChildSync::down_position_key(const std::string& parent) {
  return "sync/down/" + parent;
}

ChildSync::ChildSync(std::string name, std::string parent, Store* store, Env env,
                     ChildOptions options)
    : ChildSync(std::move(name), std::move(parent), static_cast<StoreView*>(nullptr),
                std::move(env), std::move(options)) {
  owned_view_ = std::make_unique<StoreReader>(store);
  store_ = owned_view_.get();
  load_down_position();
  load_ancestors();
  load_forgotten();
  load_up_whole();
}

ChildSync::ChildSync(std::string name, std::string parent, StoreView* view, Env env,
                     ChildOptions options)
    : name_(std::move(name)),
      parent_(std::move(parent)),
      store_(view),
      env_(std::move(env)),
      opts_(std::move(options)),
      up_(opts_.window, opts_.rto_ms),
      parent_session_timeout_ms_(opts_.parent_session_timeout_ms) {
  parents_.push_back(parent_);
  for (const auto& p : opts_.fallback_parents) {
    if (std::find(parents_.begin(), parents_.end(), p) == parents_.end()) parents_.push_back(p);
  }
  update_hubs();
  if (store_ == nullptr) return;  // the delegating constructor reads it
  load_down_position();
  load_ancestors();
  load_forgotten();
  load_up_whole();
}

void ChildSync::load_down_position() {
  down_ = v1::LogPosition();
  auto saved = store_->get_local(down_position_key(parent_));
  if (saved.ok() && saved->has_value()) down_.ParseFromString(**saved);
}

void ChildSync::load_forgotten() {
  forgotten_.clear();
  auto saved = store_->get_local(kForgottenKey);
  if (!saved.ok() || !saved->has_value()) return;
  std::string_view rest = **saved;
  while (!rest.empty()) {
    const size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos) continue;
    uint64_t index = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + sp, index);
    if (ec != std::errc() || end != line.data() + sp) continue;
    forgotten_[std::string(line.substr(sp + 1))] = index;
  }
}

void ChildSync::load_up_whole() {
  auto saved = store_->get_local(kUpWholeKey);
  if (!saved.ok() || !saved->has_value() || (*saved)->empty()) return;
  // We stopped while documents waited to go up whole: our position does not
  // say what we hold. Forget it (on disk first), so that the first session
  // reconciles; the mark goes once nothing waits.
  up_whole_marked_ = true;
  if (down_.epoch() == 0) return;
  spdlog::info("sync {}: stopped while documents waited to go up whole; reconciling", name_);
  down_ = v1::LogPosition();
  writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
}

Write ChildSync::save_forgotten() {
  while (forgotten_.size() > kForgottenMax) {
    auto oldest =
        std::min_element(forgotten_.begin(), forgotten_.end(),
                         [](const auto& a, const auto& b) { return a.second < b.second; });
    forgotten_.erase(oldest);
  }
  std::string out;
  for (const auto& [key, index] : forgotten_) {
    out += std::to_string(index);
    out += ' ';
    out += key;
    out += '\n';
  }
  return Write::put_local(std::string(kForgottenKey), std::move(out));
}

void ChildSync::load_ancestors() {
  if (!opts_.follow_redirects) return;
  auto saved = store_->get_local(kAncestorsKey);
  if (!saved.ok() || !saved->has_value() || (*saved)->empty()) return;
  auto list = parse_node_list(**saved);
  if (list.ok()) ancestors_ = std::move(list).value();
  update_hubs();
}

void ChildSync::learn_ancestors(const v1::Welcome& w) {
  if (!opts_.follow_redirects) return;
  std::vector<std::string> got;
  for (const auto& a : w.ancestors()) {
    if (validate_node_name(a).ok() && a != name_ &&
        std::find(got.begin(), got.end(), a) == got.end())
      got.push_back(a);
  }
  // A hub at the top names none; keep what a regional hub told us before, so
  // that a session with a peer of the top level does not erase it.
  if (got.empty() || got == ancestors_) return;
  ancestors_ = std::move(got);
  update_hubs();
  std::string text;
  for (const auto& a : ancestors_) text += (text.empty() ? "" : ",") + a;
  writes_.push_back(Write::put_local(std::string(kAncestorsKey), text));
}

bool ChildSync::knows_hub(const std::string& hub) const {
  return std::find(hubs_.begin(), hubs_.end(), hub) != hubs_.end();
}

void ChildSync::update_hubs() {
  hubs_ = parents_;
  for (const auto& a : ancestors_) {
    if (std::find(hubs_.begin(), hubs_.end(), a) == hubs_.end()) hubs_.push_back(a);
  }
}

std::vector<std::string> ChildSync::subscriptions() const {
  // Every hub's, so that a hub named only later (a redirect, an ancestor)
  // reaches us: the site's NATS permissions allow exactly this pattern.
  if (opts_.follow_redirects) return {std::string(kSubjectRoot) + ".*." + name_ + ".down"};
  std::vector<std::string> out;
  for (const auto& p : parents_) out.push_back(down_subject(p, name_));
  return out;
}

bool ChildSync::carries_own_writes(const v1::NodeState& s) const {
  return node_has_replica(s, store_->replica_id());
}

std::string ChildSync::restored_key() const { return "sync/restored/" + parent_; }

bool ChildSync::may_write(std::string_view key) const {
  for (const auto& p : writable_prefixes_) {
    if (key.starts_with(p)) return true;
  }
  return false;
}

bool ChildSync::keep(const v1::DocState& d) const {
  for (const auto& p : writable_prefixes_) {
    if (d.key().starts_with(p)) return true;
  }
  return !writable_known_ && carries_own_writes(d.root());
}

void ChildSync::start() {
  state_ = State::kHello;
  // Until the next hello, no session: a welcome still on its way for the
  // last one must not reopen it (after a restore, say, it would open a
  // catch-up from a position we just dropped).
  session_ = 0;
  backoff_ms_ = opts_.hello_backoff_min_ms;
  next_hello_ms_ = env_.clock->now_ms();
  hello_since_ms_ = next_hello_ms_;
}

uint64_t ChildSync::failover_due_ms() const {
  // Silence on a bus that is down is the bus's, not the parent's.
  if (!failover_enabled() || !connected_) return UINT64_MAX;
  if (state_ == State::kHello) return hello_since_ms_ + failover_wait_ms();
  if (state_ == State::kActive) return last_heard_ms_ + failover_wait_ms();
  return UINT64_MAX;
}

uint64_t ChildSync::failover_wait_ms() const {
  const uint32_t rounds = static_cast<uint32_t>(silent_rounds_ / std::max<size_t>(hubs_.size(), 1));
  return failover_after_ms() << std::min<uint32_t>(rounds, 4);
}

uint64_t ChildSync::anti_entropy_due_ms() const {
  if (opts_.reconcile_every_ms == 0 || state_ != State::kActive || reconciling_) return UINT64_MAX;
  return last_reconciled_ms_ + opts_.reconcile_every_ms;
}

void ChildSync::fail_over(const char* why) {
  // The parents in order, then the ancestors (who redirect us).
  auto at = std::find(hubs_.begin(), hubs_.end(), parent_);
  const size_t i = at == hubs_.end() ? 0 : static_cast<size_t>(at - hubs_.begin()) + 1;
  const std::string to = hubs_[i % hubs_.size()];
  ++stats_.failovers;
  spdlog::warn("sync {}: {} {} for {} ms; failing over to {}", name_, why, parent_,
               failover_wait_ms(), to);
  ++silent_rounds_;
  redirects_since_welcome_ = 0;
  switch_parent(to);
}

void ChildSync::follow_redirect(const std::string& to, const Message& m) {
  if (!opts_.follow_redirects) {
    refuse("a redirect, which this child does not follow", m);
    return;
  }
  if (!validate_node_name(to).ok() || to == name_ || to == parent_) {
    refuse("a redirect to \"" + to + "\"", m);
    return;
  }
  if (++redirects_since_welcome_ > 4) {
    // Hubs that send us around in a loop: stay, and try the next hub when
    // this one's time is up (the count starts again at each failover).
    spdlog::debug("sync {}: {} redirects to {}; not followed, {} in a row without a welcome", name_,
                  parent_, to, redirects_since_welcome_);
    return;
  }
  ++stats_.redirects;
  spdlog::info("sync {}: {} says {} serves us now; saying hello there", name_, parent_, to);
  // The hub that serves us is a parent from now on (until a restart, which
  // begins with the configured ones and is redirected again).
  if (std::find(parents_.begin(), parents_.end(), to) == parents_.end()) {
    parents_.push_back(to);
    update_hubs();
  }
  switch_parent(to);
}

void ChildSync::switch_parent(const std::string& to) {
  const std::string from = parent_;
  parent_ = to;
  parent_replica_ = 0;
  writable_prefixes_.clear();
  writable_known_ = false;
  up_docs_pending_.clear();
  up_docs_unacked_.clear();
  up_full_pending_ = false;
  // What the next parent's session drops (a reconciliation against a hub
  // that lacks what the last one gave us) would make our position in the
  // last one's log claim keys we no longer hold: forget it. A session with a
  // parent we return to reconciles. An ancestor only redirects us: the
  // position is kept, so that a regional hub that was down resumes its
  // sites from its log (a welcome from any other hub forgets it anyway).
  if (std::find(parents_.begin(), parents_.end(), to) != parents_.end()) {
    writes_.push_back(
        Write::put_local(down_position_key(from), v1::LogPosition().SerializeAsString()));
  }
  load_down_position();
  start();
}

void ChildSync::flush() {
  // What we applied and acked on no sequenced message of ours: ack it now,
  // or by the delayed-ack rule (ChildOptions::ack_delay_ms; tick() sends it
  // when it is due).
  if (!ack_due_ || state_ != State::kActive) return;
  const uint64_t now = env_.clock->now_ms();
  if (ack_due_since_ms_ == 0) ack_due_since_ms_ = now;
  if (ack_now_ || now >= delayed_ack_due_ms() ||
      down_recv_.last_applied() >= acked_sent_ + opts_.ack_every) {
    send_ack(false);
  }
}

uint64_t ChildSync::delayed_ack_due_ms() const {
  // Not into a connection known to be down: on reconnecting, an ack goes
  // out at once (on_connection).
  if (!ack_due_ || ack_due_since_ms_ == 0 || !connected_) return UINT64_MAX;
  return ack_due_since_ms_ + opts_.ack_delay_ms;
}

void ChildSync::acked(uint64_t seq) {
  acked_sent_ = seq;
  ack_due_ = false;
  ack_now_ = false;
  ack_due_since_ms_ = 0;
}

Ready ChildSync::take_ready() {
  CANOPY_CHECK(!awaiting_advance_);
  if (connected_ && !outbox_.empty()) last_sent_ms_ = env_.clock->now_ms();
  Ready r;
  r.writes.swap(writes_);
  r.messages.swap(outbox_);
  awaiting_advance_ = !r.writes.empty();
  return r;
}

void ChildSync::advance(const Status& persisted) {
  const bool had_writes = awaiting_advance_;
  awaiting_advance_ = false;
  std::optional<v1::LogPosition> up;
  up.swap(open_up_after_persist_);
  if (persisted.ok()) {
    if (had_writes) persist_failures_ = 0;  // (a Ready without writes proves nothing)
    if (up) open_up(*up, true);
    return;
  }
  // Our memory may be ahead of the disk now (the receive position, the
  // position in the parent's log): start a session over from the disk.
  ++stats_.refused_messages;
  ++persist_failures_;
  load_down_position();
  start();
  if (persist_failures_ > 1) {
    // Failing again (a full disk): each new session would make the parent
    // send the same changes again at once, for as long as the disk stays
    // full. The hello waits, twice as long each time (up to the hellos'
    // longest backoff), until something persists.
    const uint32_t doublings = std::min<uint32_t>(persist_failures_ - 2, 16);
    backoff_ms_ = std::min(opts_.hello_backoff_min_ms << doublings, opts_.hello_backoff_max_ms);
    next_hello_ms_ += backoff_ms_;
  }
  spdlog::warn("sync {}: persisting what {} sent failed: {}; a new session in {} ms", name_,
               parent_, persisted.to_string(), next_hello_ms_ - env_.clock->now_ms());
}

std::shared_ptr<google::protobuf::Arena> ChildSync::decode_arena() {
  if (!scratch_user_.expired()) return std::make_shared<google::protobuf::Arena>();
  auto arena = std::make_shared<google::protobuf::Arena>(scratch_.arena_options());
  scratch_user_ = arena;
  return arena;
}

void ChildSync::refuse(const std::string& why, const Message& m) {
  ++stats_.refused_messages;
  spdlog::warn("sync {}: refused message on {} ({} bytes): {}", name_, m.subject, m.data.size(),
               why);
}

void ChildSync::send_control(v1::SyncEnvelope env) {
  env.set_protocol(kProtocolVersion);
  env.set_from(name_);
  env.set_to(parent_);
  env.set_session(session_);
  Message m{up_subject(parent_, name_), env.SerializeAsString()};
  stats_.bytes_sent += m.data.size();
  outbox_.push_back(std::move(m));
}

void ChildSync::send_sequenced(v1::SyncEnvelope env) {
  const uint64_t seq = up_.next_seq();
  env.set_protocol(kProtocolVersion);
  env.set_from(name_);
  env.set_to(parent_);
  env.set_session(session_);
  env.set_seq(seq);
  if (down_recv_.last_applied() != 0) env.set_acked(down_recv_.last_applied());
  acked(down_recv_.last_applied());
  if (env.has_changes()) {
    for (const auto& e : env.changes().entries()) stats_.deltas_sent += e.has_delta() ? 1 : 0;
  }
  std::string bytes = env.SerializeAsString();
  stats_.bytes_sent += bytes.size();
  outbox_.push_back(Message{up_subject(parent_, name_), bytes});
  up_.sent(seq, std::move(bytes), env_.clock->now_ms());
}

void ChildSync::send_hello() {
  // A new session after each start(): whatever the parent kept of an older
  // one is void. A retry keeps it: the parent answers a repeated hello with
  // its welcome again and keeps the session, so that a welcome slower than
  // the retry (a hub busy with a storm of returning sites) does not open a
  // second session, and a second catch-up, for the same child.
  while (session_ == 0) session_ = env_.random();
  up_docs_pending_.merge(up_docs_unacked_);
  up_docs_unacked_.clear();
  up_ = SendChannel(opts_.window, opts_.rto_ms);
  down_recv_ = RecvChannel();
  acked(0);
  reconciling_ = false;
  sketch_.reset();
  ++stats_.hellos;
  v1::SyncEnvelope env;
  v1::Hello* h = env.mutable_hello();
  h->set_replica_id(store_->replica_id());
  *h->mutable_down() = down_;
  for (const auto& [k, v] : opts_.labels) (*h->mutable_labels())[k] = v;
  h->set_version(opts_.software_version);
  send_control(std::move(env));
  const uint64_t now = env_.clock->now_ms();
  // Jittered exponential backoff: wait in [backoff/2, backoff), then double.
  const uint64_t jitter = backoff_ms_ / 2 == 0 ? 0 : env_.random() % (backoff_ms_ / 2);
  next_hello_ms_ = now + backoff_ms_ / 2 + jitter;
  backoff_ms_ = std::min(backoff_ms_ * 2, opts_.hello_backoff_max_ms);
}

void ChildSync::send_ack(bool gap) {
  v1::SyncEnvelope env;
  env.mutable_ack()->set_seq(down_recv_.last_applied());
  env.mutable_ack()->set_gap(gap);
  if (failover_enabled()) env.mutable_ack()->set_ping(true);
  send_control(std::move(env));
  acked(down_recv_.last_applied());
  last_heartbeat_ms_ = env_.clock->now_ms();
}

void ChildSync::handle_up_ack(uint64_t seq, bool gap) {
  std::vector<std::string> resend;
  up_.on_ack(seq, gap, env_.clock->now_ms(), &resend);
  for (auto& bytes : resend) {
    stats_.bytes_sent += bytes.size();
    outbox_.push_back(Message{up_subject(parent_, name_), std::move(bytes)});
  }
}

void ChildSync::on_message(const Message& m) {
  CANOPY_CHECK(!awaiting_advance_);
  stats_.bytes_received += m.data.size();
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
  if (env.from() != parent_ && env.to() == name_ && knows_hub(env.from()) &&
      m.subject == down_subject(env.from(), name_)) {
    // A parent (or ancestor) we left or have not reached yet: its session is
    // not ours.
    ++stats_.other_parent_messages;
    return;
  }
  if (m.subject != down_subject(parent_, name_) || env.from() != parent_ || env.to() != name_) {
    refuse("addressed from \"" + env.from() + "\" to \"" + env.to() + "\", not to us", m);
    return;
  }
  if (env.protocol() != kProtocolVersion) {
    refuse("protocol version " + std::to_string(env.protocol()) + " is not supported", m);
    return;
  }
  if (env.session() != session_ || session_ == 0) return;  // an older session's message
  last_heard_ms_ = env_.clock->now_ms();
  if (env.has_welcome()) {
    if (state_ == State::kHello) {
      handle_welcome(env);
    } else if (state_ == State::kActive && env.welcome().opening() != welcome_opening_) {
      // The parent opened our session again (a late copy of our hello
      // reached it after it had ended the session, or restarted): its
      // sequence numbers began again, and ours would take its new messages
      // for ones already applied (simulation seed 23582, active-active).
      ++stats_.resets;
      spdlog::info("sync {}: parent {} opened our session anew; starting a new one", name_,
                   parent_);
      start();
    }
    return;
  }
  if (env.has_redirect()) {
    // The answer to our hello, or the end of our session: the parent no
    // longer serves us (the site moved) and names its own parent.
    if (state_ == State::kHello || state_ == State::kActive) {
      follow_redirect(env.redirect().parent(), m);
    }
    return;
  }
  if (env.has_reset()) {
    ++stats_.resets;
    spdlog::info("sync {}: parent {} reset the session: {}", name_, parent_, env.reset().reason());
    start();
    return;
  }
  if (state_ != State::kActive) return;
  if (env.has_ack()) {
    handle_up_ack(env.ack().seq(), env.ack().gap());
    pump_up();
    return;
  }
  if (env.acked() != 0) handle_up_ack(env.acked(), false);  // riding on a sequenced message
  if (!env.has_changes() && !env.has_sketch()) {
    refuse("unexpected message kind from the parent", m);
    return;
  }
  switch (down_recv_.check(env.seq())) {
    case RecvChannel::Verdict::kDuplicate:
      // Resent: our ack was lost or is late; it goes at the next flush.
      ack_due_ = true;
      ack_now_ = true;
      return;
    case RecvChannel::Verdict::kGap:
      send_ack(true);
      return;
    case RecvChannel::Verdict::kApply:
      break;
  }
  if (env.has_changes() && !apply_changes(env.changes(), arena)) return;  // not acked: resent
  down_recv_.applied(env.seq());
  ++stats_.applied_messages;
  // Acked when the batch is flushed (after persisting), or on the reply.
  ack_due_ = true;
  if (env.has_sketch()) answer_sketch(env.sketch());
}

void ChildSync::handle_welcome(const v1::SyncEnvelope& env) {
  const v1::Welcome& w = env.welcome();
  state_ = State::kActive;
  parent_replica_ = w.replica_id();
  welcome_opening_ = w.opening();
  reconciling_ = w.reconcile();
  writable_prefixes_.assign(w.writable_prefixes().begin(), w.writable_prefixes().end());
  writable_known_ = true;
  if (w.replica_id() != 0) hub_replicas_.insert(w.replica_id());
  last_reconciled_ms_ = env_.clock->now_ms();
  redirects_since_welcome_ = 0;
  silent_rounds_ = 0;
  learn_ancestors(w);
  // What this session changes of our holdings makes a position saved in
  // another parent's log claim what we may no longer hold (fail_over forgets
  // the one it leaves; a restart begins at the first parent without leaving
  // any): only the current parent's position stays. Ancestors included: one
  // we failed over to and that served us holds a position too.
  // And the last parent that welcomed us, whether or not we know it now: a
  // regional hub we were redirected to, say, is not among the hubs a
  // restarted child knows, and its stale position made a later session
  // there resume without what we dropped since (simulation seed 308 with
  // moves).
  // When that last parent is this one, the welcome that made it so already
  // forgot the others' positions, and none was saved since (a position is
  // saved only in a session, opened by a welcome): nothing to write.
  auto last = store_->get_local(kPositionedKey);
  const bool positioned_here = last.ok() && last->has_value() && **last == parent_;
  if (!positioned_here) {
    std::set<std::string> others(hubs_.begin(), hubs_.end());
    if (last.ok() && last->has_value() && !(*last)->empty()) others.insert(**last);
    others.erase(parent_);
    for (const std::string& other : others) {
      writes_.push_back(
          Write::put_local(down_position_key(other), v1::LogPosition().SerializeAsString()));
    }
    writes_.push_back(Write::put_local(std::string(kPositionedKey), parent_));
  }
  if (w.session_timeout_ms() != 0) parent_session_timeout_ms_ = w.session_timeout_ms();
  backoff_ms_ = opts_.hello_backoff_min_ms;
  const v1::LogPosition& up = w.up();
  const uint64_t own = store_->replica_id();
  // Writes of ours that the parent holds and we do not: we were restored from
  // an old backup. Handled once per parent (the marker is persisted).
  uint64_t handled = 0;
  if (auto m = store_->get_local(restored_key()); m.ok() && m->has_value()) {
    handled = std::strtoull((*m)->c_str(), nullptr, 10);
  }
  bool restored = w.child_max_seq() > std::max(store_->version_vector().contiguous(own), handled);
  if (!restored && w.child_max_seq() > handled && w.child_max_seq() != 0 &&
      w.child_max_seq_hlc() != 0) {
    // Same seq, another write: we were restored and wrote again since.
    auto hlc = store_->own_delta_hlc(w.child_max_seq());
    if (hlc.ok() && hlc->has_value() && **hlc != w.child_max_seq_hlc()) restored = true;
  }
  if (restored) {
    // Never reuse those seqs; send our documents whole; and take the parent's
    // documents whole too (our position in its log is meaningless now, and
    // our own lost writes come back only that way): reopen the session
    // without a position, which makes the parent reconcile.
    spdlog::warn(
        "sync {}: parent {} holds our writes up to seq {} that we lack; we were "
        "restored from an older state",
        name_, parent_, w.child_max_seq());
    writes_.push_back(Write::reserve_seqs_through(w.child_max_seq()));
    // Our log indexes were reused since the parent last read them: a new
    // epoch makes every position held in our log unusable.
    writes_.push_back(Write::renew_log_epoch());
    writes_.push_back(Write::put_local(restored_key(), std::to_string(w.child_max_seq())));
    down_ = v1::LogPosition();
    writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
    if (!w.reconcile()) {
      up_full_after_restore_ = true;
      start();
      return;
    }
    // The up stream reads the renewed log: once it is persisted.
    open_up_after_persist_ = up;
    return;
  }
  if (w.reconcile() && down_.epoch() != 0) {
    // A reconciliation sends whatever our scope holds now, deltas included,
    // outside the order our saved position describes: forget the position
    // until the reconciliation ends with a new one. Otherwise a session that
    // breaks off mid-way resumes from it while we hold keys it never covered
    // (a scope can change and change back to the version it names).
    down_ = v1::LogPosition();
    writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
  }
  open_up(up, false);
}

void ChildSync::open_up(const v1::LogPosition& up, bool restored) {
  if (up_full_after_restore_) {
    restored = true;
    up_full_after_restore_ = false;
  }
  if (!restored && up.epoch() == store_->log_epoch() &&
      up.index() + 1 >= store_->first_log_index() && up.index() <= store_->last_log_index()) {
    up_sent_ = up.index();
    up_reported_ = up_sent_;
    up_full_pending_ = false;
  } else if (!restored && up.epoch() == 0 && store_->first_log_index() == 1) {
    // The parent has nothing of ours yet and our log is whole: replay it.
    up_sent_ = 0;
    up_full_pending_ = false;
  } else {
    // The parent holds nothing of our log that we can still replay from:
    // send whole what must flow up, then continue from the log's end.
    up_sent_ = store_->last_log_index();
    up_full_pending_ = true;
  }
  spdlog::info("sync {}: session with {} open{}", name_, parent_,
               reconciling_ ? " (reconciling)" : "");
  last_heartbeat_ms_ = env_.clock->now_ms();
  pump_up();
}

void ChildSync::send_whole_up(std::vector<v1::LogEntry> entries) {
  const size_t limit = batch_limit();
  size_t i = 0;
  while (i < entries.size()) {
    v1::SyncEnvelope env;
    size_t bytes = 0;
    while (i < entries.size()) {
      const size_t sz = entries[i].ByteSizeLong() + 8;
      if (env.changes().entries_size() > 0 && bytes + sz > limit) break;
      bytes += sz;
      *env.mutable_changes()->add_entries() = std::move(entries[i++]);
    }
    send_sequenced(std::move(env));
  }
}

void ChildSync::pump_up() {
  if (state_ != State::kActive) return;
  if (!up_docs_unacked_.empty() && up_.in_flight() == 0) up_docs_unacked_.clear();
  if (up_whole_marked_ && !up_whole_awaited()) {
    // Every one went up and was acknowledged: the parent holds it, or
    // persisted its refusal, which reaches us with its changes.
    up_whole_marked_ = false;
    writes_.push_back(Write::put_local(std::string(kUpWholeKey), ""));
  }
  const size_t limit = batch_limit();
  if (up_full_pending_ && up_.can_send()) {
    // Our log does not reach back to what the parent has: send every document
    // that carries our writes, whole.
    auto docs = store_->states(kKeyMin, kKeyMax, nullptr, SIZE_MAX);
    if (!docs.ok()) return;
    std::vector<v1::LogEntry> entries;
    for (auto& d : *docs) {
      if (!keep(d)) continue;
      v1::LogEntry e;
      *e.mutable_doc() = std::move(d);
      entries.push_back(std::move(e));
    }
    send_whole_up(std::move(entries));
    up_full_pending_ = false;
    up_docs_pending_.clear();
  }
  if (!up_docs_pending_.empty() && up_.can_send()) {
    std::vector<v1::LogEntry> entries;
    for (const std::string& k : up_docs_pending_) {
      auto st = store_->state(k);
      if (!st.ok()) return;
      if (!st->has_value()) continue;
      v1::LogEntry e;
      *e.mutable_doc() = std::move(**st);
      entries.push_back(std::move(e));
    }
    up_docs_unacked_.merge(up_docs_pending_);
    up_docs_pending_.clear();
    send_whole_up(std::move(entries));
  }
  while (up_.can_send()) {
    // Nothing logged since what was sent (the common case at every tick):
    // no log read (with a Store, an iterator seek).
    if (store_->last_log_index() <= up_sent_) return;
    auto read = store_->log_since(store_->log_epoch(), up_sent_, nullptr, opts_.log_read_limit);
    if (!read.ok() || !read->complete) return;
    v1::SyncEnvelope env;
    v1::Changes* c = env.mutable_changes();
    size_t bytes = 0;
    uint64_t covered = up_sent_;
    for (auto& e : read->entries) {
      const bool from_parent = e.source() == parent_replica_ && parent_replica_ != 0;
      // With other parents, our log holds what they sent too: what this
      // parent would refuse is not sent. (A single parent's own refusal is
      // the boundary; the child's filter is only to spare the bytes.) Our
      // own writes and our children's go up whatever the prefixes say: the
      // parent refuses what is outside our scope, and we then forget it.
      if (!from_parent &&
          (!failover_enabled() || !hub_replicas_.contains(e.source()) ||
           may_write(e.has_delta() ? e.delta().key() : e.doc().key())) &&
          !forgotten(e)) {
        const size_t sz = e.ByteSizeLong() + 8;
        if (c->entries_size() > 0 && bytes + sz > limit) break;
        bytes += sz;
        *c->add_entries() = std::move(e);
      }
      covered = c->entries_size() > 0 ? c->entries(c->entries_size() - 1).index() : e.index();
    }
    if (read->entries.size() < opts_.log_read_limit &&
        (c->entries_size() == 0 ||
         c->entries(c->entries_size() - 1).index() == read->entries.back().index())) {
      covered = std::max(covered, read->last_index);
    }
    if (covered <= up_sent_ && c->entries_size() == 0) return;
    up_sent_ = covered;
    // Nothing of ours in this stretch of the log: tell the parent how far we
    // got now and then, so that a later session does not scan it again.
    if (c->entries_size() == 0 && up_sent_ < up_reported_ + kUpPositionEvery) continue;
    up_reported_ = up_sent_;
    c->mutable_position()->set_epoch(store_->log_epoch());
    c->mutable_position()->set_index(covered);
    send_sequenced(std::move(env));
  }
}

bool ChildSync::forgotten(const v1::LogEntry& e) const {
  if (forgotten_.empty()) return false;
  auto it = forgotten_.find(e.has_delta() ? e.delta().key() : e.doc().key());
  return it != forgotten_.end() && e.index() <= it->second;
}

void ChildSync::on_commit(const v1::LogEntry& entry) {
  if (entry.index() == 0) return;  // a local drop, not a change to replicate
  if (entry.source() == parent_replica_ && parent_replica_ != 0) return;
  pump_up();
}

void ChildSync::on_connection(bool connected) {
  const bool was = connected_;
  connected_ = connected;
  const uint64_t now = env_.clock->now_ms();
  if (connected && !was) {
    // The parent's silence counts from now: it could not reach us.
    last_heard_ms_ = now;
    hello_since_ms_ = now;
  }
  if (connected && !was && state_ == State::kActive) {
    // The parent's clock runs from the last message it heard from us, which
    // may predate the disconnection by up to a heartbeat.
    if (now >= last_sent_ms_ + parent_session_timeout_ms_) {
      // The parent has forgotten the session by now: open a new one at once
      // (an ack would only earn a reset first).
      start();
    } else {
      // Tell the parent where we are at once: it resends what the outage lost.
      send_ack(false);
    }
  }
}

void ChildSync::tick() {
  const uint64_t now = env_.clock->now_ms();
  if (now >= failover_due_ms()) {
    fail_over(state_ == State::kHello ? "no welcome from" : "no word from");
  }
  if (state_ == State::kHello) {
    if (now >= next_hello_ms_) send_hello();
    return;
  }
  if (state_ != State::kActive) return;
  if (now >= anti_entropy_due_ms()) {
    // Forget the position, so that the hello makes the parent reconcile.
    spdlog::info("sync {}: reconciling with {} again ({} ms since the last time)", name_, parent_,
                 now - last_reconciled_ms_);
    ++stats_.anti_entropy_rounds;
    down_ = v1::LogPosition();
    writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
    start();
    return;
  }
  std::vector<std::string> resend;
  up_.on_tick(now, &resend);
  for (auto& bytes : resend) {
    stats_.bytes_sent += bytes.size();
    outbox_.push_back(Message{up_subject(parent_, name_), std::move(bytes)});
  }
  pump_up();
  // A delayed ack now due (see flush()).
  if (now >= delayed_ack_due_ms()) send_ack(false);
  // No heartbeats into a connection known to be down (NATS.c would only
  // buffer them); on reconnecting, one goes out at once (on_connection).
  if (connected_ && now >= last_heartbeat_ms_ + heartbeat_ms()) send_ack(false);
}

uint64_t ChildSync::next_tick_ms() const {
  // Mirrors tick(): a hello when its backoff ends; when active, what pump_up
  // would send, the oldest unacked message's timeout, the next heartbeat.
  const uint64_t failover = failover_due_ms();
  if (state_ == State::kHello) return std::min(next_hello_ms_, failover);
  if (state_ != State::kActive) return UINT64_MAX;
  if (up_.can_send() && (up_full_pending_ || store_->last_log_index() > up_sent_)) return 0;
  uint64_t due = up_.next_timeout_ms();
  if (connected_) due = std::min(due, last_heartbeat_ms_ + heartbeat_ms());
  return std::min({due, delayed_ack_due_ms(), failover, anti_entropy_due_ms()});
}

bool ChildSync::in_sync() const {
  return state_ == State::kActive && connected_ && !reconciling_ && up_.in_flight() == 0 &&
         !up_full_pending_ && down_.epoch() != 0;
}

}  // namespace canopy::sync
