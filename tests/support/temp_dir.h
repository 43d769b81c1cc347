// TempDir: a fresh directory that lives as long as the object.
//
// The constructor creates a unique directory with mkdtemp under $TMPDIR (or
// /tmp when TMPDIR is unset or empty); the destructor removes it with all its
// contents. Set CANOPY_KEEP_TEMP=1 in the environment to keep the directories
// of a run for inspection (their paths are printed to stderr on destruction).
//
// Failure to create the directory is a broken test machine, not a test result:
// the constructor prints why and aborts. Movable, not copyable; a moved-from
// TempDir owns nothing. Not thread-safe.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace canopy::testing {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "canopy-test-");
  ~TempDir();

  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;

  // The directory's absolute path; empty for a moved-from TempDir.
  const std::filesystem::path& path() const { return path_; }

  // path() / name, as a string: a convenience for building file paths.
  std::string file(std::string_view name) const;

 private:
  void remove();

  std::filesystem::path path_;
};

}  // namespace canopy::testing
