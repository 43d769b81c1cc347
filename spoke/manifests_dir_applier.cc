#include "spoke/manifests_dir_applier.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

namespace canopy::spoke {

using nlohmann::json;

namespace {

// Files larger than this are not Canopy's: their hash is not looked for.
constexpr off_t kMaxReadBytes = 16 << 20;

// strerror() is not thread-safe; the generic category's message is.
std::string error_text(int err) { return std::generic_category().message(err); }

// Errors of the directory's own making (gone, read-only, permissions) are a
// precondition for the operator to fix; the rest (disk full, I/O) may pass.
Status errno_status(int err, const std::string& what) {
  std::string msg = what + ": " + error_text(err);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case EACCES:
    case EPERM:
    case EROFS:
      return failed_precondition(std::move(msg));
    default:
      return unavailable(std::move(msg));
  }
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

Status write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(errno, "writing " + what);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok_status();
}

// Reads the whole of `fd` (expected `size` bytes).
Status read_all(int fd, off_t size, std::string* out, const std::string& what) {
  out->clear();
  out->reserve(static_cast<size_t>(size));
  char buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(errno, "reading " + what);
    }
    if (n == 0) return ok_status();
    out->append(buf, static_cast<size_t>(n));
    if (static_cast<off_t>(out->size()) > kMaxReadBytes) return ok_status();
  }
}

const json* annotations_of(const json& obj) {
  if (!obj.is_object()) return nullptr;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return nullptr;
  auto ann = meta->find("annotations");
  if (ann == meta->end() || !ann->is_object()) return nullptr;
  return &*ann;
}

// Creates `dir` (0700) and its missing parents (0755), like `mkdir -p`.
Status create_dir(const std::string& dir) {
  for (size_t slash = dir.find('/', 1); slash != std::string::npos;
       slash = dir.find('/', slash + 1)) {
    const std::string parent = dir.substr(0, slash);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      return failed_precondition("manifests directory " + dir + ": cannot create " + parent + ": " +
                                 error_text(errno));
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return failed_precondition("manifests directory " + dir +
                               ": cannot create it: " + error_text(errno));
  }
  spdlog::warn("manifests directory {} was missing: created it", dir);
  return ok_status();
}

}  // namespace

ManifestsDirApplier::ManifestsDirApplier(ManifestsDirOptions options)
    : options_(std::move(options)) {
  if (options_.clock == nullptr) options_.clock = SystemClock::instance();
  if (options_.sync_threads == 0) options_.sync_threads = 1;
}

ManifestsDirApplier::~ManifestsDirApplier() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

StatusOr<std::unique_ptr<ManifestsDirApplier>> ManifestsDirApplier::open(
    const ManifestsDirOptions& options) {
  if (options.dir.empty()) return failed_precondition("manifests directory is not set");
  std::unique_ptr<ManifestsDirApplier> a(new ManifestsDirApplier(options));
  CANOPY_RETURN_IF_ERROR(a->ensure_dir());
  return a;
}

Status ManifestsDirApplier::ensure_dir() {
  const std::string& dir = options_.dir;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 && errno == ENOENT && options_.create_missing) {
    CANOPY_RETURN_IF_ERROR(create_dir(dir));
  }
  if (::stat(dir.c_str(), &st) != 0) {
    return failed_precondition("manifests directory " + dir + ": " + error_text(errno));
  }
  if (dir_fd_ >= 0 && st.st_ino == dir_ino_ && st.st_dev == dir_dev_) return ok_status();
  // First use, or the directory was replaced (k3s reinstalled): start over.
  if (!S_ISDIR(st.st_mode)) {
    return failed_precondition("manifests directory " + dir + " is not a directory");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return failed_precondition("manifests directory " + dir +
                               " is not writable: " + error_text(errno));
  }
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return failed_precondition("manifests directory " + dir + ": " + error_text(errno));
  if (dir_fd_ >= 0) ::close(dir_fd_);
  dir_fd_ = fd;
  dir_ino_ = st.st_ino;
  dir_dev_ = st.st_dev;
  entries_.clear();
  return load_existing();
}

std::string ManifestsDirApplier::path(std::string_view file_name) const {
  std::string p = options_.dir;
  if (!p.ends_with('/')) p.push_back('/');
  p.append(file_name);
  return p;
}

