#include "spoke/bus/device_tenants.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "model/keys.h"

namespace canopy::spoke::bus {
namespace {

constexpr size_t kScanPage = 1000;
constexpr auto kRetry = std::chrono::seconds(1);
// A tenant's MQTT connection for desired twins is closed after this long
// unused (its keep-alive is 60 s, and nothing pings it).
constexpr auto kPublisherIdle = std::chrono::seconds(30);

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
    const std::string_view key = key_of(e);
    if (!key.starts_with(raw->prefix_)) return;
    std::lock_guard lock(raw->mu_);
    raw->changed_.emplace(key);
    raw->cv_.notify_one();
  });
  // What changed while the first pass read is read again by the thread.
  // A failed first apply (a refused spec) is logged; the watch still runs.
  if (Status st = w->pass({}, /*all=*/true); !st.ok() &&
                                             st.code() != StatusCode::kInvalidArgument &&
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

bool DeviceDocumentsWatch::publish(const std::map<std::string, Published>& items,
                                   std::set<std::string>* failed_keys) {
  if (items.empty() || desired_.mqtt_host.empty()) return true;
  std::map<std::string, std::vector<std::pair<std::string, const Published*>>> by_tenant;
  for (const auto& [key, p] : items) by_tenant[p.tenant].emplace_back(key, &p);
  bool all = true;
  uint64_t published = 0;
  uint64_t failed = 0;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [tenant, list] : by_tenant) {
    Publisher& pub = publishers_[tenant];
    if (pub.mqtt == nullptr) pub.mqtt = std::make_unique<MqttPublisher>();
    pub.used = now;
    auto connect = [&] {
      return pub.mqtt->connect(desired_.mqtt_host, desired_.mqtt_port,
                               "_canopy-" + site_ + "-" + tenant, spoke_mqtt_user(tenant),
                               desired_.password);
    };
    Status st = pub.mqtt->connected() ? ok_status() : connect();
    // The tenant's changed twins in one pipelined run of PUBLISHes (a spoke
    // restart at 10,000 devices re-publishes every one).
    std::vector<std::string> topics;
    topics.reserve(list.size());
    for (const auto& [key, p] : list) topics.push_back(desired_topic(p->tenant, p->id));
    std::vector<Status> results(list.size(), st);
    auto run = [&](const std::vector<size_t>& which) {
      std::vector<MqttPublisher::RetainedMessage> messages;
      messages.reserve(which.size());
      for (size_t i : which) messages.push_back({topics[i], list[i].second->payload});
      std::vector<Status> out = pub.mqtt->publish_retained_all(messages);
      for (size_t j = 0; j < which.size(); ++j) results[which[j]] = std::move(out[j]);
    };
    std::vector<size_t> all_items(list.size());
    for (size_t i = 0; i < list.size(); ++i) all_items[i] = i;
    if (st.ok()) {
      run(all_items);
      // A connection kept from an earlier pass may have been closed by the
      // server (a reload, an idle timeout): one new connection, one retry
      // of what it did not take.
      std::vector<size_t> retry;
      for (size_t i = 0; i < list.size(); ++i) {
        if (!results[i].ok() && results[i].code() != StatusCode::kInvalidArgument) {
          retry.push_back(i);
        }
      }
      if (!retry.empty()) {
        st = connect();
        if (st.ok()) {
          run(retry);
        } else {
          for (size_t i : retry) results[i] = st;
        }
      }
    }
    Status last_error;
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& [key, p] = list[i];
      if (!results[i].ok()) {
        ++failed;
        all = false;
        last_error = results[i];
        if (failed_keys != nullptr) failed_keys->insert(key);
        continue;
      }
      ++published;
      if (p->payload.empty()) {
        published_.erase(key);
      } else {
        published_[key] = *p;
      }
    }
    if (!last_error.ok()) {
      spdlog::warn("bus: desired twins of tenant {} not published: {}; retrying", tenant,
                   last_error.message());
      pub.mqtt->disconnect();
    }
  }
  std::lock_guard lock(mu_);
  stats_.desired_published += published;
  stats_.desired_failed += failed;
  return all;
}

void DeviceDocumentsWatch::close_idle_publishers() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = publishers_.begin(); it != publishers_.end();) {
    if (now - it->second.used >= kPublisherIdle) {
      it = publishers_.erase(it);  // the destructor disconnects
    } else {
      ++it;
    }
  }
}

bool DeviceDocumentsWatch::read_one(const std::string& key, const std::optional<std::string>& text,
                                    uint64_t* refused) {
  auto old = devices_.find(key);
  std::optional<model::Device> device;
  if (text) {
    const model::ParsedKey k = model::parse_key(key);
    if (k.kind != model::KeyKind::kDevice) {
      ++*refused;
      spdlog::error("bus: device document {} refused: not a device key", key);
    } else {
      const auto doc = nlohmann::json::parse(*text, nullptr, false);
      auto parsed = model::parse_device(k.site, k.tenant, k.name, doc);
      if (!parsed.ok()) {
        ++*refused;
        spdlog::error("bus: device document {} refused: {}", key, parsed.status().message());
      } else {
        device = std::move(*parsed);
      }
    }
  }
  if (!device) {
    if (old == devices_.end()) return false;
    devices_.erase(old);
    return true;
  }
  if (old == devices_.end()) {
    devices_.emplace(key, std::move(*device));
    return true;
  }
  const bool bus_sees =
      old->second.password_hash != device->password_hash || old->second.scope != device->scope;
  old->second = std::move(*device);
  return bus_sees;
}

