// Helpers shared by the store tests: hand-made deltas, state bytes, a
// temporary directory and a snapshot of a whole store for before/after checks.
//
// Self-contained on purpose (no dependency on tests/support), so that the store
// tests build and run with the store alone.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "canopy/v1/store.pb.h"
#include "store/document.h"
#include "store/store.h"

namespace canopy::store_test {

// --- Status checks that print the status on failure.
inline Status status_of(const Status& s) { return s; }
template <typename T>
Status status_of(const StatusOr<T>& s) {
  return s.status();
}

#define CANOPY_ASSERT_OK(expr)                                                             \
  do {                                                                                     \
    const auto& _canopy_r = (expr);                                                        \
    ASSERT_TRUE(_canopy_r.ok()) << ::canopy::store_test::status_of(_canopy_r).to_string(); \
  } while (0)
#define CANOPY_EXPECT_OK(expr)                                                             \
  do {                                                                                     \
    const auto& _canopy_r = (expr);                                                        \
    EXPECT_TRUE(_canopy_r.ok()) << ::canopy::store_test::status_of(_canopy_r).to_string(); \
  } while (0)

// --- Hand-made ops and deltas.

inline v1::FieldOp set_op(std::vector<std::string> path, std::string value, DotRef prev = {}) {
  v1::FieldOp op;
  for (auto& p : path) op.add_path(std::move(p));
  op.set_kind(v1::FieldOp::SET);
  op.set_value(std::move(value));
  if (prev.replica != 0) {
    op.mutable_prev()->set_replica(prev.replica);
    op.mutable_prev()->set_seq(prev.seq);
  }
  return op;
}

inline v1::FieldOp remove_op(std::vector<std::string> path, DotRef prev = {}) {
  v1::FieldOp op;
  for (auto& p : path) op.add_path(std::move(p));
  op.set_kind(v1::FieldOp::REMOVE);
  if (prev.replica != 0) {
    op.mutable_prev()->set_replica(prev.replica);
    op.mutable_prev()->set_seq(prev.seq);
  }
  return op;
}

inline v1::FieldOp make_object_op(std::vector<std::string> path) {
  v1::FieldOp op;
  for (auto& p : path) op.add_path(std::move(p));
  op.set_kind(v1::FieldOp::MAKE_OBJECT);
  return op;
}

inline v1::Delta make_delta(std::string key, uint64_t replica, uint64_t seq, uint64_t hlc,
                            std::vector<v1::FieldOp> ops) {
  v1::Delta d;
  d.set_key(std::move(key));
  d.mutable_dot()->set_replica(replica);
  d.mutable_dot()->set_seq(seq);
  d.set_hlc(hlc);
  for (auto& op : ops) *d.add_ops() = std::move(op);
  return d;
}

inline v1::DeltaBatch make_batch(std::initializer_list<v1::Delta> deltas) {
  v1::DeltaBatch b;
  for (const auto& d : deltas) *b.add_deltas() = d;
  return b;
}

// Serialized (pruned) state of a document: equal bytes mean equal states.
inline std::string state_bytes(const Document& d) {
  v1::NodeState s;
  d.to_proto(&s);
  return s.SerializeAsString();
}

// --- A temporary directory, removed with its contents on destruction.
// `base` overrides $TMPDIR (or /tmp) as the parent directory.
class TempDir {
 public:
  explicit TempDir(const char* base = nullptr) {
    if (base == nullptr) base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/canopy-store-test-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Opens a store at `path`; a failure is a test failure and returns nullptr.
inline std::unique_ptr<Store> open_store(const std::string& path, Clock* clock,
                                         Durability durability = Durability::kNone,
                                         uint64_t replica_id = 0,
                                         const std::function<void(StoreOptions*)>& tweak = {}) {
  StoreOptions o;
  o.path = path;
  o.clock = clock;
  o.durability = durability;
  o.replica_id = replica_id;
  if (tweak) tweak(&o);
  auto s = Store::open(o);
  if (!s.ok()) {
    ADD_FAILURE() << "opening " << path << ": " << s.status().to_string();
    return nullptr;
  }
  return std::move(s).value();
}

// --- Everything a user can observe of a store, to prove that a refused call
// changed nothing.
struct StoreSnapshot {
  std::vector<std::pair<std::string, std::string>> docs;    // key, canonical JSON
  std::vector<std::pair<std::string, std::string>> states;  // key, DocState bytes
  std::string version_vector;                               // serialized proto
  uint64_t last_log_index = 0;
  uint64_t first_log_index = 0;

  bool operator==(const StoreSnapshot&) const = default;
};

inline StoreSnapshot snapshot(Store& store) {
  StoreSnapshot s;
  std::string after;
  while (true) {
    auto page = store.scan("", after, 1000);
    if (!page.ok()) std::abort();
    for (auto& item : page->items) s.docs.emplace_back(item.key, item.json);
    if (page->next_after.empty()) break;
    after = page->next_after;
  }
  auto states = store.states("", "\x7f", nullptr, 1'000'000);
  if (!states.ok()) std::abort();
  for (const auto& st : *states) s.states.emplace_back(st.key(), st.SerializeAsString());
  s.version_vector = store.version_vector().to_proto().SerializeAsString();
  s.last_log_index = store.last_log_index();
  s.first_log_index = store.first_log_index();
  return s;
}

}  // namespace canopy::store_test