Status ManifestsDirApplier::load_existing() {
  int fd = ::dup(dir_fd_);
  if (fd < 0) return errno_status(errno, "listing manifests directory " + options_.dir);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return errno_status(errno, "listing manifests directory " + options_.dir);
  }
  ::rewinddir(d);
  std::vector<std::string> stale;
  std::vector<std::string> ours;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.starts_with(kTempFilePrefix)) {
      stale.emplace_back(name);
    } else if (model::parse_manifest_file_name(name, nullptr, nullptr)) {
      ours.emplace_back(name);
    }
  }
  ::closedir(d);
  for (const std::string& name : stale) {
    if (::unlinkat(dir_fd_, name.c_str(), 0) != 0 && errno != ENOENT) {
      return errno_status(errno, "removing stale temporary file " + path(name));
    }
  }
  stale_removed_ = stale.size();
  if (!stale.empty()) CANOPY_RETURN_IF_ERROR(sync_dir());
  for (const std::string& name : ours) {
    auto e = read_entry(name);
    if (e.ok()) {
      entries_[name] = std::move(e).value();
    } else if (e.status().code() != StatusCode::kNotFound) {
      return e.status();
    }
  }
  return ok_status();
}

StatusOr<ManifestsDirApplier::Entry> ManifestsDirApplier::read_entry(const std::string& file_name,
                                                                     std::string* text_out) {
  int fd = ::openat(dir_fd_, file_name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return not_found(path(file_name) + " does not exist");
    return errno_status(errno, "opening " + path(file_name));
  }
  Entry e;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_status(err, "stat of " + path(file_name));
  }
  e.ino = st.st_ino;
  e.size = st.st_size;
  e.mtime_ns = mtime_ns(st);
  std::string text;
  Status rs = S_ISREG(st.st_mode) && st.st_size <= kMaxReadBytes
                  ? read_all(fd, st.st_size, &text, path(file_name))
                  : ok_status();
  ::close(fd);
  CANOPY_RETURN_IF_ERROR(rs);
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (text_out != nullptr) *text_out = std::move(text);
  const json* ann = annotations_of(doc);
  if (ann == nullptr) return e;  // not a manifest we wrote: unknown, rewritten when applied
  auto removed = ann->find(kRemovedAtAnnotation);
  if (removed != ann->end() && removed->is_string() && doc.value("kind", json()) == "List") {
    e.tombstone = true;
    e.removed_at_ms = std::strtoull(removed->get_ref<const std::string&>().c_str(), nullptr, 10);
    return e;
  }
  auto hash = ann->find(model::kHashAnnotation);
  if (hash != ann->end() && hash->is_string() &&
      hash->get_ref<const std::string&>() == model::content_hash(doc)) {
    e.hash = hash->get_ref<const std::string&>();
  }
  return e;
}

