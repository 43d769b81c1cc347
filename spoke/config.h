// SpokeConfig: canopy-spoke's settings, from a YAML file and flags (flags
// win). Every error names the setting and the reason.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "spoke/bus/bus_config.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::spoke {

struct SpokeConfig {
  std::string site;  // the site's name: a DNS-1123 label
  std::map<std::string, std::string> labels;
  // The hub this spoke syncs with; or the hubs of one level running
  // active-active, "root-a,root-b" (a YAML list too): the spoke starts at one
  // of them (sync::preferred_order) and fails over to the next when its hub
  // falls silent (docs/hierarchy.md).
  std::string parent = "hub";
  std::string data_dir;  // RocksDB directory
  // Where rendered objects go: "manifests-dir" (files k3s deploys from) or
  // "kube" (server-side apply to the cluster's API server).
  std::string applier = "manifests-dir";
  std::string manifests_dir;  // applier manifests-dir: where k3s deploys from
  // applier kube: the kubeconfig and context (its current-context when
  // empty); no kubeconfig: the pod's service account (in cluster).
  std::string kubeconfig;
  std::string kube_context;
  uint64_t kube_audit_seconds = 60;  // health and drift read back this often
  std::vector<std::string> nats_urls = {"nats://127.0.0.1:4222"};
  // The site's NATS user from its enrollment (spoke/enroll.h); empty:
  // <data_dir>/identity/nats.json, used when it exists.
  std::string nats_credentials_file;
  // Rotation of the site certificate (spoke/renew.h): the hub's HTTP API
  // (empty: the URL it enrolled at, identity/hub-url), and the fraction of
  // the certificate's lifetime after which it is renewed.
  std::string hub_url;
  double renew_at = 2.0 / 3.0;
  // NATS over TLS (docs/security.md, "NATS over TLS"): on with tls:// URLs
  // or any of these set; defaults, when the site is enrolled: its identity
  // files, <data_dir>/identity/ca.crt, site.crt and site.key (mTLS with the
  // site's certificate). nats_tls_server_name: the name in the server's
  // certificate (default: the URLs' host).
  std::string nats_ca_file;
  std::string nats_cert_file;
  std::string nats_key_file;
  std::string nats_tls_server_name;
  std::string health_listen = "127.0.0.1:7501";  // local API: /healthz, /v1/...
  Durability durability = Durability::kGroupCommit;
  // Free space the store keeps on its disk: below it, writes are refused
  // (StoreOptions::disk_reserve_bytes; default: its write buffer and 4 MiB).
  uint64_t disk_reserve_bytes = StoreOptions::kDiskReserveAuto;
  uint64_t resync_seconds = 30;  // full reconcile even without changes (repairs drift)
  // The store's change log and tombstones are kept this long, as at the hub.
  // The parent reads the spoke's log only for what the spoke wrote and has not
  // uploaded yet; if an outage outlasts this, the spoke uploads whole instead.
  uint64_t log_retention_hours = 168;
  std::string log_level = "info";
  // The site's device bus (spoke/bus/): a nats-server the spoke runs, with
  // its MQTT listener, as a leaf of the hub's NATS. Off unless enabled.
  bus::BusSettings bus;

  std::string nats_credentials_path() const {
    return nats_credentials_file.empty() ? data_dir + "/identity/nats.json" : nats_credentials_file;
  }
};

// The files of NATS over TLS: those configured, else the site's identity
// from its enrollment (<data_dir>/identity/ca.crt, site.crt, site.key) when
// they exist; empty where neither. Used by the spoke's NATS connection and
// by its device bus's leaf connection to the hub.
struct NatsTlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};
NatsTlsFiles nats_tls_files(const SpokeConfig& config);
// Whether the spoke's NATS connection uses TLS: a tls:// URL or a file set.
bool nats_tls_wanted(const SpokeConfig& config);

Status load_spoke_config(const std::string& path, SpokeConfig* config);
// Parses "key=value" label flags.
Status parse_label(const std::string& text, std::map<std::string, std::string>* labels);
Status validate_spoke_config(const SpokeConfig& config);

}  // namespace canopy::spoke
