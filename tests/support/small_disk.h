// SmallDisk: a real filesystem that fills up, for the full-disk tests: a
// tmpfs of a given size mounted on an existing directory (root may mount;
// elsewhere mount() fails and the test skips, saying why), filled by a file,
// and unmounted when it goes out of scope. Header-only: the store's tests
// use it without the test support library.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace canopy::testing {

class SmallDisk {
 public:
  SmallDisk() = default;
  ~SmallDisk() {
    if (!at_.empty()) ::umount2(at_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  // Mounts a tmpfs of `size` ("16m") on the directory `at`, hiding what it
  // holds. Empty on success, else why not.
  std::string mount(const std::string& at, const std::string& size) {
    const std::string options = "size=" + size;
    if (::mount("tmpfs", at.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      return "cannot mount a tmpfs at " + at + " (" + std::strerror(errno) +
             "): a full disk needs a small filesystem of its own";
    }
    at_ = at;
    return "";
  }
  // Fills it but for `leave` bytes (a file's last page may still take a few
  // more). Empty on success, else why not.
  std::string fill(uint64_t leave) const {
    struct statvfs fs {};
    if (::statvfs(at_.c_str(), &fs) != 0) return std::string("statvfs: ") + std::strerror(errno);
    const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free_bytes <= leave) return "only " + std::to_string(free_bytes) + " bytes free";
    const int fd = ::open(filler().c_str(), O_CREAT | O_WRONLY, 0600);
    if (fd < 0) return filler() + ": " + std::strerror(errno);
    const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(free_bytes - leave));
    ::close(fd);
    return err == 0 ? "" : std::string("posix_fallocate: ") + std::strerror(err);
  }
  // Gives the room back. Empty on success, else why not.
  std::string empty() const {
    return ::unlink(filler().c_str()) == 0 ? "" : filler() + ": " + std::strerror(errno);
  }

 private:
  std::string filler() const { return at_ + "/filler"; }
  std::string at_;
};

}  // namespace canopy::testing
