#include "hub/config.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "sync/subjects.h"

namespace canopy::hub {

Status load_hub_config(const std::string& path, HubConfig* c) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return invalid_argument("config " + path + ": cannot read the file");
  } catch (const YAML::Exception& e) {
    return invalid_argument("config " + path + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) return invalid_argument("config " + path + ": must be a YAML mapping");
  static const std::set<std::string> known = {"name",
                                              "data_dir",
                                              "nats",
                                              "grpc_listen",
                                              "health_listen",
                                              "durability",
                                              "max_concurrent_catchups",
                                              "away_after_s",
                                              "session_timeout_s",
                                              "log_retention_hours",
                                              "log_level"};
  try {
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (!known.count(key))
        return invalid_argument("config " + path + ": unknown setting \"" + key + "\"");
    }
    if (root["name"]) c->name = root["name"].as<std::string>();
    if (root["data_dir"]) c->data_dir = root["data_dir"].as<std::string>();
    if (root["nats"]) {
      c->nats_urls.clear();
      if (root["nats"].IsSequence()) {
        for (const auto& u : root["nats"]) c->nats_urls.push_back(u.as<std::string>());
      } else {
        c->nats_urls.push_back(root["nats"].as<std::string>());
      }
    }
    if (root["grpc_listen"]) c->grpc_listen = root["grpc_listen"].as<std::string>();
    if (root["health_listen"]) c->health_listen = root["health_listen"].as<std::string>();
    if (root["durability"]) {
      auto d = parse_durability(root["durability"].as<std::string>());
      if (!d.ok()) return invalid_argument("config " + path + ": " + d.status().message());
      c->durability = *d;
    }
    if (root["max_concurrent_catchups"]) {
      c->max_concurrent_catchups = root["max_concurrent_catchups"].as<size_t>();
    }
    if (root["away_after_s"]) c->away_after_s = root["away_after_s"].as<uint64_t>();
    if (root["session_timeout_s"]) {
      c->session_timeout_s = root["session_timeout_s"].as<uint64_t>();
    }
    if (root["log_retention_hours"])
      c->log_retention_hours = root["log_retention_hours"].as<uint64_t>();
    if (root["log_level"]) c->log_level = root["log_level"].as<std::string>();
  } catch (const YAML::Exception& e) {
    return invalid_argument("config " + path + ": " + e.what());
  }
  return ok_status();
}

Status validate_hub_config(const HubConfig& c) {
  if (Status st = sync::validate_node_name(c.name); !st.ok()) {
    return invalid_argument("name: " + st.message());
  }
  if (c.data_dir.empty()) return invalid_argument("data_dir: required (--data or data_dir:)");
  if (c.nats_urls.empty()) return invalid_argument("nats: at least one URL is required");
  for (const auto& u : c.nats_urls) {
    if (!u.starts_with("nats://") && !u.starts_with("tls://")) {
      return invalid_argument("nats: \"" + u + "\" is not a nats:// URL");
    }
  }
  if (c.max_concurrent_catchups == 0) {
    return invalid_argument("max_concurrent_catchups: must be at least 1");
  }
  // Sites heartbeat every 2 s: a shorter silence is no sign of an outage.
  if (c.away_after_s < 5) return invalid_argument("away_after_s: must be at least 5");
  if (c.session_timeout_s <= c.away_after_s) {
    return invalid_argument("session_timeout_s: must be longer than away_after_s (" +
                            std::to_string(c.away_after_s) + ")");
  }
  for (const auto* l : {&c.grpc_listen, &c.health_listen}) {
    if (!l->empty() && l->find(':') == std::string::npos) {
      return invalid_argument("listen address \"" + *l + "\" must be host:port");
    }
  }
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  if (!levels.count(c.log_level)) {
    return invalid_argument("log_level: \"" + c.log_level +
                            "\" is not one of trace, debug, info, warn, error");
  }
  return ok_status();
}

}  // namespace canopy::hub
