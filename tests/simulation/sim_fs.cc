#include "tests/simulation/sim_fs.h"

#include <vector>

namespace canopy::sim {
namespace {

using rocksdb::IOStatus;

// A writable file that reports its appends and syncs to the file system.
class SimWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  SimWritableFile(std::unique_ptr<rocksdb::FSWritableFile> target, SimFileSystem* fs,
                  std::string name)
      : FSWritableFileOwnerWrapper(std::move(target)), fs_(fs), name_(std::move(name)) {}

  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  rocksdb::IODebugContext* dbg) override {
    IOStatus s = fs_->on_append(name_, data.size());
    return s.ok() ? target()->Append(data, o, dbg) : s;
  }
  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  const rocksdb::DataVerificationInfo& /*info*/,
                  rocksdb::IODebugContext* dbg) override {
    return Append(data, o, dbg);
  }
  IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t, const rocksdb::IOOptions&,
                            rocksdb::IODebugContext*) override {
    return IOStatus::NotSupported("SimFileSystem: positioned appends");
  }
  IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t, const rocksdb::IOOptions&,
                            const rocksdb::DataVerificationInfo&,
                            rocksdb::IODebugContext*) override {
    return IOStatus::NotSupported("SimFileSystem: positioned appends");
  }
  IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                    rocksdb::IODebugContext* dbg) override {
    IOStatus s = fs_->on_truncate(name_, size);
    return s.ok() ? target()->Truncate(size, o, dbg) : s;
  }
  IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    IOStatus s = target()->Flush(o, dbg);
    return s.ok() ? fs_->on_sync(name_) : s;
  }
  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Sync(o, dbg);
  }
  // (RocksDB's SyncWAL requires it; the in-memory file's Flush and our
  // bookkeeping, under the file system's mutex, are.)
  bool IsSyncThreadSafe() const override { return true; }
  IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                     rocksdb::IODebugContext*) override {
    return IOStatus::OK();  // a hint; syncs nothing for sure
  }
  IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    IOStatus s = fs_->check_active(name_);
    IOStatus t = target()->Close(o, dbg);
    return s.ok() ? t : s;
  }

 private:
  SimFileSystem* fs_;
  std::string name_;
};

}  // namespace

SimFileSystem::SimFileSystem() : SimFileSystem(rocksdb::NewMemEnv(rocksdb::Env::Default())) {}

SimFileSystem::SimFileSystem(rocksdb::Env* mem_env)
    : FileSystemWrapper(mem_env->GetFileSystem()), mem_env_(mem_env) {
  // Not owned by the composite env: this object outlives it.
  env_ = rocksdb::NewCompositeEnv(std::shared_ptr<rocksdb::FileSystem>(this, [](auto*) {}));
}

SimFileSystem::~SimFileSystem() = default;

void SimFileSystem::fail_next_write(const std::string& dir) {
  std::lock_guard lock(mu_);
  fail_dir_ = dir + "/";
}

bool SimFileSystem::armed() const {
  std::lock_guard lock(mu_);
  return !fail_dir_.empty();
}

bool SimFileSystem::disarm() {
  std::lock_guard lock(mu_);
  const bool armed = !fail_dir_.empty();
  fail_dir_.clear();
  return armed;
}

void SimFileSystem::crash(const std::string& dir) {
  std::lock_guard lock(mu_);
  crashed_.insert(dir + "/");
  fail_dir_.clear();
}

namespace {
bool under(const std::set<std::string>& dirs, const std::string& f) {
  for (const auto& d : dirs) {
    if (f.starts_with(d)) return true;
  }
  return false;
}
}  // namespace

IOStatus SimFileSystem::check_active(const std::string& f) const {
  std::lock_guard lock(mu_);
  return under(crashed_, f) ? IOStatus::IOError("SimFileSystem: crashed") : IOStatus::OK();
}

IOStatus SimFileSystem::on_append(const std::string& f, uint64_t bytes) {
  std::lock_guard lock(mu_);
  if (under(crashed_, f)) return IOStatus::IOError("SimFileSystem: crashed");
  if (!fail_dir_.empty() && f.starts_with(fail_dir_)) {
    fail_dir_.clear();
    return IOStatus::IOError("SimFileSystem: injected write failure");
  }
  files_[f].size += bytes;
  return IOStatus::OK();
}

IOStatus SimFileSystem::on_sync(const std::string& f) {
  std::lock_guard lock(mu_);
  if (under(crashed_, f)) return IOStatus::IOError("SimFileSystem: crashed");
  if (!fail_dir_.empty() && f.starts_with(fail_dir_)) {
    fail_dir_.clear();
    return IOStatus::IOError("SimFileSystem: injected sync failure");
  }
  FileState& st = files_[f];
  st.synced = st.size;
  return IOStatus::OK();
}

IOStatus SimFileSystem::on_truncate(const std::string& f, uint64_t size) {
  std::lock_guard lock(mu_);
  if (under(crashed_, f)) return IOStatus::IOError("SimFileSystem: crashed");
  FileState& st = files_[f];
  st.size = size;
  st.synced = std::min(st.synced, size);
  return IOStatus::OK();
}

IOStatus SimFileSystem::track(const std::string& f, const rocksdb::FileOptions& o,
                              std::unique_ptr<rocksdb::FSWritableFile>* r, bool existing) {
  uint64_t size = 0;
  if (existing) {
    IOStatus s = target()->GetFileSize(f, rocksdb::IOOptions(), &size, nullptr);
    if (!s.ok()) size = 0;
  }
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = existing ? target()->ReopenWritableFile(f, o, &file, nullptr)
                        : target()->NewWritableFile(f, o, &file, nullptr);
  if (!s.ok()) return s;
  {
    std::lock_guard lock(mu_);
    // What a reopened file held before is as durable as it was.
    FileState& st = files_[f];
    if (!existing) st = FileState{};
    st.size = size;
    if (!existing) st.synced = 0;
  }
  *r = std::make_unique<SimWritableFile>(std::move(file), this, f);
  return IOStatus::OK();
}

