// ParentSync's reconciliation: a child whose position is not in our log
// decodes the difference between its documents and ours in its scope from a
// rateless sketch (sketch.h) and asks for the documents that differ, which
// are sent whole (see parent.h).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "sync/engine/parent.h"
#include "sync/engine/parent_session.h"
#include "sync/engine/sketch.h"

namespace canopy::sync {

namespace {

// What `read_keys` (the listed keys) and `read_range` (each listed prefix,
// filtered to the child's scope) answer for the scope of `child`, in key
// order, each key once. Without a listing, everything we hold is filtered:
// O(our documents) for each child, which at a hub with thousands of sites
// joining is the join.
template <typename T, typename ReadKeys, typename ReadRange, typename KeyOf>
StatusOr<std::vector<T>> read_scope(ScopeProvider* scope, const std::string& child,
                                    ReadKeys read_keys, ReadRange read_range, KeyOf key_of) {
  const KeyFilter filter = [&](std::string_view k) { return scope->in_scope(child, k); };
  std::optional<ScopeProvider::Listing> listing = scope->list_scope(child);
  if (!listing) return read_range(kKeyMin, kKeyMax, filter);
  StatusOr<std::vector<T>> out = read_keys(std::move(listing->keys));
  if (!out.ok()) return out;
  for (const std::string& prefix : listing->prefixes) {
    StatusOr<std::vector<T>> under = read_range(prefix, prefix + std::string(kKeyMax), filter);
    if (!under.ok()) return under;
    out->insert(out->end(), std::make_move_iterator(under->begin()),
                std::make_move_iterator(under->end()));
  }
  // A key both listed and under a prefix goes once.
  std::sort(out->begin(), out->end(),
            [&](const T& a, const T& b) { return key_of(a) < key_of(b); });
  out->erase(std::unique(out->begin(), out->end(),
                         [&](const T& a, const T& b) { return key_of(a) == key_of(b); }),
             out->end());
  return out;
}

}  // namespace

void ParentSync::start_reconcile(Session* s) {
  ++stats_.reconciliations;
  s->mode = Mode::kReconcile;
  s->pending.clear();
  // Everything up to here is covered by the documents we compare; what is
  // committed later streams live (merging is order-independent).
  s->sent_index = store_->last_log_index();
  const std::string child = s->child;
  auto hashes = scope_hashes(child);
  if (!hashes.ok()) {
    spdlog::error("sync {}: reading the documents in {}'s scope failed: {}", name_, child,
                  hashes.status().to_string());
    retry_later(s, Mode::kReconcile);
    return;
  }
  s->sketch = std::make_unique<Session::Sketch>();
  s->sketch->keys.reserve(hashes->size());
  for (auto& [key, id] : *hashes) {
    s->sketch->encoder.add(id);
    s->sketch->keys.emplace_back(id, std::move(key));
  }
  std::sort(s->sketch->keys.begin(), s->sketch->keys.end());
  ++s->round;
  send_sketch(s, std::max<size_t>(1, opts_.sketch_first_symbols));
}

StatusOr<std::vector<std::pair<std::string, uint64_t>>> ParentSync::scope_hashes(
    const std::string& child) {
  using Hash = std::pair<std::string, uint64_t>;
  return read_scope<Hash>(
      scope_, child,
      [&](std::vector<std::string> keys) { return store_->doc_hashes_of(std::move(keys)); },
      [&](std::string_view first, std::string_view last, const KeyFilter& f) {
        return store_->doc_hashes(first, last, f);
      },
      [](const Hash& h) -> const std::string& { return h.first; });
}

void ParentSync::send_sketch(Session* s, size_t n) {
  Session::Sketch& k = *s->sketch;
  const std::vector<SketchSymbol>& symbols = k.encoder.extend(k.sent + n);
  // 8 + 4 + up to 10 bytes a symbol: messages stay under the payload limit.
  const size_t per_message = std::max<size_t>(1, batch_limit() / 24);
  const size_t end = k.sent + n;
  while (k.sent < end) {
    const size_t m = std::min(per_message, end - k.sent);
    v1::SyncEnvelope env;
    v1::Sketch* out = env.mutable_sketch();
    out->set_round(s->round);
    out->set_offset(k.sent);
    out->set_items(k.keys.size());
    out->mutable_counts()->Reserve(static_cast<int>(m));
    out->mutable_ids()->Reserve(static_cast<int>(m));
    out->mutable_checks()->Reserve(static_cast<int>(m));
    for (size_t i = k.sent; i < k.sent + m; ++i) {
      out->add_counts(symbols[i].count);
      out->add_ids(symbols[i].id);
      out->add_checks(symbols[i].check);
    }
    k.sent += m;
    send_sequenced(s, std::move(env));
  }
  stats_.sketch_symbols_sent += n;
}

void ParentSync::handle_sketch_reply(Session* s, const v1::SketchReply& reply) {
  if (s->mode != Mode::kReconcile || !s->sketch || reply.round() != s->round) return;
  Session::Sketch& k = *s->sketch;
  if (reply.whole()) {
    spdlog::info("sync {}: {} asks for its whole scope ({} documents)", name_, s->child,
                 k.keys.size());
    send_whole(s);
    return;
  }
  if (reply.decoded()) {
    std::vector<std::string> keys;
    keys.reserve(static_cast<size_t>(reply.wanted_size()));
    for (uint64_t id : reply.wanted()) {
      auto it = std::lower_bound(k.keys.begin(), k.keys.end(), std::make_pair(id, std::string()));
      if (it == k.keys.end() || it->first != id) {
        // Not one of ours: the decode went wrong (a collision) or the child
        // misbehaves. The whole scope settles it either way.
        spdlog::warn(
            "sync {}: {} decoded a sketch to an id we do not hold; sending its scope whole", name_,
            s->child);
        send_whole(s);
        return;
      }
      keys.push_back(it->second);
    }
    send_documents(s, keys);
    return;
  }
  if (reply.received() != k.sent) return;  // an answer to an earlier message of the batch
  // The child could not decode yet: double what it has. A child that keeps
  // asking although it holds few documents gets the scope whole.
  if (k.sent >= 4 * (k.keys.size() + 1024)) {
    send_whole(s);
    return;
  }
  send_sketch(s, k.sent);
}

void ParentSync::send_documents(Session* s, const std::vector<std::string>& keys) {
  // Live changes queued so far go first, so the stream keeps log order per key.
  pump_live(s);
  std::vector<v1::DocState> docs;
  docs.reserve(keys.size());
  for (const std::string& key : keys) {
    if (!scope_->in_scope(s->child, key)) continue;  // left the scope since
    auto st = store_->state(key);
    if (!st.ok()) {
      spdlog::error("sync {}: reading {} for {}: {}", name_, key, s->child,
                    st.status().to_string());
      retry_later(s, Mode::kReconcile);
      return;
    }
    if (st->has_value()) docs.push_back(std::move(**st));
  }
  size_t i = 0;
  do {
    v1::SyncEnvelope env;
    v1::Changes* c = env.mutable_changes();
    i = add_documents(&docs, i, c);
    if (i == docs.size()) {
      c->set_reconciled(true);
      if (s->pending.empty()) {
        // Nothing committed meanwhile is waiting: this message also ends
        // the reconciliation (finish_reconcile would send the position alone).
        s->sent_index = std::max(s->sent_index, last_commit_index_);
        set_position(s, c, s->sent_index);
        s->mode = Mode::kLive;
      }
    }
    send_sequenced(s, std::move(env));
  } while (i < docs.size());
  s->sketch.reset();
  if (s->mode == Mode::kLive) {
    release_slot(s);
    grant_slots();
  } else {
    finish_reconcile(s);
  }
}

size_t ParentSync::add_documents(std::vector<v1::DocState>* docs, size_t i, v1::Changes* c) {
  const size_t limit = batch_limit();
  size_t bytes = 0;
  while (i < docs->size()) {
    const size_t sz = (*docs)[i].ByteSizeLong() + 16;
    if (c->entries_size() > 0 && bytes + sz > limit) break;
    bytes += sz;
    *c->add_entries()->mutable_doc() = std::move((*docs)[i]);
    ++i;
    ++stats_.documents_sent;
  }
  return i;
}

void ParentSync::send_whole(Session* s) {
  s->sketch.reset();
  const std::string child = s->child;
  auto docs = scope_states(child);
  if (!docs.ok()) {
    spdlog::error("sync {}: reading documents for {} failed: {}", name_, child,
                  docs.status().to_string());
    retry_later(s, Mode::kReconcile);
    return;
  }
  // Chunks tile the whole key space, so that "covered" never spans a
  // document that travels in another chunk.
  const std::string last(kKeyMax);
  size_t i = 0;
  std::string first(kKeyMin);
  do {
    v1::SyncEnvelope env;
    v1::Changes* c = env.mutable_changes();
    i = add_documents(&*docs, i, c);
    v1::RangeFingerprint* cov = c->add_covered();
    cov->set_first(first);
    cov->set_last(i < docs->size() ? c->entries(c->entries_size() - 1).doc().key() : last);
    // The next chunk starts just above this one's last key (keys hold no NUL).
    if (i < docs->size()) first = cov->last() + std::string(1, '\0');
    send_sequenced(s, std::move(env));
  } while (i < docs->size());
  finish_reconcile(s);
}

StatusOr<std::vector<v1::DocState>> ParentSync::scope_states(const std::string& child) {
  auto read_keys = [&](std::vector<std::string> keys) -> StatusOr<std::vector<v1::DocState>> {
    std::vector<v1::DocState> out;
    out.reserve(keys.size());
    for (const std::string& key : keys) {
      auto st = store_->state(key);
      if (!st.ok()) return st.status();
      if (st->has_value()) out.push_back(std::move(**st));
    }
    return out;
  };
  // In key order: the chunks' covered ranges rely on it.
  return read_scope<v1::DocState>(
      scope_, child, read_keys,
      [&](std::string_view first, std::string_view last, const KeyFilter& f) {
        return store_->states(first, last, f, SIZE_MAX);
      },
      [](const v1::DocState& d) -> const std::string& { return d.key(); });
}

void ParentSync::finish_reconcile(Session* s) {
  // Entries committed since the snapshot went out without a position; send
  // the rest and, with it, the position that makes the child's state resumable.
  std::vector<OutgoingPtr> pending;
  pending.swap(s->pending);
  // As in pump_live: keys may have left the scope since these were queued.
  std::erase_if(pending, [&](const OutgoingPtr& e) { return !wanted(s, e->entry); });
  const uint64_t final_index = std::max(s->sent_index, last_commit_index_);
  s->mode = Mode::kLive;
  release_slot(s);
  send_entries(s, pending, true, final_index);
  grant_slots();
}

}  // namespace canopy::sync
