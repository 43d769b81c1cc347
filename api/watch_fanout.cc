#include "api/watch_fanout.h"

#include <google/protobuf/io/coded_stream.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "api/objects.h"

namespace canopy::api {
namespace {

// `key`'s prefix (up to and with its last '/'), or empty when it has none.
std::string_view prefix_of_key(std::string_view key) {
  const size_t slash = key.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : key.substr(0, slash + 1);
}

}  // namespace

StatusOr<bool> read_object(Store* store, const std::string& key, size_t max_depth, v1::Object* out,
                           bool with_json) {
  auto st = store->state(key);
  if (!st.ok()) return st.status();
  if (!st->has_value()) return false;
  auto doc = Document::from_proto((*st)->root(), max_depth);
  if (!doc.ok()) return doc.status();
  out->set_version(doc->max_hlc());
  if (!doc->exists()) return false;
  if (with_json) out->set_json(doc->to_json());
  return true;
}

std::string position_text(uint64_t epoch, uint64_t index) {
  return std::to_string(epoch) + "." + std::to_string(index);
}

Status fell_behind(size_t limit, const std::string& resume) {
  return Status(StatusCode::kResourceExhausted,
                "watch fell behind by more than " + std::to_string(limit) +
                    " changes; watch again from " + resume + " to miss nothing");
}

// --- WatchQueue.

void WatchQueue::end_with(WatchEnd why) {
  if (end != WatchEnd::kNone) return;
  end = why;
  items.clear();
  early.clear();
  if (wake) wake();
}

std::vector<WatchItemPtr> WatchQueue::take(size_t max_items) {
  std::vector<WatchItemPtr> out;
  const size_t n = std::min(max_items, items.size());
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    note_taken(*items.front());
    out.push_back(std::move(items.front()));
    items.pop_front();
  }
  return out;
}

void WatchQueue::push(const std::vector<WatchItemPtr>& batch) {
  if (end != WatchEnd::kNone) return;
  if (starting) {
    if (early.size() + batch.size() > limit) {
      end_with(WatchEnd::kOverflow);
      return;
    }
    early.insert(early.end(), batch.begin(), batch.end());
    return;
  }
  bool added = false;
  for (const auto& item : batch) {
    if (item->index != 0 && item->index <= after) continue;
    if (items.size() >= limit + replayed) {
      end_with(WatchEnd::kOverflow);
      return;
    }
    items.push_back(item);
    added = true;
  }
  if (added && wake) wake();
}

// --- WatchFanout.

WatchFanout::WatchFanout(Store* store, DocumentLimits limits, std::chrono::microseconds interval)
    : store_(store), limits_(limits), interval_(interval), epoch_(store->log_epoch()) {
  subscription_ = store_->subscribe([this](const v1::LogEntry& e) {
    // On the writing thread with the store's lock held: copy and go.
    {
      std::lock_guard lock(in_mu_);
      in_.push_back({e.has_delta() ? e.delta().key() : e.doc().key(), e.index()});
    }
    in_cv_.notify_one();
  });
  thread_ = std::thread([this] { run(); });
}

WatchFanout::~WatchFanout() {
  store_->unsubscribe(subscription_);
  {
    std::lock_guard lock(in_mu_);
    stopping_ = true;
  }
  in_cv_.notify_one();
  thread_.join();
  shutdown();
}

void WatchFanout::shutdown() {
  std::map<std::string, std::shared_ptr<const Watchers>> all;
  {
    std::lock_guard lock(mu_);
    shut_down_ = true;
    all = by_prefix_;
  }
  for (const auto& [prefix, watchers] : all) {
    for (const auto& w : *watchers) {
      std::lock_guard lock(w->mu);
      w->end_with(WatchEnd::kShutdown);
    }
  }
}

void WatchFanout::close(const std::shared_ptr<WatchQueue>& w) {
  std::lock_guard lock(mu_);
  auto it = by_prefix_.find(w->prefix);
  if (it == by_prefix_.end()) return;
  auto rest = std::make_shared<Watchers>();
  rest->reserve(it->second->size());
  for (const auto& other : *it->second) {
    if (other != w) rest->push_back(other);
  }
  if (rest->empty()) {
    by_prefix_.erase(it);
  } else {
    it->second = std::move(rest);
  }
}

namespace {

// `event` framed as field 1 (events, length-delimited) of a WatchResponse.
std::string frame(const v1::WatchEvent& event) {
  const size_t size = event.ByteSizeLong();
  std::string framed;
  framed.push_back(static_cast<char>((1 << 3) | 2));
  uint8_t varint[10];
  const uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(size, varint);
  framed.append(reinterpret_cast<const char*>(varint), static_cast<size_t>(end - varint));
  const size_t head = framed.size();
  framed.resize(head + size);
  event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(framed.data() + head));
  return framed;
}

}  // namespace

