#include "store/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace canopy {

Status write_file_atomically(const std::string& path, std::string_view text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& file) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return unavailable(file + ": " + std::strerror(e));
  };
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return unavailable(tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      const int e = errno;
      ::close(fd);
      errno = e;
      return fail(tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return fail(tmp);
  }
  if (::close(fd) != 0) return fail(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return fail(path);
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return ok_status();
}

}  // namespace canopy
