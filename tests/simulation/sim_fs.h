// SimFileSystem: the simulation's storage, in memory, with injected faults.
//
// RocksDB's in-memory file system (NewMemEnv) under a wrapper that knows, for
// every file written, how much of it was synced, and that can, for the files
// of one directory (one store):
//   - fail the next write or sync (`fail_next_write`): RocksDB then returns
//     an I/O error to the write in progress, and may refuse further writes
//     until the store is reopened;
//   - crash (`crash`): from then on every change to its files fails, so that
//     closing the store writes nothing; `recover` then cuts each file back to
//     what was last synced, as a power loss leaves a disk, and lets the store
//     be reopened. A store with Durability::kSync syncs each write before
//     acknowledging it: what it acknowledged survives, the rest may not.
// Directory entries are taken as durable once created (RocksDB syncs its
// directories where it relies on them).
//
// Thread-safe (RocksDB calls it from its background threads too).
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace canopy::sim {

class SimFileSystem : public rocksdb::FileSystemWrapper {
 public:
  SimFileSystem();
  ~SimFileSystem() override;

  // The environment to pass to StoreOptions::env.
  rocksdb::Env* env() { return env_.get(); }

  void fail_next_write(const std::string& dir);
  bool armed() const;
  // Disarms fail_next_write; true if it had not fired.
  bool disarm();
  void crash(const std::string& dir);
  // Cuts the files of `dir` back to their synced length; returns the bytes lost.
  uint64_t recover(const std::string& dir);
  // Copies the files of directory `from` into `to` (replacing it), or removes `dir`.
  void copy_dir(const std::string& from, const std::string& to);
  void remove_dir(const std::string& dir);

  const char* Name() const override { return "SimFileSystem"; }
  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override;

  // Called by the files it hands out.
  rocksdb::IOStatus on_append(const std::string& f, uint64_t bytes);
  rocksdb::IOStatus on_sync(const std::string& f);
  rocksdb::IOStatus on_truncate(const std::string& f, uint64_t size);
  rocksdb::IOStatus check_active(const std::string& f) const;

 private:
  explicit SimFileSystem(rocksdb::Env* mem_env);
  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
  };
  rocksdb::IOStatus track(const std::string& f, const rocksdb::FileOptions& o,
                          std::unique_ptr<rocksdb::FSWritableFile>* r, bool existing);
  rocksdb::IOStatus read_all(const std::string& f, std::string* out);
  rocksdb::IOStatus write_all(const std::string& f, const std::string& data);

  std::unique_ptr<rocksdb::Env> mem_env_;
  std::unique_ptr<rocksdb::Env> env_;
  mutable std::mutex mu_;
  std::map<std::string, FileState> files_;
  std::string fail_dir_;           // fail the next write under it ("": none)
  std::set<std::string> crashed_;  // directories
};

}  // namespace canopy::sim
