// ChildSync's down stream (see child.h): applying what the parent sends —
// changes, whole documents, drops and refusals, positions — and answering
// its sketches in a reconciliation.
#include <spdlog/spdlog.h>

#include <set>

#include "store/document.h"
#include "sync/engine/child.h"
#include "sync/protocol.h"

namespace canopy::sync {

bool ChildSync::apply_changes(const v1::Changes& c, const std::shared_ptr<const void>& owner) {
  std::vector<const v1::Delta*> batch;
  std::vector<v1::DocState> docs;
  std::set<std::string> doc_keys;
  for (const v1::LogEntry& e : c.entries()) {
    if (e.has_delta()) {
      batch.push_back(&e.delta());
    } else if (e.has_doc()) {
      doc_keys.insert(e.doc().key());
      docs.push_back(e.doc());
    }
    if (sketch_) {
      const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
      sketch_->on_parent_sent(key);
      // While reconciling, where we may write, ours may hold writes the
      // parent lacks (it refused them, or dropped them while its own scope
      // did not hold the key). Anything it sends of the key now — a whole
      // document, a write of ours relayed back, another writer's change —
      // says it holds the key, not all of ours: ours goes up whole
      // (simulation seeds 21766 and 28658 with moves, active-active roots
      // and region failover). The parent merges it as a no-op when it had
      // everything.
      if (may_write(key)) {
        auto mine = store_->state(key);
        if (mine.ok() && mine->has_value()) up_docs_pending_.insert(key);
      }
    }
  }
  // The drops below are read before the changes above are persisted: a
  // message never both changes and drops a key (drops come with a scope
  // change or a reconciliation, apart from the documents they send), and the
  // documents it carries are not dropped.
  const size_t first_write = writes_.size();
  if (!batch.empty())
    writes_.push_back(Write::apply_deltas(std::move(batch), owner, parent_replica_));
  if (!docs.empty()) {
    for (const auto& d : docs) {
      spdlog::debug("sync {}: doc {}", name_, d.key());
    }
    stats_.documents_received += docs.size();
    writes_.push_back(Write::apply_states(std::move(docs), parent_replica_));
  }
  if (c.has_writable()) {
    writable_prefixes_.assign(c.writable().prefixes().begin(), c.writable().prefixes().end());
  }
  // With a peer below a parent, what we may not write is the parent's to
  // drop (ChildOptions::keep_unwritable): nothing here is read for a drop.
  const bool may_drop = !opts_.keep_unwritable;
  std::vector<std::string> drop;
  for (const std::string& k : c.drop()) {
    if (!may_drop) break;
    auto st = store_->state(k);
    if (st.ok() && st->has_value() && !keep(**st)) drop.push_back(k);
  }
  // Writes the parent refused, outside our scope: they can never flow up,
  // so even our own are forgotten. Unless we may write there now (the
  // refusal is older than our prefixes), or the document holds a write
  // newer than those refused: then it goes up again whole, for the parent
  // to judge as it stands now.
  bool forgot = false;
  for (const v1::Refused& r : c.refused()) {
    auto st = store_->state(r.key());
    if (!st.ok() || !st->has_value()) continue;
    bool newer = may_write(r.key());
    if (!newer) {
      auto doc = Document::from_proto((*st)->root());
      newer = !doc.ok() || doc->max_hlc() > r.hlc();
    }
    if (newer) {
      up_docs_pending_.insert(r.key());
    } else if (may_drop) {
      drop.push_back(r.key());
      forgotten_[r.key()] = store_->last_log_index();
      forgot = true;
    }
  }
  if (c.reconciled() && sketch_ && sketch_->decoded()) {
    for (const std::string& k : sketch_->only_here()) {
      auto st = store_->state(k);
      if (!st.ok() || !st->has_value()) continue;
      if (!keep(**st)) {
        if (!may_drop) continue;
        if (carries_own_writes((*st)->root())) {
          // Ours, outside the prefixes we hold: they may lag the parent's
          // (it granted the key and took our write after its sketch was
          // made), and it sends a child none of its own writes back, so a
          // drop could lose the write for good. Up whole instead, for the
          // parent to judge: a refusal then drops it (it is not newer).
          up_docs_pending_.insert(k);
        } else {
          drop.push_back(k);
        }
      } else if (may_write(k)) {
        // Ours to write and the parent lacks it: send it up whole (our log
        // went up past it, say, while the parent refused it).
        up_docs_pending_.insert(k);
      }
    }
    sketch_.reset();
  }
  for (const v1::RangeFingerprint& r : c.covered()) {
    if (!may_drop) break;
    auto mine = store_->states(r.first(), r.last(), nullptr, SIZE_MAX);
    if (!mine.ok()) {
      writes_.resize(first_write);
      return false;
    }
    for (const v1::DocState& d : *mine) {
      if (doc_keys.count(d.key()) == 0 && !keep(d)) drop.push_back(d.key());
    }
  }
  if (forgot) writes_.push_back(save_forgotten());
  if (!drop.empty()) {
    spdlog::debug("sync {}: dropping {} keys, first {}", name_, drop.size(), drop.front());
    for (const std::string& k : drop) up_docs_pending_.erase(k);
    stats_.dropped_keys += drop.size();
    writes_.push_back(Write::drop(std::move(drop)));
  }
  if (down_.epoch() != 0 && unpositions(c)) {
    // What we hold no longer matches the position we saved: forget it until
    // the parent sends a new one, so that a session that starts before then
    // reconciles. A scope version alone cannot tell: a scope can change and
    // change back.
    down_ = v1::LogPosition();
    writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
  }
  if (c.has_position() || (c.index() != 0 && down_.epoch() != 0)) {
    // The short form (index alone) keeps the epoch and scope version we hold.
    // Holding none, we keep none: the parent sends it only when the session
    // leaves us holding one, so this is a peer's error, and a later session
    // reconciles instead of trusting a position we cannot complete.
    if (c.has_position()) {
      down_ = c.position();
    } else {
      down_.set_index(c.index());
    }
    if (reconciling_) last_reconciled_ms_ = env_.clock->now_ms();
    reconciling_ = false;
    // Written after the changes it covers (persist() keeps the order).
    writes_.push_back(Write::put_local(down_position_key(parent_), down_.SerializeAsString()));
  }
  if (!up_whole_marked_ && up_whole_awaited()) {
    // Before this message's drops and position (see up_whole_marked_).
    up_whole_marked_ = true;
    writes_.insert(writes_.begin() + static_cast<std::ptrdiff_t>(first_write),
                   Write::put_local(std::string(kUpWholeKey), "1"));
  }
  return true;
}

void ChildSync::answer_sketch(const v1::Sketch& k) {
  reconciling_ = true;
  if (!sketch_ || sketch_->round() != k.round()) {
    // A new reconciliation: our side of the comparison is what we hold now.
    // (Entries the parent streams from here on are newer than its side.)
    auto hashes = store_->doc_hashes(kKeyMin, kKeyMax, nullptr);
    if (!hashes.ok()) {
      spdlog::error("sync {}: reading our documents: {}", name_, hashes.status().to_string());
      hashes = std::vector<std::pair<std::string, uint64_t>>();  // answered "whole" below
    }
    sketch_ = std::make_unique<SketchReceiver>(k.round(), std::move(*hashes));
  }
  v1::SyncEnvelope env;
  std::string why;
  switch (sketch_->on_sketch(k, env.mutable_sketch_reply(), &why)) {
    case SketchReceiver::Answer::kNone:
      return;
    case SketchReceiver::Answer::kWhole:
      spdlog::info("sync {}: asking {} for the whole scope: {}", name_, parent_, why);
      sketch_.reset();
      break;
    case SketchReceiver::Answer::kDecoded:
      spdlog::info("sync {}: reconciled with {}: {} documents to receive, {} held only here", name_,
                   parent_, env.sketch_reply().wanted_size(), sketch_->only_here().size());
      break;
    case SketchReceiver::Answer::kMore:
      break;
  }
  send_sequenced(std::move(env));
}

}  // namespace canopy::sync