StatusOr<std::array<WatchItemPtr, 2>> WatchFanout::build(const std::string& key,
                                                         const WatchQueue& w, Forms forms,
                                                         uint64_t index, uint64_t position) {
  v1::WatchEvent event;
  v1::Object* obj = event.mutable_object();
  name_object(w.kind, w.tenant, std::string_view(key).substr(w.prefix.size()), obj, w.site);
  auto found = read_object(store_, key, limits_.max_depth, obj, /*with_json=*/forms[0]);
  if (!found.ok()) return found.status();
  event.set_type(*found ? v1::WatchEvent::PUT : v1::WatchEvent::DELETE);
  event.set_position(position_text(epoch_, position));
  std::array<WatchItemPtr, 2> out;
  auto item = [&](v1::WatchEvent e) {
    auto it = std::make_shared<WatchItem>();
    it->index = index;
    it->position = position;
    it->event = std::move(e);
    it->framed = frame(it->event);
    return it;
  };
  if (forms[1]) {
    // The document set aside while the metadata is copied.
    std::string doc = std::move(*obj->mutable_json());
    obj->clear_json();
    out[1] = item(event);
    obj->set_json(std::move(doc));
  }
  if (forms[0]) out[0] = item(std::move(event));
  return out;
}

void WatchFanout::run() {
  std::vector<Change> batch;
  auto last_delivery = std::chrono::steady_clock::now() - interval_;
  while (true) {
    {
      std::unique_lock lock(in_mu_);
      in_cv_.wait(lock, [&] { return stopping_ || !in_.empty(); });
      if (stopping_) return;
      // Lets the changes of one interval gather.
      const auto next = last_delivery + interval_;
      if (std::chrono::steady_clock::now() < next) {
        in_cv_.wait_until(lock, next, [&] { return stopping_; });
        if (stopping_) return;
      }
      last_delivery = std::chrono::steady_clock::now();
      batch.swap(in_);
    }
    // The last change of each key in the batch: its state is read once, after
    // all of them.
    std::unordered_map<std::string_view, size_t> last;
    uint64_t batch_last_index = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      last[batch[i].key] = i;
      batch_last_index = std::max(batch_last_index, batch[i].index);
    }
    std::map<std::string, std::shared_ptr<const Watchers>> snapshot;
    {
      std::lock_guard lock(mu_);
      // Only the prefixes this batch touches.
      for (const auto& c : batch) {
        const std::string_view p = prefix_of_key(c.key);
        if (p.empty()) continue;
        auto it = by_prefix_.find(std::string(p));
        if (it != by_prefix_.end()) snapshot.emplace(it->first, it->second);
      }
    }
    // Which forms of event each touched prefix's watchers take: [0] with
    // the document, [1] metadata only; each is built once.
    std::map<std::string_view, Forms> forms;
    for (const auto& [prefix, watchers] : snapshot) {
      Forms& f = forms[prefix];
      for (const auto& w : *watchers) f[w->metadata_only ? 1 : 0] = true;
    }
    // By prefix and form, in log order.
    std::map<std::string_view, std::array<std::vector<WatchItemPtr>, 2>> items;
    uint64_t running_index = last_index_;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Change& c = batch[i];
      if (c.index != 0) running_index = std::max(running_index, c.index);
      if (last[c.key] != i) continue;
      const std::string_view p = prefix_of_key(c.key);
      auto it = snapshot.find(std::string(p));
      if (p.empty() || p.size() == c.key.size() || it == snapshot.end()) continue;
      const WatchQueue& any = *it->second->front();
      const Forms& wanted = forms[it->first];
      auto built = build(c.key, any, wanted, c.index, c.index != 0 ? c.index : running_index);
      if (!built.ok()) {
        // The store failed to read: the watchers of this prefix cannot be
        // told the truth any more; end them so that they re-list.
        spdlog::error("catalog: watch: reading {}: {}", c.key, built.status().message());
        for (const auto& w : *it->second) {
          std::lock_guard lock(w->mu);
          w->end_with(WatchEnd::kError);
        }
        continue;
      }
      for (int form = 0; form < 2; ++form) {
        if (wanted[form]) items[it->first][form].push_back(std::move((*built)[form]));
      }
    }
    last_index_ = std::max(last_index_, batch_last_index);
    for (const auto& [prefix, lists] : items) {
      for (const auto& w : *snapshot.at(std::string(prefix))) {
        std::lock_guard lock(w->mu);
        const bool was_open = w->end == WatchEnd::kNone;
        w->push(lists[w->metadata_only ? 1 : 0]);
        if (was_open && w->end == WatchEnd::kOverflow) ++fell_behind_;
      }
    }
    batch.clear();
  }
}

