#include "spoke/bus/device_tenants.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "model/keys.h"
#include "spoke/bus/mqtt_publisher.h"

namespace canopy::spoke::bus {
namespace {

// Changes arriving together (a batch from the hub) make one pass.
constexpr auto kDebounce = std::chrono::milliseconds(50);
constexpr size_t kScanPage = 1000;
constexpr auto kRetry = std::chrono::seconds(1);

std::string_view key_of(const v1::LogEntry& e) {
  if (e.has_delta()) return e.delta().key();
  if (e.has_doc()) return e.doc().key();
  return {};
}

}  // namespace

std::vector<BusTenant> merge_bus_tenants(const std::vector<BusTenant>& configured,
                                         const std::vector<model::Device>& documents,
                                         std::vector<std::string>* shadowed) {
  std::map<std::string, std::map<std::string, BusDevice>> by_tenant;
  for (const auto& t : configured) {
    auto& devices = by_tenant[t.name];
    for (const auto& d : t.devices) devices[d.id] = d;
  }
  // Which (tenant, id) the configuration names: those win.
  std::set<std::pair<std::string, std::string>> from_config;
  for (const auto& t : configured) {
    for (const auto& d : t.devices) from_config.emplace(t.name, d.id);
  }
  for (const auto& doc : documents) {
    if (from_config.contains({doc.tenant, doc.id})) {
      if (shadowed != nullptr) shadowed->push_back(model::device_key(doc.site, doc.tenant, doc.id));
      continue;
    }
    BusDevice d;
    d.id = doc.id;
    d.password_hash = doc.password_hash;
    d.scope = doc.scope == model::kDeviceScopeTenant ? DeviceScope::kTenant : DeviceScope::kDevice;
    by_tenant[doc.tenant][doc.id] = std::move(d);
  }
  std::vector<BusTenant> out;
  out.reserve(by_tenant.size());
  for (auto& [name, devices] : by_tenant) {
    BusTenant t;
    t.name = name;
    t.devices.reserve(devices.size());
    for (auto& [id, d] : devices) t.devices.push_back(std::move(d));
    out.push_back(std::move(t));
  }
  return out;
}

BusTenantSources::BusTenantSources(BusSupervisor* bus, std::vector<BusTenant> configured)
    : bus_(bus), configured_(std::move(configured)) {}

Status BusTenantSources::set_configured(std::vector<BusTenant> tenants) {
  std::lock_guard lock(mu_);
  configured_ = std::move(tenants);
  return apply_locked();
}

Status BusTenantSources::set_documents(std::vector<model::Device> devices) {
  std::lock_guard lock(mu_);
  documents_ = std::move(devices);
  return apply_locked();
}

Status BusTenantSources::apply_locked() {
  std::vector<std::string> shadowed;
  BusSpec spec = bus_->spec();
  spec.tenants = merge_bus_tenants(configured_, documents_, &shadowed);
  for (const auto& key : shadowed) {
    spdlog::warn("bus: device document {} is shadowed by the configuration file's device", key);
  }
  Status st = bus_->update(spec);
  if (!st.ok()) {
    spdlog::error("bus: the tenants and devices were not applied: {}; the bus keeps its tenants",
                  st.to_string());
  }
  return st;
}

std::string desired_topic(std::string_view tenant, std::string_view device) {
  return "t/" + std::string(tenant) + "/d/" + std::string(device) + "/desired";
}

DeviceDocumentsWatch::DeviceDocumentsWatch(Store* store, std::string site,
                                           BusTenantSources* sources, DesiredTwinOptions desired)
    : store_(store),
      site_(std::move(site)),
      prefix_(model::devices_prefix(site_)),
      sources_(sources),
      desired_(std::move(desired)) {}

StatusOr<std::unique_ptr<DeviceDocumentsWatch>> DeviceDocumentsWatch::start(
    Store* store, std::string site, BusTenantSources* sources, DesiredTwinOptions desired) {
  std::unique_ptr<DeviceDocumentsWatch> w(
      new DeviceDocumentsWatch(store, std::move(site), sources, std::move(desired)));
  DeviceDocumentsWatch* raw = w.get();
  w->listener_ = store->subscribe([raw](const v1::LogEntry& e) {
    if (!key_of(e).starts_with(raw->prefix_)) return;
    std::lock_guard lock(raw->mu_);
    raw->dirty_ = true;
    raw->cv_.notify_one();
  });
  // A failed first apply (a refused spec) is logged; the watch still runs.
  if (Status st = w->pass(); !st.ok() && st.code() != StatusCode::kInvalidArgument &&
                             st.code() != StatusCode::kFailedPrecondition) {
    return st;
  }
  w->thread_ = std::thread([raw] { raw->loop(); });
  return w;
}

DeviceDocumentsWatch::~DeviceDocumentsWatch() {
  if (listener_ != 0) store_->unsubscribe(listener_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

DeviceWatchStats DeviceDocumentsWatch::stats() {
  std::lock_guard lock(mu_);
  return stats_;
}

bool DeviceDocumentsWatch::known(std::string_view tenant, std::string_view id) {
  std::lock_guard lock(mu_);
  return known_.contains(std::pair<std::string, std::string>(tenant, id));
}

bool DeviceDocumentsWatch::publish(const std::map<std::string, Published>& items) {
  if (items.empty() || desired_.mqtt_host.empty()) return true;
  std::map<std::string, std::vector<std::pair<std::string, const Published*>>> by_tenant;
  for (const auto& [key, p] : items) by_tenant[p.tenant].emplace_back(key, &p);
  bool all = true;
  uint64_t published = 0;
  uint64_t failed = 0;
  for (const auto& [tenant, list] : by_tenant) {
    MqttPublisher mqtt;
    Status st =
        mqtt.connect(desired_.mqtt_host, desired_.mqtt_port, "_canopy-" + site_ + "-" + tenant,
                     spoke_mqtt_user(tenant), desired_.password);
    for (const auto& [key, p] : list) {
      if (st.ok()) st = mqtt.publish_retained(desired_topic(p->tenant, p->id), p->payload);
      if (!st.ok()) {
        ++failed;
        all = false;
        continue;
      }
      ++published;
      if (p->payload.empty()) {
        published_.erase(key);
      } else {
        published_[key] = *p;
      }
    }
    if (!st.ok()) {
      spdlog::warn("bus: desired twins of tenant {} not published: {}; retrying", tenant,
                   st.message());
    }
  }
  std::lock_guard lock(mu_);
  stats_.desired_published += published;
  stats_.desired_failed += failed;
  return all;
}

Status DeviceDocumentsWatch::pass() {
  std::vector<model::Device> devices;
  uint64_t refused = 0;
  std::string after;
  while (true) {
    auto page = store_->scan(prefix_, after, kScanPage);
    if (!page.ok()) {
      spdlog::error("bus: cannot read the device documents: {}", page.status().to_string());
      return page.status();
    }
    for (const auto& item : page->items) {
      const model::ParsedKey k = model::parse_key(item.key);
      if (k.kind != model::KeyKind::kDevice) {
        ++refused;
        spdlog::error("bus: device document {} refused: not a device key", item.key);
        continue;
      }
      const auto doc = nlohmann::json::parse(item.json, nullptr, false);
      auto device = model::parse_device(k.site, k.tenant, k.name, doc);
      if (!device.ok()) {
        ++refused;
        spdlog::error("bus: device document {} refused: {}", item.key, device.status().message());
        continue;
      }
      devices.push_back(std::move(*device));
    }
    if (page->next_after.empty()) break;
    after = page->next_after;
  }
  // Desired twins: what each device should have retained now.
  std::map<std::string, Published> want;
  std::set<std::pair<std::string, std::string>, std::less<>> known;
  for (const auto& d : devices) {
    known.emplace(d.tenant, d.id);
    if (!d.desired.empty()) {
      want[model::device_key(d.site, d.tenant, d.id)] = {d.tenant, d.id, d.desired.dump()};
    }
  }
  // Clears first, while the devices' accounts still exist.
  std::map<std::string, Published> clears;
  for (const auto& [key, p] : published_) {
    if (!want.contains(key)) clears[key] = {p.tenant, p.id, ""};
  }
  bool published = publish(clears);
  const size_t count = devices.size();
  {
    std::lock_guard lock(mu_);
    ++stats_.passes;
    stats_.refused += refused;
    stats_.devices = count;
  }
  Status st = sources_->set_documents(std::move(devices));
  if (st.ok()) spdlog::info("bus: {} device document(s) applied", count);
  {
    std::lock_guard lock(mu_);
    known_ = std::move(known);
  }
  std::map<std::string, Published> changes;
  for (auto& [key, p] : want) {
    auto it = published_.find(key);
    if (it == published_.end() || it->second.payload != p.payload) changes[key] = std::move(p);
  }
  if (st.ok()) published = publish(changes) && published;
  {
    std::lock_guard lock(mu_);
    retry_ = !published;
  }
  return st;
}

void DeviceDocumentsWatch::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    // A failed desired publish is retried a second later.
    cv_.wait_for(lock, kRetry, [&] { return dirty_ || stopping_; });
    if (stopping_) return;
    if (!dirty_ && !retry_) continue;
    // Let a burst of changes settle into one pass.
    cv_.wait_for(lock, kDebounce, [&] { return stopping_; });
    if (stopping_) return;
    dirty_ = false;
    lock.unlock();
    (void)pass();
    lock.lock();
  }
}

}  // namespace canopy::spoke::bus
