// HubConfig: canopy-hub's settings, from a YAML file and command-line flags
// (flags win). Every error names the setting and the reason.
#pragma once

#include <string>
#include <vector>

#include "store/status.h"
#include "store/store.h"

namespace canopy::hub {

struct HubConfig {
  std::string name = "hub";  // node name: a DNS-1123 label, unique among hubs
  std::string data_dir;      // RocksDB directory
  std::vector<std::string> nats_urls = {"nats://127.0.0.1:4222"};
  std::string grpc_listen = "127.0.0.1:7400";
  std::string health_listen = "127.0.0.1:7401";  // HTTP: /healthz, /v1/sessions, REST API
  Durability durability = Durability::kGroupCommit;
  // Free space the store keeps on its disk: below it, writes are refused
  // (StoreOptions::disk_reserve_bytes; default: its write buffer and 4 MiB).
  uint64_t disk_reserve_bytes = StoreOptions::kDiskReserveAuto;
  size_t max_concurrent_catchups = 64;
  // A site silent this long is away: nothing is sent to it until it speaks
  // again (sync::ParentOptions::away_after_ms).
  uint64_t away_after_s = 10;
  // A site silent this long loses its session and says hello again; sites
  // learn it from the welcome (sync::ParentOptions::session_timeout_ms).
  uint64_t session_timeout_s = 600;
  uint64_t log_retention_hours = 168;  // the change log and tombstones are kept this long
  std::string log_level = "info";
  // Where a hub started on an empty store writes its first fleet-admin token
  // (api/auth.h); empty: <data_dir>/admin.token.
  std::string admin_token_file;

  // Hierarchy (DESIGN.md, "Hierarchy and scale-out"; docs/hierarchy.md). A
  // hub with a `parent` is a regional hub: a child of that hub (over the same
  // NATS: the regional NATS is a leaf node of the parent's, or one cluster)
  // for the union of its sites' scopes, and the parent of those sites. It
  // serves the sites whose records its parent gives it (records whose
  // `region` names it), registers none itself, and leaves rollouts to the top
  // of the hierarchy. Empty: this hub is the root. Several names,
  // "root-a,root-b" (or a YAML list): the parent level runs active-active,
  // and this hub fails over between them as a site does.
  std::string parent;
  // The region this regional hub serves: the name its sites' records give in
  // their `region` field. Empty: the hub's own name. Several hubs of one
  // region (active-active, with `peers` naming each other) give the same
  // region and each their own name; the parent sends the region's scope to
  // each, and its sites name them all as parents (docs/hierarchy.md,
  // "Active-active regions"). Only with `parent`.
  std::string region;
  // The region this hub serves as a regional hub: `region`, else its name.
  const std::string& served_region() const { return region.empty() ? name : region; }
  // Active-active: the other hubs of this hub's level, "root-b,root-c" (or a
  // YAML list), each with its own store, on one NATS cluster. The hubs
  // replicate everything between them as CRDT replicas over the ordinary
  // session protocol; sites name all of them as their parent and fail over
  // (docs/hierarchy.md). Empty: this hub is alone at its level.
  std::string peers;
  // How often this hub compares every document with the peer it follows
  // (sync::ChildOptions::reconcile_every_ms): the log stream between peers
  // cannot repair everything (docs/hierarchy.md, "Active-active"). Each
  // comparison reads every document's hash on both sides.
  uint64_t peer_reconcile_s = 600;

  // Enrollment (docs/security.md). The hub's CA lives in <data_dir>/ca/. With
  // nats_auth_file set, the hub manages its nats-server's users: it writes
  // that file (include it in nats-server's config), connects as its own user
  // (password in <data_dir>/nats-hub.password), gives each enrolled site a
  // user confined to its subjects, and after each change sends SIGHUP to the
  // pid in nats_pid_file (nats-server's `pid_file`) so that it reloads.
  std::string nats_auth_file;
  std::string nats_pid_file;
  // Double opt-in: an enrollment waits for a fleet admin's approval
  // (`kubectl canopy site approve SITE`) before anything is issued.
  bool enrollment_approval = false;
  int site_cert_days = 365;
  // When not 0, a site certificate's validity in seconds instead of
  // site_cert_days: for tests of rotation (at least 10).
  long site_cert_seconds = 0;

  // TLS for the gRPC and HTTP listeners (docs/security.md, "TLS"): off
  // unless a certificate is set. tls_cert_file and tls_key_file: the serving
  // certificate (chain) and key, PEM. tls_client_ca_file: clients must then
  // present a certificate issued by a CA in it (mTLS). tls_hosts: instead of
  // a certificate file, the hub issues its own serving certificate from its
  // CA for these names and addresses (written to <data_dir>/tls/ at each
  // start), so that a site that pinned the CA verifies the hub with it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  std::vector<std::string> tls_hosts;
  bool tls() const { return !tls_cert_file.empty() || !tls_hosts.empty(); }

  // NATS over TLS (docs/security.md, "NATS over TLS"): on with tls:// URLs
  // or any of these set. nats_ca_file verifies nats-server's certificate
  // (default: the hub's own CA, <data_dir>/ca/ca.crt); nats_cert_file and
  // nats_key_file are the hub's client certificate for mTLS (default: one
  // the hub issues itself from its CA at each start, in <data_dir>/nats-tls/);
  // nats_tls_server_name the name the server's certificate carries (default:
  // the URLs' host).
  std::string nats_ca_file;
  std::string nats_cert_file;
  std::string nats_key_file;
  std::string nats_tls_server_name;

  std::string admin_token_path() const {
    return admin_token_file.empty() ? data_dir + "/admin.token" : admin_token_file;
  }
};

// Reads `path` (YAML) into `config`. Unknown keys are errors, so a typo does
// not silently fall back to a default.
Status load_hub_config(const std::string& path, HubConfig* config);
Status validate_hub_config(const HubConfig& config);

}  // namespace canopy::hub
