#include "hub/nats_tls.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "daemon/identity.h"

namespace canopy::hub {
namespace {

StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unavailable("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Status set_hub_nats_tls(const HubConfig& c, sync::NatsOptions* o) {
  bool tls = !c.nats_ca_file.empty() || !c.nats_cert_file.empty();
  for (const auto& url : c.nats_urls) tls = tls || url.rfind("tls://", 0) == 0;
  if (!tls) return ok_status();
  o->tls = true;
  o->tls_server_name = c.nats_tls_server_name;
  const std::string ca_dir = c.data_dir + "/ca";
  o->tls_ca_file = c.nats_ca_file.empty() ? ca_dir + "/ca.crt" : c.nats_ca_file;
  if (!c.nats_cert_file.empty()) {
    o->tls_cert_file = c.nats_cert_file;
    o->tls_key_file = c.nats_key_file;
    return ok_status();
  }
  // Issued by the hub's CA for this run.
  auto ca_key = read_file(ca_dir + "/ca.key");
  if (!ca_key.ok()) return ca_key.status();
  auto ca_cert = read_file(ca_dir + "/ca.crt");
  if (!ca_cert.ok()) return ca_cert.status();
  const std::string cn = "canopy-hub-" + c.name;
  auto key = daemon::generate_private_key();
  if (!key.ok()) return key.status();
  auto csr = daemon::make_csr(*key, cn);
  if (!csr.ok()) return csr.status();
  auto cert = daemon::sign_csr({*ca_key, *ca_cert}, *csr, cn, kHubNatsCertDays);
  if (!cert.ok()) return cert.status();
  const std::string dir = c.data_dir + "/nats-tls";
  o->tls_key_file = dir + "/hub.key";
  o->tls_cert_file = dir + "/hub.crt";
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(o->tls_key_file, *key));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(o->tls_cert_file, *cert));
  spdlog::info("NATS TLS: client certificate {} (CN={}, from the hub's CA)", o->tls_cert_file, cn);
  return ok_status();
}

}  // namespace canopy::hub
