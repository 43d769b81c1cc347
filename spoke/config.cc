#include "spoke/config.h"

#include <algorithm>
#include <filesystem>

#include "daemon/config_file.h"
#include "sync/subjects.h"

namespace canopy::spoke {

NatsTlsFiles nats_tls_files(const SpokeConfig& c) {
  const std::string identity = c.data_dir + "/identity";
  auto pick = [](const std::string& configured, const std::string& enrolled) {
    if (!configured.empty()) return configured;
    std::error_code ec;
    return std::filesystem::exists(enrolled, ec) ? enrolled : std::string();
  };
  NatsTlsFiles f;
  f.ca_file = pick(c.nats_ca_file, identity + "/ca.crt");
  f.cert_file = pick(c.nats_cert_file, identity + "/site.crt");
  if (!f.cert_file.empty()) f.key_file = pick(c.nats_key_file, identity + "/site.key");
  return f;
}

bool nats_tls_wanted(const SpokeConfig& c) {
  bool tls = !c.nats_ca_file.empty() || !c.nats_cert_file.empty();
  for (const auto& url : c.nats_urls) tls = tls || url.rfind("tls://", 0) == 0;
  return tls;
}

Status load_spoke_config(const std::string& path, SpokeConfig* c) {
  YAML::Node root;
  CANOPY_RETURN_IF_ERROR(daemon::load_config_map(path,
                                                 {"site",
                                                  "labels",
                                                  "parent",
                                                  "data_dir",
                                                  "applier",
                                                  "manifests_dir",
                                                  "kubeconfig",
                                                  "kube_context",
                                                  "kube_audit_seconds",
                                                  "nats",
                                                  "health_listen",
                                                  "durability",
                                                  "disk_reserve_mb",
                                                  "resync_seconds",
                                                  "log_retention_hours",
                                                  "log_level",
                                                  "bus",
                                                  "nats_credentials_file",
                                                  "nats_ca_file",
                                                  "nats_cert_file",
                                                  "nats_key_file",
                                                  "nats_tls_server_name",
                                                  "hub_url",
                                                  "renew_at"},
                                                 &root));
  try {
    if (root["site"]) c->site = root["site"].as<std::string>();
    if (root["labels"]) {
      if (!root["labels"].IsMap())
        return invalid_argument("config " + path + ": labels must be a mapping");
      for (const auto& kv : root["labels"]) {
        c->labels[kv.first.as<std::string>()] = kv.second.as<std::string>();
      }
    }
    if (root["parent"]) c->parent = daemon::node_list_of(root["parent"]);
    if (root["data_dir"]) c->data_dir = root["data_dir"].as<std::string>();
    if (root["applier"]) c->applier = root["applier"].as<std::string>();
    if (root["manifests_dir"]) c->manifests_dir = root["manifests_dir"].as<std::string>();
    if (root["kubeconfig"]) c->kubeconfig = root["kubeconfig"].as<std::string>();
    if (root["kube_context"]) c->kube_context = root["kube_context"].as<std::string>();
    if (root["kube_audit_seconds"]) {
      c->kube_audit_seconds = root["kube_audit_seconds"].as<uint64_t>();
    }
    if (root["nats"]) c->nats_urls = daemon::nats_urls_of(root["nats"]);
    if (root["nats_credentials_file"]) {
      c->nats_credentials_file = root["nats_credentials_file"].as<std::string>();
    }
    if (root["hub_url"]) c->hub_url = root["hub_url"].as<std::string>();
    if (root["renew_at"]) c->renew_at = root["renew_at"].as<double>();
    if (root["nats_ca_file"]) c->nats_ca_file = root["nats_ca_file"].as<std::string>();
    if (root["nats_cert_file"]) c->nats_cert_file = root["nats_cert_file"].as<std::string>();
    if (root["nats_key_file"]) c->nats_key_file = root["nats_key_file"].as<std::string>();
    if (root["nats_tls_server_name"]) {
      c->nats_tls_server_name = root["nats_tls_server_name"].as<std::string>();
    }
    if (root["health_listen"]) c->health_listen = root["health_listen"].as<std::string>();
    if (root["durability"]) {
      auto d = parse_durability(root["durability"].as<std::string>());
      if (!d.ok()) return invalid_argument("config " + path + ": " + d.status().message());
      c->durability = *d;
    }
    if (root["disk_reserve_mb"]) {
      c->disk_reserve_bytes = root["disk_reserve_mb"].as<uint64_t>() << 20;
    }
    if (root["resync_seconds"]) c->resync_seconds = root["resync_seconds"].as<uint64_t>();
    if (root["log_retention_hours"]) {
      c->log_retention_hours = root["log_retention_hours"].as<uint64_t>();
    }
    if (root["log_level"]) c->log_level = root["log_level"].as<std::string>();
    if (root["bus"]) {
      if (Status st = bus::load_bus_settings(root["bus"], &c->bus); !st.ok()) {
        return invalid_argument("config " + path + ": " + st.message());
      }
    }
  } catch (const YAML::Exception& e) {
    return invalid_argument("config " + path + ": " + e.what());
  }
  return ok_status();
}

Status parse_label(const std::string& text, std::map<std::string, std::string>* labels) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return invalid_argument("label \"" + text + "\" must be key=value");
  }
  (*labels)[text.substr(0, eq)] = text.substr(eq + 1);
  return ok_status();
}

