#include "hub/config.h"

#include <algorithm>

#include "daemon/config_file.h"
#include "model/names.h"
#include "sync/subjects.h"

namespace canopy::hub {

Status load_hub_config(const std::string& path, HubConfig* c) {
  YAML::Node root;
  CANOPY_RETURN_IF_ERROR(daemon::load_config_map(path,
                                                 {"name",
                                                  "data_dir",
                                                  "nats",
                                                  "grpc_listen",
                                                  "health_listen",
                                                  "durability",
                                                  "disk_reserve_mb",
                                                  "max_concurrent_catchups",
                                                  "away_after_s",
                                                  "session_timeout_s",
                                                  "log_retention_hours",
                                                  "log_level",
                                                  "admin_token_file",
                                                  "parent",
                                                  "region",
                                                  "peers",
                                                  "nats_auth_file",
                                                  "nats_pid_file",
                                                  "enrollment_approval",
                                                  "site_cert_days",
                                                  "peer_reconcile_s",
                                                  "tls_cert_file",
                                                  "tls_key_file",
                                                  "tls_client_ca_file",
                                                  "tls_hosts",
                                                  "site_cert_seconds",
                                                  "nats_ca_file",
                                                  "nats_cert_file",
                                                  "nats_key_file",
                                                  "nats_tls_server_name"},
                                                 &root));
  try {
    if (root["name"]) c->name = root["name"].as<std::string>();
    if (root["data_dir"]) c->data_dir = root["data_dir"].as<std::string>();
    if (root["nats"]) c->nats_urls = daemon::nats_urls_of(root["nats"]);
    if (root["grpc_listen"]) c->grpc_listen = root["grpc_listen"].as<std::string>();
    if (root["health_listen"]) c->health_listen = root["health_listen"].as<std::string>();
    if (root["admin_token_file"]) {
      c->admin_token_file = root["admin_token_file"].as<std::string>();
    }
    if (root["durability"]) {
      auto d = parse_durability(root["durability"].as<std::string>());
      if (!d.ok()) return invalid_argument("config " + path + ": " + d.status().message());
      c->durability = *d;
    }
    if (root["disk_reserve_mb"]) {
      c->disk_reserve_bytes = root["disk_reserve_mb"].as<uint64_t>() << 20;
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
    if (root["parent"]) c->parent = daemon::node_list_of(root["parent"]);
    if (root["region"]) c->region = root["region"].as<std::string>();
    if (root["peers"]) c->peers = daemon::node_list_of(root["peers"]);
    if (root["peer_reconcile_s"]) c->peer_reconcile_s = root["peer_reconcile_s"].as<uint64_t>();
    if (root["nats_auth_file"]) c->nats_auth_file = root["nats_auth_file"].as<std::string>();
    if (root["nats_pid_file"]) c->nats_pid_file = root["nats_pid_file"].as<std::string>();
    if (root["enrollment_approval"]) {
      c->enrollment_approval = root["enrollment_approval"].as<bool>();
    }
    if (root["site_cert_days"]) c->site_cert_days = root["site_cert_days"].as<int>();
    if (root["site_cert_seconds"]) c->site_cert_seconds = root["site_cert_seconds"].as<long>();
    if (root["tls_cert_file"]) c->tls_cert_file = root["tls_cert_file"].as<std::string>();
    if (root["tls_key_file"]) c->tls_key_file = root["tls_key_file"].as<std::string>();
    if (root["tls_client_ca_file"]) {
      c->tls_client_ca_file = root["tls_client_ca_file"].as<std::string>();
    }
    if (root["tls_hosts"]) {
      c->tls_hosts = root["tls_hosts"].IsSequence()
                         ? root["tls_hosts"].as<std::vector<std::string>>()
                         : std::vector<std::string>{root["tls_hosts"].as<std::string>()};
    }
    if (root["nats_ca_file"]) c->nats_ca_file = root["nats_ca_file"].as<std::string>();
    if (root["nats_cert_file"]) c->nats_cert_file = root["nats_cert_file"].as<std::string>();
    if (root["nats_key_file"]) c->nats_key_file = root["nats_key_file"].as<std::string>();
    if (root["nats_tls_server_name"]) {
      c->nats_tls_server_name = root["nats_tls_server_name"].as<std::string>();
    }
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
  CANOPY_RETURN_IF_ERROR(daemon::validate_nats_urls(c.nats_urls));
  if (c.max_concurrent_catchups == 0) {
    return invalid_argument("max_concurrent_catchups: must be at least 1");
  }
  // Sites heartbeat every 2 s: a shorter silence is no sign of an outage.
  if (c.away_after_s < 5) return invalid_argument("away_after_s: must be at least 5");
  if (c.session_timeout_s <= c.away_after_s) {
    return invalid_argument("session_timeout_s: must be longer than away_after_s (" +
                            std::to_string(c.away_after_s) + ")");
  }
  std::vector<std::string> parents, peers;
  if (!c.parent.empty()) {
    auto list = sync::parse_node_list(c.parent);
    if (!list.ok()) return invalid_argument("parent: " + list.status().message());
    parents = std::move(list).value();
    if (std::find(parents.begin(), parents.end(), c.name) != parents.end()) {
      return invalid_argument("parent: a hub cannot be its own parent");
    }
  }
  if (!c.region.empty()) {
    if (c.parent.empty()) {
      return invalid_argument("region: only for a regional hub (one with a parent)");
    }
    if (!model::is_dns1123_label(c.region)) {
      return invalid_argument("region: \"" + c.region + "\" is not a DNS-1123 label");
    }
    if (std::find(parents.begin(), parents.end(), c.region) != parents.end()) {
      return invalid_argument("region: " + c.region + " is also a parent");
    }
  }
  if (!c.peers.empty()) {
    auto list = sync::parse_node_list(c.peers);
    if (!list.ok()) return invalid_argument("peers: " + list.status().message());
    peers = std::move(list).value();
    for (const auto& p : peers) {
      if (p == c.name) return invalid_argument("peers: a hub is not its own peer");
      if (std::find(parents.begin(), parents.end(), p) != parents.end()) {
        return invalid_argument("peers: " + p + " is also a parent");
      }
    }
  }
  if (!c.nats_pid_file.empty() && c.nats_auth_file.empty()) {
    return invalid_argument("nats_pid_file: only with nats_auth_file (the file it reloads)");
  }
  if (c.nats_cert_file.empty() != c.nats_key_file.empty()) {
    return invalid_argument("nats_cert_file and nats_key_file: set both or neither");
  }
  if (c.peer_reconcile_s < 10) {
    return invalid_argument(
        "peer_reconcile_s: must be at least 10 (each comparison reads every "
        "document)");
  }
  if (c.site_cert_days < 1 || c.site_cert_days > 3650) {
    return invalid_argument("site_cert_days: must be 1 to 3650");
  }
  if (c.site_cert_seconds != 0 && (c.site_cert_seconds < 10 || c.site_cert_seconds > 86400)) {
    return invalid_argument("site_cert_seconds: 0 (use site_cert_days) or 10 to 86400");
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return invalid_argument(c.tls_cert_file.empty() ? "tls_key_file: only with tls_cert_file"
                                                    : "tls_cert_file: needs tls_key_file");
  }
  if (!c.tls_cert_file.empty() && !c.tls_hosts.empty()) {
    return invalid_argument(
        "tls_hosts: not with tls_cert_file (either the hub issues its serving certificate, or "
        "it is given)");
  }
  for (const auto& h : c.tls_hosts) {
    if (h.empty() || h.find_first_of(", ") != std::string::npos) {
      return invalid_argument("tls_hosts: \"" + h + "\" is not a host name or address");
    }
  }
  if (!c.tls_client_ca_file.empty() && !c.tls()) {
    return invalid_argument("tls_client_ca_file: only with tls_cert_file or tls_hosts");
  }
  CANOPY_RETURN_IF_ERROR(daemon::validate_listen(c.grpc_listen));
  CANOPY_RETURN_IF_ERROR(daemon::validate_listen(c.health_listen));
  return daemon::validate_log_level(c.log_level);
}

}  // namespace canopy::hub