IOStatus SimFileSystem::NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSWritableFile>* r,
                                        rocksdb::IODebugContext*) {
  IOStatus s = check_active(f);
  return s.ok() ? track(f, o, r, false) : s;
}

IOStatus SimFileSystem::ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                           std::unique_ptr<rocksdb::FSWritableFile>* r,
                                           rocksdb::IODebugContext*) {
  IOStatus s = check_active(f);
  return s.ok() ? track(f, o, r, true) : s;
}

IOStatus SimFileSystem::ReuseWritableFile(const std::string& f, const std::string& old,
                                          const rocksdb::FileOptions& o,
                                          std::unique_ptr<rocksdb::FSWritableFile>* r,
                                          rocksdb::IODebugContext* dbg) {
  IOStatus s = RenameFile(old, f, rocksdb::IOOptions(), dbg);
  return s.ok() ? track(f, o, r, false) : s;
}

IOStatus SimFileSystem::NewRandomRWFile(const std::string&, const rocksdb::FileOptions&,
                                        std::unique_ptr<rocksdb::FSRandomRWFile>*,
                                        rocksdb::IODebugContext*) {
  return IOStatus::NotSupported("SimFileSystem: random read-write files");
}

IOStatus SimFileSystem::DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                                   rocksdb::IODebugContext* dbg) {
  IOStatus s = check_active(f);
  if (!s.ok()) return s;
  s = target()->DeleteFile(f, o, dbg);
  std::lock_guard lock(mu_);
  files_.erase(f);
  return s;
}

IOStatus SimFileSystem::RenameFile(const std::string& src, const std::string& dst,
                                   const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) {
  IOStatus s = check_active(dst);
  if (!s.ok()) return s;
  s = target()->RenameFile(src, dst, o, dbg);
  if (!s.ok()) return s;
  std::lock_guard lock(mu_);
  auto it = files_.find(src);
  if (it == files_.end()) {
    files_.erase(dst);
  } else {
    files_[dst] = it->second;
    files_.erase(src);
  }
  return s;
}

IOStatus SimFileSystem::LinkFile(const std::string&, const std::string&, const rocksdb::IOOptions&,
                                 rocksdb::IODebugContext*) {
  return IOStatus::NotSupported("SimFileSystem: links");
}

IOStatus SimFileSystem::Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& o,
                                 rocksdb::IODebugContext* dbg) {
  IOStatus s = on_truncate(f, size);
  return s.ok() ? target()->Truncate(f, size, o, dbg) : s;
}

IOStatus SimFileSystem::read_all(const std::string& f, std::string* out) {
  std::unique_ptr<rocksdb::FSSequentialFile> file;
  IOStatus s = target()->NewSequentialFile(f, rocksdb::FileOptions(), &file, nullptr);
  if (!s.ok()) return s;
  out->clear();
  std::vector<char> buf(1 << 16);
  for (;;) {
    rocksdb::Slice got;
    s = file->Read(buf.size(), rocksdb::IOOptions(), &got, buf.data(), nullptr);
    if (!s.ok()) return s;
    if (got.empty()) return IOStatus::OK();
    out->append(got.data(), got.size());
  }
}

IOStatus SimFileSystem::write_all(const std::string& f, const std::string& data) {
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(f, rocksdb::FileOptions(), &file, nullptr);
  if (!s.ok()) return s;
  s = file->Append(data, rocksdb::IOOptions(), nullptr);
  if (s.ok()) s = file->Close(rocksdb::IOOptions(), nullptr);
  return s;
}

uint64_t SimFileSystem::recover(const std::string& dir) {
  const std::string prefix = dir + "/";
  std::map<std::string, FileState> files;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, st] : files_) {
      if (name.starts_with(prefix)) files[name] = st;
    }
  }
  uint64_t lost = 0;
  for (auto& [name, st] : files) {
    if (st.synced >= st.size) continue;
    std::string data;
    if (!read_all(name, &data).ok()) continue;
    if (data.size() > st.synced) {
      lost += data.size() - st.synced;
      data.resize(st.synced);
      write_all(name, data).PermitUncheckedError();
    }
    st.size = st.synced;
  }
  std::lock_guard lock(mu_);
  for (auto& [name, st] : files) {
    auto it = files_.find(name);
    if (it != files_.end()) it->second = st;
  }
  crashed_.erase(prefix);
  return lost;
}

void SimFileSystem::copy_dir(const std::string& from, const std::string& to) {
  remove_dir(to);
  target()->CreateDirIfMissing(to, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
  std::vector<std::string> children;
  target()->GetChildren(from, rocksdb::IOOptions(), &children, nullptr).PermitUncheckedError();
  for (const std::string& c : children) {
    std::string data;
    if (!read_all(from + "/" + c, &data).ok()) continue;
    write_all(to + "/" + c, data).PermitUncheckedError();
    std::lock_guard lock(mu_);
    files_[to + "/" + c] = FileState{data.size(), data.size()};
  }
}

void SimFileSystem::remove_dir(const std::string& dir) {
  std::vector<std::string> children;
  target()->GetChildren(dir, rocksdb::IOOptions(), &children, nullptr).PermitUncheckedError();
  for (const std::string& c : children) {
    target()->DeleteFile(dir + "/" + c, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
    std::lock_guard lock(mu_);
    files_.erase(dir + "/" + c);
  }
}

}  // namespace canopy::sim
