// The sync engine tests' parent-and-child fixture (engine_test.cc,
// engine_recovery_test.cc): a hub and a site, each with a real Store, over
// the in-memory bus.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "canopy/v1/sync.pb.h"
#include "store/store.h"
#include "sync/engine/node.h"
#include "sync/memory_transport.h"
#include "sync/protocol.h"
#include "sync/subjects.h"
#include "sync/tests/test_parts.h"
#include "tests/support/temp_dir.h"

namespace canopy::sync {

// Child "site" holds `d/...` and its own `s/site/...`; it may write the
// latter. `g/...` is in scope while `gate_` is open.
// With generations_, it is told apart as the hub's placement index is: a
// generation() that moves with the version, and an exact route().
class TestScope final : public ScopeProvider {
 public:
  bool in_scope(std::string_view child, std::string_view key) override {
    ++in_scope_calls_;
    return holds(child, key);
  }
  std::vector<std::string> writable_prefixes(std::string_view child) override {
    if (writable_gate_) return {"s/" + std::string(child) + "/", "g/"};
    return {"s/" + std::string(child) + "/"};
  }
  bool writable_gate_ = false;  // with gate_: the child may write g/ too
  uint64_t version(std::string_view) override {
    ++version_calls_;
    return version_;
  }
  uint64_t version_ = 7;
  bool gate_ = false;
  std::vector<std::string> children_for(std::string_view key) override {
    if (holds("site", key)) return {"site"};
    return {};
  }
  Route route(std::string_view key) override { return {children_for(key), generations_}; }
  // A function of the version alone, so it moves whenever the version does.
  uint64_t generation() override { return generations_ ? version_ + 1 : 0; }
  bool generations_ = false;
  // With listed_, the scope is also given as a list (three prefixes).
  std::optional<Listing> list_scope(std::string_view child) override {
    if (!listed_) return std::nullopt;
    Listing l;
    l.prefixes = {"d/", "s/" + std::string(child) + "/"};
    if (gate_) l.prefixes.push_back("g/");
    return l;
  }
  bool listed_ = false;
  size_t in_scope_calls_ = 0;
  size_t version_calls_ = 0;

 private:
  bool holds(std::string_view child, std::string_view key) const {
    return key.starts_with("d/") || key.starts_with("s/" + std::string(child) + "/") ||
           (gate_ && key.starts_with("g/"));
  }
};

// A Store's view whose reads fail while told to: the documents of a scope
// (`fail_scope`: states, hashes) or the log (`fail_log`), as a failing disk
// or a corrupt entry would make them.
class FlakyView final : public StoreView {
 public:
  explicit FlakyView(Store* store) : real_(store) {}
  bool fail_scope = false;
  bool fail_log = false;

  uint64_t replica_id() override { return real_.replica_id(); }
  uint64_t log_epoch() override { return real_.log_epoch(); }
  uint64_t first_log_index() override { return real_.first_log_index(); }
  uint64_t last_log_index() override { return real_.last_log_index(); }
  VersionVector version_vector() override { return real_.version_vector(); }
  StatusOr<std::optional<std::string>> get_local(std::string_view name) override {
    return real_.get_local(name);
  }
  StatusOr<std::optional<uint64_t>> own_delta_hlc(uint64_t seq) override {
    return real_.own_delta_hlc(seq);
  }
  StatusOr<LogRead> log_since(uint64_t epoch, uint64_t after, const KeyFilter& f,
                              size_t limit) override {
    // The log's entries cannot be read; its position (kept apart from the
    // entries) can, so a read at the log's end, which reads no entry, works.
    if (fail_log && after != real_.last_log_index()) {
      return internal_error("injected: the log cannot be read");
    }
    return real_.log_since(epoch, after, f, limit);
  }
  StatusOr<Hashes> doc_hashes(std::string_view first, std::string_view last,
                              const KeyFilter& f) override {
    if (fail_scope) return internal_error("injected: hashes cannot be read");
    return real_.doc_hashes(first, last, f);
  }
  StatusOr<Hashes> doc_hashes_of(std::vector<std::string> keys) override {
    if (fail_scope) return internal_error("injected: hashes cannot be read");
    return real_.doc_hashes_of(std::move(keys));
  }
  StatusOr<std::vector<v1::DocState>> states(std::string_view first, std::string_view last,
                                             const KeyFilter& f, size_t limit) override {
    if (fail_scope) return internal_error("injected: documents cannot be read");
    return real_.states(first, last, f, limit);
  }
  StatusOr<std::optional<v1::DocState>> state(std::string_view key) override {
    if (fail_scope) return internal_error("injected: a document cannot be read");
    return real_.state(key);
  }

 private:
  StoreReader real_;
};

// Ends an engine's batch of inputs, persists what it asks to (as the node
// would), and takes the messages.
template <typename Engine>
std::vector<Message> outbox(Engine& engine, Store* store) {
  engine.flush();
  Ready ready = engine.take_ready();
  const Status persisted = persist(store, ready.writes);
  EXPECT_TRUE(persisted.ok()) << persisted.to_string();
  engine.advance(persisted);
  return std::move(ready.messages);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub_store_ = open("hub", 1);
    site_store_ = open("site", 2);
    ASSERT_NO_FATAL_FAILURE(start_hub(hub_store_.get()));
    ASSERT_NO_FATAL_FAILURE(start_site());
  }

  // A hub named "hub" over `store` (its engine reading it through `view`,
  // when given), and the site over site_store_, each on a new endpoint (the
  // old node and endpoint reset first).
  void start_hub(Store* store, StoreView* view = nullptr, ParentOptions options = {}) {
    hub_.reset();
    hub_bus_.reset();
    hub_bus_ = net_.endpoint("hub");
    Env env{&clock_, [this] { return rng_(); }};
    hub_ = std::make_unique<SyncNode>(store, hub_bus_.get());
    hub_->set_parent_engine(
        view != nullptr ? std::make_unique<ParentSync>("hub", view, &scope_, env, options)
                        : std::make_unique<ParentSync>("hub", store, &scope_, env, options));
    ASSERT_TRUE(hub_->attach().ok());
  }
  void start_site(ChildOptions options = {}) {
    site_.reset();
    site_bus_.reset();
    site_bus_ = net_.endpoint("site");
    Env env{&clock_, [this] { return rng_(); }};
    site_ = std::make_unique<SyncNode>(site_store_.get(), site_bus_.get());
    site_->set_child_engine(
        std::make_unique<ChildSync>("site", "hub", site_store_.get(), env, options));
    ASSERT_TRUE(site_->attach().ok());
  }

  std::unique_ptr<Store> open(const std::string& name, uint64_t id) {
    return open_test_store(dir_, name, id, &clock_);
  }

  void settle(int steps = 200) {
    for (int i = 0; i < steps; ++i) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(50);
    }
  }

  // Cuts the site off, and runs both sides until past the hub's session
  // timeout (the site stays cut off).
  void cut_off_until_the_session_expires() {
    net_.set_connected("site", false);
    for (uint64_t t = 0; t <= ParentOptions{}.session_timeout_ms + 2000; t += 1000) {
      net_.deliver_all(100000);
      hub_->run_once(true);
      site_->run_once(true);
      clock_.advance_ms(1000);
    }
  }

  testing::TempDir dir_;
  ManualClock clock_;
  std::mt19937_64 rng_{42};
  MemoryNetwork net_{7};
  TestScope scope_;
  std::unique_ptr<Store> hub_store_, site_store_;
  std::unique_ptr<MemoryTransport> hub_bus_, site_bus_;
  std::unique_ptr<SyncNode> hub_, site_;
};

}  // namespace canopy::sync