bool ManifestsDirApplier::unchanged_on_disk(const std::string& file_name, const Entry& e) {
  struct stat st;
  if (::fstatat(dir_fd_, file_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return st.st_ino == e.ino && st.st_size == e.size && mtime_ns(st) == e.mtime_ns;
}

std::string ManifestsDirApplier::file_content(const model::RenderedObject& object) {
  std::string text = object.object.dump(2, ' ', false, json::error_handler_t::replace);
  text.push_back('\n');
  return text;
}

std::string ManifestsDirApplier::tombstone_content(uint64_t removed_at_ms) {
  // An empty List: k3s reads it as an Addon with no objects and prunes what
  // the Addon applied before.
  json t = {
      {"apiVersion", "v1"},
      {"kind", "List"},
      {"items", json::array()},
      {"metadata",
       {{"annotations", {{std::string(kRemovedAtAnnotation), std::to_string(removed_at_ms)}}}}}};
  std::string text = t.dump(2);
  text.push_back('\n');
  return text;
}

Status ManifestsDirApplier::sync_dir() {
  if (::fsync(dir_fd_) != 0) {
    return errno_status(errno, "fsync of manifests directory " + options_.dir);
  }
  return ok_status();
}

void ManifestsDirApplier::write_temp(Write* w) {
  const std::string what = path(w->temp_name);
  int fd = ::openat(dir_fd_, w->temp_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    w->status = errno_status(errno, "creating " + what);
    return;
  }
  Status st = write_all(fd, w->content, what);
  if (st.ok() && ::fsync(fd) != 0) st = errno_status(errno, "fsync of " + what);
  struct stat sb;
  if (st.ok() && ::fstat(fd, &sb) != 0) st = errno_status(errno, "stat of " + what);
  ::close(fd);
  if (!st.ok()) {
    ::unlinkat(dir_fd_, w->temp_name.c_str(), 0);
    w->status = st;
    return;
  }
  // rename() keeps the inode and mtime, so these describe the target after it.
  w->entry.ino = sb.st_ino;
  w->entry.size = sb.st_size;
  w->entry.mtime_ns = mtime_ns(sb);
}

void ManifestsDirApplier::write_files(std::vector<Write*>& writes) {
  if (writes.empty()) return;
  const std::string pid = std::to_string(::getpid());
  for (Write* w : writes) {
    w->temp_name = std::string(kTempFilePrefix) + pid + "-" + std::to_string(++temp_counter_) +
                   "-" + w->file_name;
  }
  // Phase 1: temporary files written and fsynced, in parallel (fsyncs of
  // different files overlap in the journal).
  size_t threads = std::min(options_.sync_threads, writes.size());
  if (threads <= 1) {
    for (Write* w : writes) write_temp(w);
  } else {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (size_t t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (size_t i = next.fetch_add(1); i < writes.size(); i = next.fetch_add(1)) {
          write_temp(writes[i]);
        }
      });
    }
    for (auto& th : pool) th.join();
  }
  // Phase 2: renames, in order, then one fsync of the directory.
  bool renamed = false;
  for (Write* w : writes) {
    if (!w->status.ok()) continue;
    if (::renameat(dir_fd_, w->temp_name.c_str(), dir_fd_, w->file_name.c_str()) != 0) {
      w->status = errno_status(errno, "renaming " + path(w->temp_name) + " to " + w->file_name);
      ::unlinkat(dir_fd_, w->temp_name.c_str(), 0);
      continue;
    }
    renamed = true;
  }
  Status synced = renamed ? sync_dir() : ok_status();
  for (Write* w : writes) {
    if (!w->status.ok()) continue;
    if (!synced.ok()) {
      // The new bytes are visible but may not survive a crash: report the
      // failure and forget the entry, so the next apply writes again.
      w->status = synced;
      entries_.erase(w->file_name);
      continue;
    }
    w->entry.hash = w->hash;
    w->entry.tombstone = w->tombstone;
    w->entry.removed_at_ms = w->removed_at_ms;
    entries_[w->file_name] = w->entry;
  }
}

StatusOr<ApplyOutcome> ManifestsDirApplier::apply(const model::RenderedObject& object) {
  auto out = apply_all({&object});
  return std::move(out.front());
}

std::vector<StatusOr<ApplyOutcome>> ManifestsDirApplier::apply_all(
    const std::vector<const model::RenderedObject*>& objects) {
  std::vector<StatusOr<ApplyOutcome>> results;
  results.reserve(objects.size());
  if (Status st = ensure_dir(); !st.ok()) {
    for (size_t i = 0; i < objects.size(); ++i) results.push_back(st);
    return results;
  }
  std::vector<Write> writes;
  writes.reserve(objects.size());
  std::vector<size_t> write_of(objects.size(), SIZE_MAX);

  for (size_t i = 0; i < objects.size(); ++i) {
    const model::RenderedObject& o = *objects[i];
    const std::string message = "manifest " + path(o.file_name);
    if (!model::parse_manifest_file_name(o.file_name, nullptr, nullptr)) {
      results.push_back(invalid_argument("file name " + o.file_name + " of " + o.template_key +
                                         " is not a Canopy manifest file name"));
      continue;
    }
    auto it = entries_.find(o.file_name);
    if (it != entries_.end() && !it->second.tombstone && it->second.hash == o.hash &&
        unchanged_on_disk(o.file_name, it->second)) {
      results.push_back(ApplyOutcome{false, message, {}, {}, {}});
      continue;
    }
    std::string content = file_content(o);
    // Not known to be right: compare the bytes before writing.
    std::string text;
    auto existing = read_entry(o.file_name, &text);
    if (existing.ok() && text == content) {
      entries_[o.file_name] = std::move(existing).value();
      results.push_back(ApplyOutcome{false, message, {}, {}, {}});
      continue;
    }
    write_of[i] = writes.size();
    Write w;
    w.file_name = o.file_name;
    w.content = std::move(content);
    w.hash = o.hash;
    writes.push_back(std::move(w));
    results.push_back(ApplyOutcome{true, message, {}, {}, {}});
  }

  std::vector<Write*> ptrs;
  ptrs.reserve(writes.size());
  for (Write& w : writes) ptrs.push_back(&w);
  write_files(ptrs);
  for (size_t i = 0; i < objects.size(); ++i) {
    if (write_of[i] == SIZE_MAX) continue;
    const Write& w = writes[write_of[i]];
    if (!w.status.ok()) results[i] = w.status;
  }
  return results;
}

