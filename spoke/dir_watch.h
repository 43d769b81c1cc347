// DirWatch: tells when entries of a directory change, by inotify(7), so that a
// hand edit or deletion in the manifests directory is repaired at once instead
// of at the next full resync.
//
// What it reports. `on_change` runs (on the watch's own thread) after any
// batch of events that touches an entry whose name passes `filter` (created,
// written, deleted, moved in or out, attributes changed), when the kernel's
// event queue overflowed (anything may have changed), and when the directory
// itself is deleted or moved away. It says only "look again", never what
// changed: the caller compares desired and actual state, which makes lost or
// coalesced events harmless. Writes of the caller's own also fire it; a pass
// that finds nothing to repair is the price (one cheap pass per batch).
//
// A missing directory. While the directory does not exist (not yet created,
// or deleted), the watch retries every `retry` and, once it is watching again,
// calls `on_change` once: what happened meanwhile is unknown.
//
// Thread-safety: start/destruction from one thread; `on_change` must be
// thread-safe with respect to the caller and must not destroy the watch.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "store/status.h"

namespace canopy::spoke {

class DirWatch {
 public:
  using Filter = std::function<bool(std::string_view name)>;
  using Callback = std::function<void()>;

  // Starts watching (or retrying to). Internal on inotify or thread failure.
  static StatusOr<std::unique_ptr<DirWatch>> start(
      std::string dir, Filter filter, Callback on_change,
      std::chrono::milliseconds retry = std::chrono::milliseconds(1000));
  // Stops the thread; no call of `on_change` runs after it returns.
  ~DirWatch();
  DirWatch(const DirWatch&) = delete;
  DirWatch& operator=(const DirWatch&) = delete;

  // Whether the directory is being watched now (false while it is missing).
  bool watching() const { return watching_.load(); }

 private:
  DirWatch(std::string dir, Filter filter, Callback on_change, std::chrono::milliseconds retry);
  void run();
  // Reads the pending events; true when one of them calls for a look.
  bool drain();

  const std::string dir_;
  const Filter filter_;
  const Callback on_change_;
  const std::chrono::milliseconds retry_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: written to stop the thread
  int wd_ = -1;       // the watch descriptor; -1 while not watching
  std::atomic<bool> watching_{false};
  std::thread thread_;
};

}  // namespace canopy::spoke