Status validate_spoke_config(const SpokeConfig& c) {
  if (c.site.empty()) return invalid_argument("site: required (--site or site:)");
  if (Status st = sync::validate_node_name(c.site); !st.ok()) {
    return invalid_argument("site: " + st.message());
  }
  if (auto parents = sync::parse_node_list(c.parent); !parents.ok()) {
    return invalid_argument("parent: " + parents.status().message());
  } else if (std::find(parents->begin(), parents->end(), c.site) != parents->end()) {
    return invalid_argument("parent: a site cannot be its own parent");
  }
  if (c.data_dir.empty()) return invalid_argument("data_dir: required (--data or data_dir:)");
  if (c.applier != "manifests-dir" && c.applier != "kube") {
    return invalid_argument("applier: '" + c.applier + "' is not manifests-dir or kube");
  }
  if (c.applier == "kube" && c.kube_audit_seconds == 0) {
    return invalid_argument("kube_audit_seconds: must be at least 1");
  }
  if (c.applier == "manifests-dir" && c.manifests_dir.empty()) {
    return invalid_argument("manifests_dir: required (--manifests or manifests_dir:)");
  }
  CANOPY_RETURN_IF_ERROR(daemon::validate_nats_urls(c.nats_urls));
  if (c.nats_cert_file.empty() != c.nats_key_file.empty()) {
    return invalid_argument("nats_cert_file and nats_key_file: set both or neither");
  }
  for (const auto& [k, v] : c.labels) {
    if (k.empty() || k.size() > 63 || v.size() > 63) {
      return invalid_argument("labels: \"" + k + "=" + v + "\" is not a valid label");
    }
  }
  if (c.resync_seconds == 0) return invalid_argument("resync_seconds: must be at least 1");
  if (c.log_retention_hours == 0) {
    return invalid_argument("log_retention_hours: must be at least 1");
  }
  CANOPY_RETURN_IF_ERROR(daemon::validate_listen(c.health_listen));
  if (!(c.renew_at >= 0.1 && c.renew_at <= 0.95)) {
    return invalid_argument("renew_at: a fraction of the certificate's lifetime, 0.1 to 0.95");
  }
  if (!c.hub_url.empty() && !c.hub_url.starts_with("http://") &&
      !c.hub_url.starts_with("https://")) {
    return invalid_argument("hub_url: want http://host:port or https://host:port");
  }
  if (c.bus.enabled) {
    std::string password;
    auto spec = bus::make_bus_spec(c.bus, c.site, c.data_dir, &password);
    if (!spec.ok()) return spec.status();
    CANOPY_RETURN_IF_ERROR(bus::validate_bus_spec(*spec));
    if (c.bus.nats_server.empty()) return invalid_argument("bus.nats_server: required");
  }
  return daemon::validate_log_level(c.log_level);
}

}  // namespace canopy::spoke