Status ManifestsDirApplier::remove(const std::string& id) {
  if (!model::parse_manifest_file_name(id, nullptr, nullptr)) {
    return invalid_argument(id + " is not a Canopy manifest file name");
  }
  CANOPY_RETURN_IF_ERROR(ensure_dir());
  auto it = entries_.find(id);
  if (it != entries_.end() && it->second.tombstone && unchanged_on_disk(id, it->second)) {
    return ok_status();
  }
  struct stat st;
  if (::fstatat(dir_fd_, id.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) return errno_status(errno, "stat of " + path(id));
    entries_.erase(id);
    return ok_status();  // already gone
  }
  if (!options_.tombstones) {
    if (::unlinkat(dir_fd_, id.c_str(), 0) != 0 && errno != ENOENT) {
      return errno_status(errno, "removing " + path(id));
    }
    entries_.erase(id);
    return sync_dir();
  }
  Write w;
  w.file_name = id;
  w.tombstone = true;
  w.removed_at_ms = options_.clock->now_ms();
  w.content = tombstone_content(w.removed_at_ms);
  std::vector<Write*> ptrs{&w};
  write_files(ptrs);
  return w.status;
}

StatusOr<std::vector<std::string>> ManifestsDirApplier::inventory() {
  CANOPY_RETURN_IF_ERROR(ensure_dir());
  int fd = ::dup(dir_fd_);
  if (fd < 0) return errno_status(errno, "listing manifests directory " + options_.dir);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return errno_status(errno, "listing manifests directory " + options_.dir);
  }
  ::rewinddir(d);
  std::vector<std::string> present;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (model::parse_manifest_file_name(name, nullptr, nullptr)) present.emplace_back(name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return errno_status(err, "listing manifests directory " + options_.dir);
  std::sort(present.begin(), present.end());

  // Bring the remembered entries in line with the directory: files that
  // appeared or changed behind our back are read again, vanished ones dropped.
  std::unordered_map<std::string, Entry> fresh;
  fresh.reserve(present.size());
  std::vector<std::string> out;
  for (const std::string& name : present) {
    auto it = entries_.find(name);
    Entry e;
    if (it != entries_.end() && unchanged_on_disk(name, it->second)) {
      e = std::move(it->second);
    } else {
      auto r = read_entry(name);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kNotFound) continue;
        return r.status();
      }
      e = std::move(r).value();
    }
    if (!e.tombstone) out.push_back(name);
    fresh.emplace(name, std::move(e));
  }
  entries_ = std::move(fresh);
  return out;
}

Status ManifestsDirApplier::collect_garbage() {
  if (!options_.tombstones) return ok_status();
  const uint64_t now = options_.clock->now_ms();
  bool removed = false;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    if (!e.tombstone || now < e.removed_at_ms + options_.tombstone_retention_ms ||
        !unchanged_on_disk(it->first, e)) {
      ++it;
      continue;
    }
    if (::unlinkat(dir_fd_, it->first.c_str(), 0) != 0 && errno != ENOENT) {
      return errno_status(errno, "removing tombstone " + path(it->first));
    }
    removed = true;
    it = entries_.erase(it);
  }
  return removed ? sync_dir() : ok_status();
}

}  // namespace canopy::spoke
