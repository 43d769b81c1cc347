#include "hub/hub.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include "store/hlc.h"

namespace canopy::hub {

// Housekeeping trims the log and tombstones older than the retention window.
constexpr auto kHousekeepingInterval = std::chrono::minutes(1);
constexpr auto kRolloutInterval = std::chrono::seconds(1);

Hub::Hub(HubConfig config) : config_(std::move(config)), rng_(std::random_device{}()) {}

Hub::~Hub() { stop(); }

Status Hub::start() {
  CANOPY_CHECK(!started_);
  started_ = true;
  StoreOptions so;
  so.path = config_.data_dir;
  so.durability = config_.durability;
  auto store_or = Store::open(so);
  if (!store_or.ok())
    return Status(store_or.status().code(),
                  "cannot open the store: " + store_or.status().message());
  store_ = std::move(store_or).value();
  spdlog::info("hub {} (replica {:016x}) store {} open", config_.name, store_->replica_id(),
               config_.data_dir);

  auto index_or = PlacementIndex::attach(store_.get());
  if (!index_or.ok()) {
    stop();
    return Status(index_or.status().code(),
                  "cannot load placements: " + index_or.status().message());
  }
  index_ = std::move(index_or).value();
  auto status_or = StatusAggregate::attach(store_.get(), index_.get());
  if (!status_or.ok()) {
    stop();
    return Status(status_or.status().code(),
                  "cannot load status documents: " + status_or.status().message());
  }
  status_ = std::move(status_or).value();

  sync::NatsOptions no;
  no.urls = config_.nats_urls;
  no.name = "canopy-hub-" + config_.name;
  auto nats_or = sync::NatsTransport::connect(no);
  if (!nats_or.ok()) {
    stop();
    return Status(nats_or.status().code(), "cannot set up NATS: " + nats_or.status().message());
  }
  nats_ = std::move(nats_or).value();

  sync::Env env{SystemClock::instance(), [this] { return rng_(); }};
  sync::ParentOptions po;
  po.max_concurrent_catchups = config_.max_concurrent_catchups;
  po.away_after_ms = config_.away_after_s * 1000;
  po.session_timeout_ms = config_.session_timeout_s * 1000;
  auto parent =
      std::make_unique<sync::ParentSync>(config_.name, store_.get(), index_.get(), env, po);
  Store* store = store_.get();
  // The site describes itself in its hello; the registry keeps it.
  parent->set_hello_hook([store](const std::string& child, const v1::Hello& hello) {
    register_site(store, child, hello);
  });
  node_ = std::make_unique<sync::SyncNode>(store_.get(), nats_.get());
  node_->set_parent_engine(std::move(parent));
  sync::SyncNode* node = node_.get();
  index_->on_scope_change([node](const sync::ScopeChange& c) { node->enqueue_scope_change(c); });
  if (Status s = node_->attach(); !s.ok()) {
    stop();
    return Status(s.code(), "cannot subscribe: " + s.message());
  }
  runtime_ = std::make_unique<sync::SyncRuntime>(node_.get());
  runtime_->start();
  housekeeping_ = std::thread([this] { housekeeping_loop(); });
  rollouts_ = std::make_unique<RolloutController>(store_.get(), index_.get());
  rollout_thread_ = std::thread([this] { rollout_loop(); });
  return ok_status();
}

void Hub::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(housekeeping_mu_);
    housekeeping_stop_ = true;
  }
  housekeeping_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (rollout_thread_.joinable()) rollout_thread_.join();
  rollouts_.reset();
  if (runtime_) runtime_->stop();
  // Commits after this point (none are expected) must not reach a node that
  // is gone.
  if (index_) index_->on_scope_change(nullptr);
  runtime_.reset();
  node_.reset();
  nats_.reset();
  status_.reset();
  index_.reset();
  store_.reset();
  spdlog::info("hub {} stopped", config_.name);
}

bool Hub::nats_connected() const { return nats_ && nats_->connected(); }

size_t Hub::session_count() {
  size_t sessions = 0;
  runtime_->call([&] { sessions = node_->parent()->session_count(); });
  return sessions;
}

std::vector<sync::ChildInfo> Hub::sessions() {
  std::vector<sync::ChildInfo> children;
  runtime_->call([&] { children = node_->parent()->children(); });
  return children;
}

HubSyncSnapshot Hub::sync_snapshot() {
  HubSyncSnapshot snap;
  runtime_->call([&] {
    snap.sessions = node_->parent()->children();
    snap.parent = node_->parent()->stats();
  });
  snap.node = node_->stats();
  snap.now_ms = SystemClock::instance()->now_ms();
  return snap;
}

void Hub::rollout_loop() {
  std::unique_lock lock(housekeeping_mu_);
  while (
      !housekeeping_cv_.wait_for(lock, kRolloutInterval, [this] { return housekeeping_stop_; })) {
    lock.unlock();
    auto step = rollouts_->step();
    if (!step.ok()) spdlog::warn("rollouts: {}", step.status().to_string());
    lock.lock();
  }
}

void Hub::housekeeping_loop() {
  std::unique_lock lock(housekeeping_mu_);
  while (!housekeeping_cv_.wait_for(lock, kHousekeepingInterval,
                                    [this] { return housekeeping_stop_; })) {
    lock.unlock();
    store_->expire_older_than(config_.log_retention_hours * 3600 * 1000);
    lock.lock();
  }
}

}  // namespace canopy::hub
