// WatchFanout: every watch stream of the hub fed from one store subscription.
//
// The store's listener runs on a writing thread with the store's lock held;
// it only appends (key, log index) to the fan-out's input and wakes the
// fan-out's thread, so a commit never waits for a watcher. That thread takes
// what is pending in one go, keeps the last change of each key (its state is
// read after all of them), finds the watchers of the key's prefix (kind and
// tenant, `t/<tenant>/templates/`) in a map, reads the object once, builds
// the event once (and its wire encoding as one entry of a WatchResponse) and
// hands the same immutable event to each of those watchers' queues.
//
// Positions: an event carries the log index of the change it reports; the
// state it holds was read after that change, so every change of its kind and
// tenant at or below its position is delivered once it is (a change of
// another key coalesced into a later event is delivered by that event, which
// a resume from this position replays). A watcher drops events at or below
// the position it started from.
//
// A watcher whose queue holds `limit` events when another arrives is ended
// (RESOURCE_EXHAUSTED): its stream re-lists and watches again.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "canopy/v1/hub.pb.h"
#include "store/document.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::api {

// Reads the object at `key` into `out`: its version, and with `with_json`
// its canonical JSON. False when there is none (a deleted one: the version
// is set). Shared by the catalogue's reads and the fan-out's events.
StatusOr<bool> read_object(Store* store, const std::string& key, size_t max_depth, v1::Object* out,
                           bool with_json = true);
// "<log epoch>.<log index>": where a watch can resume.
std::string position_text(uint64_t epoch, uint64_t index);
// RESOURCE_EXHAUSTED: a watcher more than `limit` changes behind, which
// loses nothing by watching again from `resume` ("<epoch>.<index>").
Status fell_behind(size_t limit, const std::string& resume);

// One change as every watcher of its prefix receives it; never modified
// once built.
struct WatchItem {
  v1::WatchEvent event;  // position set
  // `event` encoded as one element of WatchResponse.events (field tag,
  // length, bytes): a stream message is these concatenated.
  std::string framed;
  uint64_t index = 0;     // the log index of the change (0: outside the log)
  uint64_t position = 0;  // the log index of event.position
};
using WatchItemPtr = std::shared_ptr<const WatchItem>;

// Why a watcher ended.
enum class WatchEnd { kNone, kOverflow, kShutdown, kCancelled, kError };

// One watch stream's queue. `mu` guards everything; `wake` is called with it
// held whenever events arrive or the watcher ends, and must not block (a
// stream's reactor starts a write; a blocking reader notifies `cv`).
struct WatchQueue {
  std::string prefix;
  std::string kind, tenant;
  std::string site;  // kind device: the site whose devices are watched
  // Events without the document (Object.json empty): what changed, at which
  // version, for watchers that read the objects they care about themselves.
  bool metadata_only = false;
  size_t limit = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<WatchItemPtr> items;
  WatchEnd end = WatchEnd::kNone;
  std::function<void()> wake;
  // The position (log index) of the last event taken from `items` (or where
  // the watcher started): a watch resumed from it misses nothing the
  // stream has not been handed. Advanced by take() and note_taken().
  uint64_t taken = 0;

  // REQUIRES: mu held.
  void end_with(WatchEnd why);
  // Takes up to `max_items` pending events. REQUIRES: mu held.
  std::vector<WatchItemPtr> take(size_t max_items);
  // Records that `item` left `items` by another way than take().
  // REQUIRES: mu held.
  void note_taken(const WatchItem& item) { taken = std::max(taken, item.position); }

 private:
  friend class WatchFanout;
  bool starting = true;             // events go to `early` until start ends
  std::vector<WatchItemPtr> early;  // live events that arrived while starting
  uint64_t after = 0;               // events at or below are already covered
  size_t replayed = 0;              // the queue may hold limit + replayed events
  // Appends `batch` (in log order). REQUIRES: mu held.
  void push(const std::vector<WatchItemPtr>& batch);
};

class WatchFanout {
 public:
  // Subscribes to `store` (which must outlive the fan-out). Deliveries are
  // at least `interval` apart: under a stream of changes, each watcher gets
  // what committed in one interval as one message instead of a message per
  // change (at most `interval` of added delay; an idle fan-out delivers at
  // once).
  WatchFanout(Store* store, DocumentLimits limits, std::chrono::microseconds interval);
  ~WatchFanout();
  WatchFanout(const WatchFanout&) = delete;
  WatchFanout& operator=(const WatchFanout&) = delete;

  // Opens a watcher of `prefix` (kind `kind`, tenant `tenant`) starting after
  // log index `from` of the current epoch, or from now when `from` is empty.
  // Events between `from` and now are read from the log (OUT_OF_RANGE when it
  // no longer reaches back). `*position` is where the watcher starts: every
  // later change reaches it. UNAVAILABLE after shutdown().
  // A resume replays at most `replay_limit` objects (RESOURCE_EXHAUSTED
  // beyond: re-list); its queue then holds up to `limit` live events on top
  // of the replay.
  StatusOr<std::shared_ptr<WatchQueue>> open(const std::string& kind, const std::string& tenant,
                                             const std::string& site, const std::string& prefix,
                                             std::optional<uint64_t> from, size_t limit,
                                             size_t replay_limit, uint64_t* position,
                                             bool metadata_only = false);
  // Forgets a watcher (its stream ended).
  void close(const std::shared_ptr<WatchQueue>& w);
  // Ends every watcher (kShutdown) and refuses new ones.
  void shutdown();

  uint64_t epoch() const { return epoch_; }

  struct Stats {
    size_t watchers = 0;       // open now
    uint64_t fell_behind = 0;  // ended (or refused at open) for falling behind
  };
  Stats stats() const;

 private:
  struct Change {
    std::string key;
    uint64_t index = 0;
  };
  using Watchers = std::vector<std::shared_ptr<WatchQueue>>;

  void run();
  // The event of `key`'s change as of now (read from the store), named as
  // `w` names its objects: [0] with the document, [1] metadata only, each
  // built where `forms` asks. Both come from one read: a change committed
  // between two reads would give the two kinds of watcher different events
  // at the same position.
  using Forms = std::array<bool, 2>;
  StatusOr<std::array<WatchItemPtr, 2>> build(const std::string& key, const WatchQueue& w,
                                              Forms forms, uint64_t index, uint64_t position);

  Store* store_;
  DocumentLimits limits_;
  std::chrono::microseconds interval_;
  uint64_t epoch_;

  // The input: changes appended by the store's listener.
  std::mutex in_mu_;
  std::condition_variable in_cv_;
  std::vector<Change> in_;
  bool stopping_ = false;

  // The watchers by prefix, copied on write: the fan-out's thread reads a
  // snapshot without holding `mu_` while it delivers.
  mutable std::mutex mu_;
  bool shut_down_ = false;
  std::map<std::string, std::shared_ptr<const Watchers>> by_prefix_;
  uint64_t last_index_ = 0;  // the greatest log index handed out (fan-out thread)
  std::atomic<uint64_t> fell_behind_{0};

  uint64_t subscription_ = 0;
  std::thread thread_;
};

}  // namespace canopy::api
