#include "spoke/bus/bus_config.h"

#include <set>

#include "daemon/password_hash.h"

namespace canopy::spoke::bus {
namespace {

constexpr size_t kSpokePasswordLength = 32;

Status check_keys(const YAML::Node& node, const std::string& path,
                  const std::set<std::string>& known) {
  if (!node.IsMap()) return invalid_argument(path + ": must be a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (known.count(key) == 0) return invalid_argument(path + ": unknown setting \"" + key + "\"");
  }
  return ok_status();
}

Status load_limits(const YAML::Node& node, BusLimits* l) {
  CANOPY_RETURN_IF_ERROR(check_keys(
      node, "bus.limits",
      {"max_payload", "max_connections", "max_memory_store", "max_file_store", "tenant_max_memory",
       "tenant_max_file", "tenant_max_consumers", "mqtt_ack_wait_seconds", "mqtt_max_ack_pending",
       "mqtt_consumer_memory_storage", "mqtt_consumer_inactive_threshold_seconds",
       "telemetry_max_bytes", "telemetry_max_age_seconds", "telemetry_max_message"}));
  if (node["max_payload"]) l->max_payload = node["max_payload"].as<int64_t>();
  if (node["max_connections"]) l->max_connections = node["max_connections"].as<int64_t>();
  if (node["max_memory_store"]) l->max_memory_store = node["max_memory_store"].as<int64_t>();
  if (node["max_file_store"]) l->max_file_store = node["max_file_store"].as<int64_t>();
  if (node["tenant_max_memory"]) l->tenant_max_memory = node["tenant_max_memory"].as<int64_t>();
  if (node["tenant_max_file"]) l->tenant_max_file = node["tenant_max_file"].as<int64_t>();
  if (node["tenant_max_consumers"]) {
    l->tenant_max_consumers = node["tenant_max_consumers"].as<int64_t>();
  }
  if (node["mqtt_ack_wait_seconds"]) {
    l->mqtt_ack_wait = std::chrono::seconds(node["mqtt_ack_wait_seconds"].as<int64_t>());
  }
  if (node["mqtt_consumer_memory_storage"]) {
    l->mqtt_consumer_memory_storage = node["mqtt_consumer_memory_storage"].as<bool>();
  }
  if (node["mqtt_consumer_inactive_threshold_seconds"]) {
    l->mqtt_consumer_inactive_threshold =
        std::chrono::seconds(node["mqtt_consumer_inactive_threshold_seconds"].as<int64_t>());
  }
  if (node["mqtt_max_ack_pending"])
    l->mqtt_max_ack_pending = node["mqtt_max_ack_pending"].as<int>();
  if (node["telemetry_max_bytes"]) {
    l->telemetry_max_bytes = node["telemetry_max_bytes"].as<int64_t>();
  }
  if (node["telemetry_max_age_seconds"]) {
    l->telemetry_max_age = std::chrono::seconds(node["telemetry_max_age_seconds"].as<int64_t>());
  }
  if (node["telemetry_max_message"]) {
    l->telemetry_max_message = node["telemetry_max_message"].as<int64_t>();
  }
  return ok_status();
}

Status load_tenants(const YAML::Node& node, std::vector<BusTenant>* tenants) {
  if (!node.IsSequence()) return invalid_argument("bus.tenants: must be a list");
  tenants->clear();
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string tp = "bus.tenants[" + std::to_string(i) + "]";
    const YAML::Node t = node[i];
    CANOPY_RETURN_IF_ERROR(check_keys(t, tp, {"name", "devices"}));
    BusTenant tenant;
    if (t["name"]) tenant.name = t["name"].as<std::string>();
    if (t["devices"]) {
      if (!t["devices"].IsSequence()) return invalid_argument(tp + ".devices: must be a list");
      for (size_t j = 0; j < t["devices"].size(); ++j) {
        const std::string dp = tp + ".devices[" + std::to_string(j) + "]";
        const YAML::Node d = t["devices"][j];
        CANOPY_RETURN_IF_ERROR(check_keys(d, dp, {"id", "password_hash", "scope"}));
        BusDevice device;
        if (d["id"]) device.id = d["id"].as<std::string>();
        if (d["password_hash"]) device.password_hash = d["password_hash"].as<std::string>();
        if (d["scope"]) {
          auto scope = parse_device_scope(d["scope"].as<std::string>());
          if (!scope.ok()) return invalid_argument(dp + ".scope: " + scope.status().message());
          device.scope = *scope;
        }
        tenant.devices.push_back(std::move(device));
      }
    }
    tenants->push_back(std::move(tenant));
  }
  return ok_status();
}

}  // namespace

