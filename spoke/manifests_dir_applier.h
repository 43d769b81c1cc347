// ManifestsDirApplier: applies rendered objects by writing them into the
// directory k3s deploys from (/var/lib/rancher/k3s/server/manifests).
//
// What k3s does with the directory (pkg/deploy/controller.go in k3s-io/k3s):
// every 15 s it walks the directory, skips dot files and any file not ending in
// .yaml, .yml or .json, and applies each file whose mtime changed as one Addon
// object named after the file name up to its first '.'. Every extension goes
// through the same YAML reader, and JSON is YAML, so we write JSON into `.json`
// files: no YAML emitter needed, and the bytes are exactly the canonical
// rendering (pretty-printed for the operator who looks at the directory).
//
// Files. One per rendered object, named model::manifest_file_name(tenant, template)
// ("canopy-<len>-<tenant>-<template>.json"); the file name is the object's id.
// Other files in the directory are never read, listed or touched.
//
// Atomicity. A write goes to a temporary file in the same directory whose name
// starts with '.' (k3s skips it), is fsynced, renamed over the target, and the
// directory is fsynced. So a reader sees the old bytes or the new bytes, never
// a part, and a crash loses no write that returned. Stale temporary files of a
// crashed run are deleted by open(). A batch (apply_all) writes and fsyncs its
// temporary files on several threads, renames them, then fsyncs the directory
// once: a cold start that writes 1,000 files pays ~1,000 fsyncs spread over
// threads, not 2,000 in a row.
//
// No-op writes. The applier remembers, per file, the hash of the object it
// holds and the file's inode, size and mtime. apply() of an object whose hash
// is remembered for a file that stat() shows unchanged does nothing; otherwise
// it compares the bytes, and writes only when they differ. open() loads the
// hashes of the files present (checking each file's canopy.io/hash against its
// content), so a restarted spoke rewrites nothing that is already right, and
// k3s, which watches mtimes, does not redeploy.
//
// Removal. Deleting a file from the directory does not delete its objects from
// the cluster (k3s docs, "Auto-Deploying Manifests": "Deleting files out of
// this directory will not delete the corresponding resources from the
// cluster."). An Addon whose file becomes an empty set of objects, however, is
// pruned: k3s applies the new (empty) set with the Addon as owner, which
// deletes what it applied before. So remove() replaces the file with a
// tombstone, an empty `v1/List` (still valid JSON), and collect_garbage()
// deletes tombstones older than `tombstone_retention_ms`, by which time k3s
// has long since pruned (it looks every 15 s). With `tombstones` off, remove()
// deletes the file right away (objects stay in the cluster).
//
// The directory. Each call checks that the path still names the directory it
// opened; when it was replaced (k3s reinstalled), the applier starts over in
// the new one. When it is missing — at start (a wiped or freshly mounted disk,
// k3s not installed yet: k3s deploys what it finds there once it starts) or
// later (deleted by hand) — the applier creates it (mode 0700: manifests may
// hold Secrets; missing parents 0755) and logs that it did, unless
// `create_missing` is off; then calls fail with FailedPrecondition naming the
// path (as do permission and read-only errors; disk full and I/O errors are
// Unavailable).
//
// Thread-safety: REQUIRES external synchronization.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "spoke/applier.h"
#include "store/clock.h"

namespace canopy::spoke {

struct ManifestsDirOptions {
  std::string dir;             // created when missing (see create_missing)
  bool create_missing = true;  // create the directory (and parents) when missing
  bool tombstones = true;
  uint64_t tombstone_retention_ms = 24ull * 3600 * 1000;
  // Threads writing and fsyncing the files of one batch.
  size_t sync_threads = 16;
  Clock* clock = nullptr;  // nullptr: the system clock
};

// Prefix of temporary files: a dot file, so k3s ignores it.
inline constexpr std::string_view kTempFilePrefix = ".canopy-tmp-";
// Annotations of a tombstone.
inline constexpr std::string_view kRemovedAtAnnotation = "canopy.io/removed-at-ms";

class ManifestsDirApplier final : public Applier {
 public:
  // FailedPrecondition when the directory is not a directory, not writable,
  // or missing and cannot (or may not) be created (the message names it).
  static StatusOr<std::unique_ptr<ManifestsDirApplier>> open(const ManifestsDirOptions& options);
  ~ManifestsDirApplier() override;
  ManifestsDirApplier(const ManifestsDirApplier&) = delete;
  ManifestsDirApplier& operator=(const ManifestsDirApplier&) = delete;

  std::string name() const override { return "manifests-dir"; }
  std::string id_of(const model::RenderedObject& object) const override { return object.file_name; }
  StatusOr<ApplyOutcome> apply(const model::RenderedObject& object) override;
  std::vector<StatusOr<ApplyOutcome>> apply_all(
      const std::vector<const model::RenderedObject*>& objects) override;
  Status remove(const std::string& id) override;
  // Canopy's files in the directory, tombstones excluded, sorted.
  StatusOr<std::vector<std::string>> inventory() override;
  // Deletes tombstones older than the retention.
  Status collect_garbage() override;

  const std::string& dir() const { return options_.dir; }
  // Temporary files deleted by open().
  size_t stale_temp_files_removed() const { return stale_removed_; }

  // The bytes written for `object`.
  static std::string file_content(const model::RenderedObject& object);
  static std::string tombstone_content(uint64_t removed_at_ms);

 private:
  struct Entry {
    std::string hash;  // canopy.io/hash of the object held; empty when unknown
    bool tombstone = false;
    uint64_t removed_at_ms = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
  };
  struct Write {
    std::string file_name;
    std::string content;
    std::string hash;
    bool tombstone = false;
    uint64_t removed_at_ms = 0;
    Status status;
    std::string temp_name;
    Entry entry;
  };

  explicit ManifestsDirApplier(ManifestsDirOptions options);
  // Opens the directory on first use, and again (forgetting what it knew)
  // when the path now names another directory; creates it when missing (see
  // create_missing). FailedPrecondition when it is not a directory, not
  // writable, or missing and not created.
  Status ensure_dir();
  Status load_existing();
  // Reads `file_name` and fills an entry from its content (returned in
  // `text` when given); NotFound when gone.
  StatusOr<Entry> read_entry(const std::string& file_name, std::string* text = nullptr);
  bool unchanged_on_disk(const std::string& file_name, const Entry& e);
  // Writes every item atomically (see the header comment); sets each status.
  void write_files(std::vector<Write*>& writes);
  void write_temp(Write* w);
  Status sync_dir();
  std::string path(std::string_view file_name) const;

  ManifestsDirOptions options_;
  int dir_fd_ = -1;
  ino_t dir_ino_ = 0;
  dev_t dir_dev_ = 0;
  std::unordered_map<std::string, Entry> entries_;
  uint64_t temp_counter_ = 0;
  size_t stale_removed_ = 0;
};

}  // namespace canopy::spoke
