#include "spoke/dir_watch.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

namespace canopy::spoke {

namespace {

constexpr uint32_t kEntryEvents =
    IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;
constexpr uint32_t kSelfEvents = IN_DELETE_SELF | IN_MOVE_SELF;

std::string error_text(int err) { return std::generic_category().message(err); }

}  // namespace

DirWatch::DirWatch(std::string dir, Filter filter, Callback on_change,
                   std::chrono::milliseconds retry)
    : dir_(std::move(dir)),
      filter_(std::move(filter)),
      on_change_(std::move(on_change)),
      retry_(retry) {}

StatusOr<std::unique_ptr<DirWatch>> DirWatch::start(std::string dir, Filter filter,
                                                    Callback on_change,
                                                    std::chrono::milliseconds retry) {
  std::unique_ptr<DirWatch> w(
      new DirWatch(std::move(dir), std::move(filter), std::move(on_change), retry));
  w->inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->inotify_fd_ < 0) return internal_error("inotify_init1: " + error_text(errno));
  w->stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->stop_fd_ < 0) return internal_error("eventfd: " + error_text(errno));
  // The first watch is added here, so that what changes after start() returns
  // is seen (when the directory exists).
  w->wd_ =
      ::inotify_add_watch(w->inotify_fd_, w->dir_.c_str(), kEntryEvents | kSelfEvents | IN_ONLYDIR);
  w->watching_ = w->wd_ >= 0;
  DirWatch* raw = w.get();
  w->thread_ = std::thread([raw] { raw->run(); });
  return w;
}

DirWatch::~DirWatch() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    if (::write(stop_fd_, &one, sizeof one) < 0) {
      spdlog::error("dir watch {}: cannot stop: {}", dir_, error_text(errno));
    }
    thread_.join();
  }
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void DirWatch::run() {
  for (;;) {
    if (wd_ < 0) {
      wd_ = ::inotify_add_watch(inotify_fd_, dir_.c_str(), kEntryEvents | kSelfEvents | IN_ONLYDIR);
      if (wd_ >= 0) {
        watching_ = true;
        spdlog::info("dir watch {}: watching again", dir_);
        on_change_();
      }
    }
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int timeout = wd_ < 0 ? static_cast<int>(retry_.count()) : -1;
    const int n = ::poll(fds, 2, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("dir watch {}: poll: {}; watching stops", dir_, error_text(errno));
      return;
    }
    if ((fds[1].revents & POLLIN) != 0) return;
    if ((fds[0].revents & POLLIN) != 0 && drain()) on_change_();
  }
}

bool DirWatch::drain() {
  alignas(inotify_event) char buf[16 * 1024];
  bool look = false;
  for (;;) {
    const ssize_t len = ::read(inotify_fd_, buf, sizeof buf);
    if (len < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) spdlog::error("dir watch {}: read: {}", dir_, error_text(errno));
      return look;
    }
    for (ssize_t off = 0; off < len;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if ((ev->mask & IN_Q_OVERFLOW) != 0) {
        look = true;
        continue;
      }
      if ((ev->mask & (kSelfEvents | IN_IGNORED)) != 0) {
        // Gone or moved away: the kernel drops the watch (IN_IGNORED follows
        // a deletion); after a move it would follow the directory elsewhere.
        // (Events of a watch dropped earlier name its old descriptor.)
        if (ev->wd == wd_) {
          if ((ev->mask & IN_MOVE_SELF) != 0) ::inotify_rm_watch(inotify_fd_, wd_);
          spdlog::warn("dir watch {}: the directory is gone", dir_);
          wd_ = -1;
          watching_ = false;
        }
        look = true;
        continue;
      }
      if (ev->len > 0 && filter_(std::string_view(ev->name))) look = true;
    }
  }
}

}  // namespace canopy::spoke