StatusOr<std::shared_ptr<WatchQueue>> WatchFanout::open(
    const std::string& kind, const std::string& tenant, const std::string& site,
    const std::string& prefix, std::optional<uint64_t> from, size_t limit, size_t replay_limit,
    uint64_t* position, bool metadata_only) {
  auto w = std::make_shared<WatchQueue>();
  w->prefix = prefix;
  w->kind = kind;
  w->tenant = tenant;
  w->site = site;
  w->metadata_only = metadata_only;
  w->limit = limit;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return Status(StatusCode::kUnavailable, "the hub is shutting down");
    auto& slot = by_prefix_[prefix];
    auto more = slot ? std::make_shared<Watchers>(*slot) : std::make_shared<Watchers>();
    more->push_back(w);
    slot = std::move(more);
  }
  // Live events now reach `early`. What committed before is in the state
  // (from now) or in the log (a resume).
  std::vector<WatchItemPtr> replay;
  uint64_t after = 0;
  uint64_t start_after = 0;
  if (!from.has_value()) {
    after = store_->last_log_index();
    start_after = after;
  } else {
    const auto too_old = Status(StatusCode::kOutOfRange, "too old");
    auto direct_child = [&prefix](std::string_view key) {
      if (!key.starts_with(prefix)) return false;
      const std::string_view name = key.substr(prefix.size());
      return !name.empty() && name.find('/') == std::string_view::npos;
    };
    std::vector<std::pair<std::string, uint64_t>> changes;  // in log order
    after = *from;
    constexpr size_t kPage = 1000;
    while (true) {
      auto page = store_->log_since(epoch_, after, direct_child, kPage);
      if (!page.ok()) {
        close(w);
        return page.status();
      }
      if (!page->complete) {
        close(w);
        return too_old;
      }
      for (const auto& e : page->entries) {
        changes.emplace_back(e.has_delta() ? e.delta().key() : e.doc().key(), e.index());
        after = std::max(after, e.index());
      }
      if (page->entries.size() < kPage) {
        after = std::max(after, page->last_index);
        break;
      }
    }
    // The last change of each key, in log order; its state is read now.
    std::unordered_map<std::string_view, size_t> last;
    for (size_t i = 0; i < changes.size(); ++i) last[changes[i].first] = i;
    if (last.size() > replay_limit) {
      // Resuming from `from` again would fail the same way.
      close(w);
      return Status(StatusCode::kResourceExhausted,
                    "more than " + std::to_string(replay_limit) +
                        " objects changed since the position; re-list and watch again");
    }
    for (size_t i = 0; i < changes.size(); ++i) {
      if (last[changes[i].first] != i) continue;
      const int form = metadata_only ? 1 : 0;
      Forms forms{};
      forms[form] = true;
      auto built = build(changes[i].first, *w, forms, changes[i].second, changes[i].second);
      if (!built.ok()) {
        close(w);
        return built.status();
      }
      replay.push_back(std::move((*built)[form]));
    }
  }
  // Nothing was handed to the watcher yet: a retry from where it asked to
  // start misses nothing.
  const Status behind =
      fell_behind(limit, position_text(epoch_, from.has_value() ? *from : start_after));
  std::lock_guard lock(w->mu);
  if (w->end != WatchEnd::kNone) {
    // Shut down, or too many live changes, meanwhile.
    close(w);
    if (w->end == WatchEnd::kOverflow) {
      ++fell_behind_;
      return behind;
    }
    return Status(StatusCode::kUnavailable, "the hub is shutting down");
  }
  w->after = after;
  w->starting = false;
  std::vector<WatchItemPtr> early = std::move(w->early);
  w->early.clear();
  w->items.assign(replay.begin(), replay.end());
  w->replayed = replay.size();
  w->push(early);
  if (w->end == WatchEnd::kOverflow) {
    close(w);
    ++fell_behind_;
    return behind;
  }
  *position = after;
  if (!w->items.empty()) {
    // The position before the first pending event: a resume from it loses
    // nothing.
    *position = std::min(after, w->items.front()->index == 0 ? after : w->items.front()->index - 1);
  }
  w->taken = *position;
  return w;
}

WatchFanout::Stats WatchFanout::stats() const {
  Stats out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [prefix, watchers] : by_prefix_) out.watchers += watchers->size();
  }
  out.fell_behind = fell_behind_.load();
  return out;
}

}  // namespace canopy::api
