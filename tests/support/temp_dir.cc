#include "tests/support/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

namespace canopy::testing {
namespace {

bool keep_temp_dirs() {
  const char* keep = std::getenv("CANOPY_KEEP_TEMP");
  return keep != nullptr && keep[0] != '\0' && std::strcmp(keep, "0") != 0;
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string base = (tmpdir != nullptr && tmpdir[0] != '\0') ? tmpdir : "/tmp";
  std::string pattern = base + "/" + std::string(prefix) + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    std::fprintf(stderr, "TempDir: mkdtemp(\"%s\") failed: %s\n", pattern.c_str(),
                 std::strerror(errno));
    std::abort();
  }
  std::error_code ec;
  path_ = std::filesystem::absolute(buffer.data(), ec);
  if (ec) path_ = buffer.data();
}

TempDir::~TempDir() { remove(); }

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

std::string TempDir::file(std::string_view name) const { return (path_ / name).string(); }

void TempDir::remove() {
  if (path_.empty()) return;
  if (keep_temp_dirs()) {
    std::fprintf(stderr, "TempDir: keeping %s (CANOPY_KEEP_TEMP is set)\n", path_.c_str());
  } else {
    std::error_code ec;  // Best effort: a destructor has no one to report to.
    std::filesystem::remove_all(path_, ec);
  }
  path_.clear();
}

}  // namespace canopy::testing