Status DeviceDocumentsWatch::pass(const std::set<std::string>& keys, bool all) {
  uint64_t refused = 0;
  bool bus_changed = false;
  std::set<std::string> bus_keys;  // keys whose change the bus sees
  std::set<std::string> touched;   // keys read in this pass
  if (all) {
    std::map<std::string, model::Device> before;
    before.swap(devices_);
    std::string after;
    while (true) {
      auto page = store_->scan(prefix_, after, kScanPage);
      if (!page.ok()) {
        devices_.swap(before);
        spdlog::error("bus: cannot read the device documents: {}", page.status().to_string());
        return page.status();
      }
      for (const auto& item : page->items) {
        touched.insert(item.key);
        (void)read_one(item.key, item.json, &refused);
      }
      if (page->next_after.empty()) break;
      after = page->next_after;
    }
    for (const auto& [key, d] : before) touched.insert(key);
    for (const auto& [key, p] : published_) touched.insert(key);
    bus_changed = true;
    bus_keys = touched;
  } else {
    for (const auto& key : keys) {
      std::optional<std::string> text;
      if (auto got = store_->get(key); got.ok()) {
        text = std::move(*got);
      } else if (got.status().code() != StatusCode::kNotFound) {
        spdlog::error("bus: cannot read the device document {}: {}", key, got.status().to_string());
        continue;
      }
      touched.insert(key);
      if (read_one(key, text, &refused)) {
        bus_changed = true;
        bus_keys.insert(key);
      }
    }
  }
  // Desired twins: what each touched device should have retained now.
  std::map<std::string, Published> clears;
  std::map<std::string, Published> changes;
  for (const auto& key : touched) {
    auto d = devices_.find(key);
    auto p = published_.find(key);
    const bool wanted = d != devices_.end() && !d->second.desired.empty();
    if (!wanted) {
      if (p != published_.end()) clears[key] = {p->second.tenant, p->second.id, ""};
      continue;
    }
    std::string payload = d->second.desired.dump();
    if (p == published_.end() || p->second.payload != payload) {
      changes[key] = {d->second.tenant, d->second.id, std::move(payload)};
    }
  }
  std::set<std::string> failed;
  // Clears first, while the devices' accounts still exist.
  bool published = publish(clears, &failed);
  {
    std::lock_guard lock(mu_);
    ++stats_.passes;
    stats_.refused += refused;
    stats_.devices = devices_.size();
    for (const auto& key : touched) {
      const model::ParsedKey k = model::parse_key(key);
      auto d = devices_.find(key);
      if (d != devices_.end()) {
        known_.emplace(d->second.tenant, d->second.id);
      } else if (k.kind == model::KeyKind::kDevice) {
        known_.erase(std::pair<std::string, std::string>(k.tenant, k.name));
      }
    }
  }
  Status st = ok_status();
  if (bus_changed) {
    std::vector<model::Device> list;
    list.reserve(devices_.size());
    for (const auto& [key, d] : devices_) list.push_back(d);
    const size_t count = list.size();
    st = sources_->set_documents(std::move(list));
    {
      std::lock_guard lock(mu_);
      ++stats_.bus_updates;
    }
    if (st.ok()) spdlog::info("bus: {} device document(s) applied", count);
  }
  // A device whose bus change was refused has no user to receive its twin.
  if (!st.ok()) {
    for (const auto& key : bus_keys) changes.erase(key);
  }
  published = publish(changes, &failed) && published;
  if (!published) {
    std::lock_guard lock(mu_);
    retry_.insert(failed.begin(), failed.end());
  }
  return st;
}

void DeviceDocumentsWatch::loop() {
  std::unique_lock lock(mu_);
  auto retry_at = std::chrono::steady_clock::time_point::max();
  while (true) {
    // Wakes for changes at once; a failed desired publish is retried a
    // second later; idle publishers are closed.
    const auto until = std::min(retry_at, std::chrono::steady_clock::now() + kRetry);
    cv_.wait_until(lock, until, [&] { return !changed_.empty() || stopping_; });
    if (stopping_) return;
    std::set<std::string> keys;
    keys.swap(changed_);
    if (!retry_.empty() && std::chrono::steady_clock::now() >= retry_at) {
      keys.merge(retry_);
      retry_.clear();
      retry_at = std::chrono::steady_clock::time_point::max();
    }
    lock.unlock();
    if (!keys.empty()) (void)pass(keys, /*all=*/false);
    close_idle_publishers();
    lock.lock();
    if (!retry_.empty() && retry_at == std::chrono::steady_clock::time_point::max()) {
      retry_at = std::chrono::steady_clock::now() + kRetry;
    }
  }
}

}  // namespace canopy::spoke::bus