Status load_bus_settings(const YAML::Node& node, BusSettings* s) {
  try {
    CANOPY_RETURN_IF_ERROR(check_keys(
        node, "bus",
        {"enabled", "nats_server", "dir", "mqtt_host", "mqtt_port", "client_port", "monitor_port",
         "leaf_port", "leaf_remote", "limits", "tenants", "tenants_file"}));
    if (node["enabled"]) s->enabled = node["enabled"].as<bool>();
    if (node["nats_server"]) s->nats_server = node["nats_server"].as<std::string>();
    if (node["tenants_file"]) s->tenants_file = node["tenants_file"].as<std::string>();
    if (node["dir"]) s->spec.dir = node["dir"].as<std::string>();
    if (node["mqtt_host"]) s->spec.mqtt_host = node["mqtt_host"].as<std::string>();
    if (node["mqtt_port"]) s->spec.mqtt_port = node["mqtt_port"].as<int>();
    if (node["client_port"]) s->spec.client_port = node["client_port"].as<int>();
    if (node["monitor_port"]) s->spec.monitor_port = node["monitor_port"].as<int>();
    if (node["leaf_port"]) s->spec.leaf_port = node["leaf_port"].as<int>();
    if (const YAML::Node r = node["leaf_remote"]) {
      s->spec.leaf_urls.clear();
      if (r.IsSequence()) {
        for (const auto& u : r) s->spec.leaf_urls.push_back(u.as<std::string>());
      } else {
        s->spec.leaf_urls.push_back(r.as<std::string>());
      }
    }
    if (node["limits"]) CANOPY_RETURN_IF_ERROR(load_limits(node["limits"], &s->spec.limits));
    if (node["tenants"]) CANOPY_RETURN_IF_ERROR(load_tenants(node["tenants"], &s->spec.tenants));
  } catch (const YAML::Exception& e) {
    return invalid_argument(std::string("bus: ") + e.what());
  }
  return ok_status();
}

Status load_tenants_file(const std::string& path, std::vector<BusTenant>* tenants) {
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (Status st = check_keys(root, "bus.tenants_file " + path, {"tenants"}); !st.ok()) return st;
    if (!root["tenants"]) {
      tenants->clear();
      return ok_status();
    }
    if (Status st = load_tenants(root["tenants"], tenants); !st.ok()) {
      return invalid_argument("bus.tenants_file " + path + ": " + st.message());
    }
  } catch (const YAML::Exception& e) {
    return invalid_argument("bus.tenants_file " + path + ": " + e.what());
  }
  return ok_status();
}

StatusOr<BusSpec> make_bus_spec(const BusSettings& settings, const std::string& site,
                                const std::string& data_dir, std::string* spoke_password) {
  BusSpec spec = settings.spec;
  if (!settings.tenants_file.empty()) {
    if (!spec.tenants.empty()) {
      return invalid_argument("bus: tenants and tenants_file are exclusive; use one");
    }
    CANOPY_RETURN_IF_ERROR(load_tenants_file(settings.tenants_file, &spec.tenants));
  }
  spec.site = site;
  if (spec.dir.empty()) spec.dir = data_dir + "/bus";
  *spoke_password = daemon::random_password(kSpokePasswordLength);
  // A random 32-character password needs no key stretching: the lowest cost.
  auto hash = daemon::bcrypt_hash(*spoke_password, daemon::kMinBcryptCost);
  if (!hash.ok()) return hash.status();
  spec.spoke_password_hash = *hash;
  return spec;
}

}  // namespace canopy::spoke::bus
