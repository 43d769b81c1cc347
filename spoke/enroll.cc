// The site's enrollment exchange with the hub (spoke/enroll.h).
#include "spoke/enroll.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "daemon/identity.h"

namespace canopy::spoke {
namespace {

using json = nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The hub's answer's error text ({"error": ...}) or its status.
std::string error_of(const httplib::Result& res) {
  if (!res) return "no answer (" + httplib::to_string(res.error()) + ")";
  json body = json::parse(res->body, nullptr, false);
  std::string what = "HTTP " + std::to_string(res->status);
  if (body.is_object() && body.contains("error")) {
    const json& e = body["error"];
    if (e.is_string()) return what + ": " + e.get<std::string>();
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      return what + ": " + e["message"].get<std::string>();
    }
  }
  return what;
}

Status check_pinned(const std::string& ca_pem, const std::string& pinned, const char* where) {
  auto fp = daemon::cert_fingerprint(ca_pem);
  if (!fp.ok()) return invalid_argument(std::string(where) + ": " + fp.status().message());
  if (*fp != pinned) {
    return permission_denied(std::string(where) + ": the hub's CA has fingerprint " + *fp +
                             ", not the pinned " + pinned +
                             ": this is not the hub the token came from (wrong --hub-url, or "
                             "someone in between); nothing was sent or written");
  }
  return ok_status();
}

}  // namespace

std::string identity_dir(const std::string& data_dir) { return data_dir + "/identity"; }

Status enroll_site(const EnrollRequest& r) {
  auto pinned = daemon::normalize_fingerprint(r.ca_fingerprint);
  if (!pinned.ok()) return pinned.status();
  if (r.token.empty()) return invalid_argument("--enroll: the bootstrap token is empty");
  if (!r.hub_url.starts_with("http://") && !r.hub_url.starts_with("https://")) {
    return invalid_argument("--hub-url " + r.hub_url +
                            ": want the hub's HTTP API, http://host:port");
  }
  const std::string dir = identity_dir(r.data_dir);
  std::error_code ec;
  if (std::filesystem::exists(dir + "/site.crt", ec)) {
    return failed_precondition("site " + r.site + " is already enrolled (" + dir +
                               "/site.crt exists); remove " + dir + " to enroll again");
  }
  httplib::Client cli(r.hub_url);
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(30, 0);

  // 1. The hub's CA, checked before the token goes anywhere.
  auto ca_res = cli.Get("/v1/ca");
  if (!ca_res || ca_res->status != 200) {
    return unavailable("cannot read the hub's CA from " + r.hub_url +
                       "/v1/ca: " + error_of(ca_res));
  }
  const json ca_doc = json::parse(ca_res->body, nullptr, false);
  if (!ca_doc.is_object() || !ca_doc.contains("ca") || !ca_doc["ca"].is_string()) {
    return invalid_argument(r.hub_url + "/v1/ca: the answer holds no CA certificate");
  }
  // The fingerprint is computed here from the certificate, never taken from
  // the answer.
  CANOPY_RETURN_IF_ERROR(check_pinned(ca_doc["ca"].get<std::string>(), *pinned, "GET /v1/ca"));

  // 2. The site's key, made here, and a CSR for it.
  auto key = daemon::generate_private_key();
  if (!key.ok()) return key.status();
  auto csr = daemon::make_csr(*key, r.site);
  if (!csr.ok()) return csr.status();

  // 3. The exchange.
  const json body = {{"token", r.token}, {"csr", *csr}};
  auto res = cli.Post("/v1/enroll", body.dump(), "application/json");
  if (!res || res->status != 200) {
    return Status(
        res && res->status == 401 ? StatusCode::kUnauthenticated : StatusCode::kUnavailable,
        "the hub refused the enrollment: " + error_of(res));
  }
  json answer = json::parse(res->body, nullptr, false);
  if (!answer.is_object() || !answer.contains("certificate") ||
      !answer["certificate"].is_string() || !answer.contains("ca") || !answer["ca"].is_string()) {
    return invalid_argument("the hub's enrollment answer has no certificate and CA");
  }
  const std::string cert = answer["certificate"].get<std::string>();
  const std::string ca = answer["ca"].get<std::string>();
  CANOPY_RETURN_IF_ERROR(check_pinned(ca, *pinned, "the enrollment answer"));
  if (Status st = daemon::verify_cert(ca, cert, *key); !st.ok()) {
    return invalid_argument("the hub's certificate: " + st.message());
  }
  auto cn = daemon::cert_common_name(cert);
  if (!cn.ok() || *cn != r.site) {
    return invalid_argument("the hub's certificate names " + (cn.ok() ? *cn : "nothing") +
                            ", not site " + r.site);
  }
  std::string nats;
  if (answer.contains("nats") && answer["nats"].is_object()) {
    const json& n = answer["nats"];
    if (!n.contains("user") || !n["user"].is_string() || !n.contains("password") ||
        !n["password"].is_string()) {
      return invalid_argument("the hub's NATS credentials lack a user or password");
    }
    nats = json{{"user", n["user"]}, {"password", n["password"]}}.dump() + "\n";
  }

  // 4. The files, 0600; the certificate last (it marks the site enrolled).
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.key", *key));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/ca.crt", ca));
  if (!nats.empty()) CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/nats.json", nats));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.crt", cert));
  spdlog::info("enrolled site {} at {}: identity in {} (CA {})", r.site, r.hub_url, dir, *pinned);
  return ok_status();
}

StatusOr<std::optional<NatsCredentials>> load_nats_credentials(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<NatsCredentials>();
    return unavailable("cannot stat " + path + ": " + std::strerror(errno));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return failed_precondition(path + " is open to other users (mode " + mode +
                               "); chmod 600 it: it holds the site's NATS password");
  }
  json j = json::parse(read_file(path), nullptr, false);
  if (!j.is_object() || !j.contains("user") || !j["user"].is_string() || !j.contains("password") ||
      !j["password"].is_string()) {
    return invalid_argument(path + ": want {\"user\": \"...\", \"password\": \"...\"}");
  }
  return std::optional<NatsCredentials>(
      NatsCredentials{j["user"].get<std::string>(), j["password"].get<std::string>()});
}

}  // namespace canopy::spoke
