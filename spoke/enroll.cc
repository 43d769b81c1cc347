// The site's enrollment exchange with the hub (spoke/enroll.h).
#include "spoke/enroll.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "daemon/identity.h"
#include "model/names.h"

namespace canopy::spoke {
namespace {

using json = nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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

StatusOr<std::unique_ptr<httplib::ClientImpl>> hub_http_client(const std::string& hub_url,
                                                               const std::string& ca_pem,
                                                               const std::string& cert_pem,
                                                               const std::string& key_pem) {
  const bool tls = hub_url.starts_with("https://");
  if (!tls && !hub_url.starts_with("http://")) {
    return invalid_argument("--hub-url " + hub_url +
                            ": want the hub's HTTP API, http://host:port or https://host:port");
  }
  std::string rest = hub_url.substr(tls ? 8 : 7);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  std::string host;
  int port = tls ? 443 : 80;
  const size_t colon = rest.rfind(':');
  if (colon != std::string::npos && rest.find(']', colon) == std::string::npos) {
    host = rest.substr(0, colon);
    try {
      port = std::stoi(rest.substr(colon + 1));
    } catch (const std::exception&) {
      return invalid_argument("--hub-url " + hub_url + ": bad port");
    }
  } else {
    host = rest;
  }
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host.empty() || host.find('/') != std::string::npos) {
    return invalid_argument("--hub-url " + hub_url + ": want scheme://host:port, no path");
  }
  std::unique_ptr<httplib::ClientImpl> client;
  if (!tls) {
    client = std::make_unique<httplib::ClientImpl>(host, port);
  } else {
    std::unique_ptr<httplib::SSLClient> ssl;
    if (!cert_pem.empty()) {
      BIO* cb = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
      X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
      BIO_free(cb);
      BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
      EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
      BIO_free(kb);
      if (cert == nullptr || key == nullptr) {
        X509_free(cert);
        EVP_PKEY_free(key);
        return invalid_argument("the site's certificate or key is not PEM");
      }
      ssl = std::make_unique<httplib::SSLClient>(host, port, cert, key);
      X509_free(cert);
      EVP_PKEY_free(key);
    } else {
      ssl = std::make_unique<httplib::SSLClient>(host, port);
    }
    if (ca_pem.empty()) {
      ssl->enable_server_certificate_verification(false);
    } else {
      X509_STORE* store = X509_STORE_new();
      BIO* bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
      int added = 0;
      while (X509* c = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(store, c);
        X509_free(c);
        ++added;
      }
      BIO_free(bio);
      ERR_clear_error();
      if (added == 0) {
        X509_STORE_free(store);
        return invalid_argument("the pinned CA is not a PEM certificate");
      }
      ssl->set_ca_cert_store(store);  // owned by the client's context from here
      ssl->enable_server_certificate_verification(true);
    }
    client = std::move(ssl);
  }
  client->set_connection_timeout(5, 0);
  client->set_read_timeout(30, 0);
  return client;
}

std::string hub_error(const httplib::ClientImpl& client, const httplib::Result& res) {
  if (!res) {
    const httplib::Error e = res.error();
    auto* ssl = dynamic_cast<const httplib::SSLClient*>(&client);
    if (e == httplib::Error::SSLServerVerification && ssl != nullptr) {
      const long v = ssl->get_openssl_verify_result();
      if (v != X509_V_OK) {
        std::string why = X509_verify_cert_error_string(v);
        if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
            v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
            v == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE) {
          why +=
              ": it was not issued by the pinned CA (give the hub a serving certificate from "
              "its CA: tls_hosts)";
        }
        return "TLS: the hub's certificate does not verify against the pinned CA: " + why;
      }
      return "TLS: the hub's certificate does not name the host in --hub-url (use a name it "
             "holds, or reissue it: tls_hosts)";
    }
    if (e == httplib::Error::SSLConnection) {
      return "TLS handshake with the hub failed (does it serve https on that port? does it "
             "require a client certificate?)";
    }
    return "no answer (" + httplib::to_string(e) + ")";
  }
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

namespace {

// Double opt-in: asks the hub every poll_interval whether a fleet admin
// decided, until the identity comes (its answer) or the enrollment is
// denied or unknown (an error). A hub that
// does not answer is asked again: the pending enrollment waits at the hub.
StatusOr<json> poll_for_approval(httplib::ClientImpl& cli, const EnrollRequest& r,
                                 const std::string& poll, const std::string& request) {
  const std::string& site = r.site;
  spdlog::info(
      "enrollment of site {} waits for a fleet admin's approval (kubectl canopy site approve "
      "{}); the request to compare: {}",
      site, site, request);
  const std::string body = json{{"site", site}, {"poll", poll}}.dump();
  int unanswered = 0;
  for (;;) {
    if (r.wait) {
      if (!r.wait(r.poll_interval)) {
        return Status(StatusCode::kCancelled, "stopped while the enrollment of site " + site +
                                                  " waits for approval; start again to poll on");
      }
    } else {
      std::this_thread::sleep_for(r.poll_interval);
    }
    auto res = cli.Post("/v1/enroll/poll", body, "application/json");
    if (res && res->status == 200) {
      json answer = json::parse(res->body, nullptr, false);
      if (!answer.is_object()) return invalid_argument("the hub's approval answer is not JSON");
      spdlog::info("enrollment of site {} approved", site);
      return answer;
    }
    if (res && res->status == 202) continue;
    if (res && (res->status == 401 || res->status == 403 || res->status == 404)) {
      return Status(
          res->status == 403 ? StatusCode::kPermissionDenied : StatusCode::kUnauthenticated,
          "the hub ended the enrollment: " + hub_error(cli, res));
    }
    if (++unanswered % 20 == 1) {
      spdlog::warn("enrollment of site {}: the hub did not answer its poll ({}); asking again",
                   site, hub_error(cli, res));
    }
  }
}

// poll_for_approval; when the enrollment ended (denied, unknown), the
// pending files in `dir` go too: a new token starts afresh.
StatusOr<json> wait_for_approval(httplib::ClientImpl& cli, const EnrollRequest& r,
                                 const std::string& dir, const std::string& poll,
                                 const std::string& request) {
  auto approved = poll_for_approval(cli, r, poll, request);
  if (!approved.ok() && approved.status().code() != StatusCode::kCancelled) {
    std::error_code ec;
    std::filesystem::remove(dir + "/pending.json", ec);
    std::filesystem::remove(dir + "/site.key", ec);
  }
  return approved;
}

}  // namespace

Status enroll_site(const EnrollRequest& r) {
  auto pinned = daemon::normalize_fingerprint(r.ca_fingerprint);
  if (!pinned.ok()) return pinned.status();
  const std::string dir = identity_dir(r.data_dir);
  std::error_code ec;
  if (std::filesystem::exists(dir + "/site.crt", ec)) {
    return failed_precondition("site " + r.site + " is already enrolled (" + dir +
                               "/site.crt exists); remove " + dir + " to enroll again");
  }
  const std::string pending_path = dir + "/pending.json";
  json answer;
  std::string key_pem, pinned_ca;
  std::unique_ptr<httplib::ClientImpl> verified;
  if (std::filesystem::exists(pending_path, ec)) {
    // A restart while a fleet admin had not decided: poll on with the key
    // and poll secret kept then; the token was spent already.
    const json pending = json::parse(read_file(pending_path), nullptr, false);
    if (!pending.is_object() || !pending.contains("poll") || !pending["poll"].is_string() ||
        !pending.contains("request") || !pending["request"].is_string()) {
      return invalid_argument(pending_path + " is damaged; remove " + dir +
                              " and enroll with a new token");
    }
    key_pem = read_file(dir + "/site.key");
    pinned_ca = read_file(dir + "/ca.crt");
    CANOPY_RETURN_IF_ERROR(check_pinned(pinned_ca, *pinned, (dir + "/ca.crt").c_str()));
    auto cli = hub_http_client(r.hub_url, pinned_ca);
    if (!cli.ok()) return cli.status();
    verified = std::move(*cli);
    auto approved = wait_for_approval(*verified, r, dir, pending["poll"].get<std::string>(),
                                      pending["request"].get<std::string>());
    if (!approved.ok()) return approved.status();
    answer = std::move(*approved);
  } else {
    if (r.token.empty()) return invalid_argument("--enroll: the bootstrap token is empty");
    // 1. The hub's CA, checked before the token goes anywhere (over https
    // unverified: nothing secret is sent, and the answer is checked below).
    auto probe = hub_http_client(r.hub_url, "");
    if (!probe.ok()) return probe.status();
    auto ca_res = (*probe)->Get("/v1/ca");
    if (!ca_res || ca_res->status != 200) {
      return unavailable("cannot read the hub's CA from " + r.hub_url +
                         "/v1/ca: " + hub_error(**probe, ca_res));
    }
    const json ca_doc = json::parse(ca_res->body, nullptr, false);
    if (!ca_doc.is_object() || !ca_doc.contains("ca") || !ca_doc["ca"].is_string()) {
      return invalid_argument(r.hub_url + "/v1/ca: the answer holds no CA certificate");
    }
    // The fingerprint is computed here from the certificate, never taken
    // from the answer.
    pinned_ca = ca_doc["ca"].get<std::string>();
    CANOPY_RETURN_IF_ERROR(check_pinned(pinned_ca, *pinned, "GET /v1/ca"));
    // From here the hub's certificate must verify against the pinned CA.
    auto cli = hub_http_client(r.hub_url, pinned_ca);
    if (!cli.ok()) return cli.status();
    verified = std::move(*cli);

    // 2. The site's key, made here, and a CSR for it.
    auto key = daemon::generate_private_key();
    if (!key.ok()) return key.status();
    key_pem = *key;
    auto csr = daemon::make_csr(key_pem, r.site);
    if (!csr.ok()) return csr.status();

    // 3. The exchange.
    const json body = {{"token", r.token}, {"csr", *csr}};
    auto res = verified->Post("/v1/enroll", body.dump(), "application/json");
    if (!res || (res->status != 200 && res->status != 202)) {
      return Status(
          res && res->status == 401 ? StatusCode::kUnauthenticated : StatusCode::kUnavailable,
          "the hub refused the enrollment: " + hub_error(*verified, res));
    }
    answer = json::parse(res->body, nullptr, false);
    if (res->status == 202) {
      // Double opt-in: the key and the poll secret are kept (0600) so that a
      // restart polls on; nothing else is written until the answer.
      if (!answer.is_object() || !answer.contains("poll") || !answer["poll"].is_string() ||
          !answer.contains("request") || !answer["request"].is_string()) {
        return invalid_argument("the hub's answer to a held enrollment has no poll secret");
      }
      const std::string poll = answer["poll"].get<std::string>();
      const std::string request = answer["request"].get<std::string>();
      CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.key", key_pem));
      CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/ca.crt", pinned_ca));
      CANOPY_RETURN_IF_ERROR(daemon::write_private_file(
          pending_path, json{{"poll", poll}, {"request", request}}.dump() + "\n"));
      auto approved = wait_for_approval(*verified, r, dir, poll, request);
      if (!approved.ok()) return approved.status();
      answer = std::move(*approved);
    }
  }
  if (!answer.is_object() || !answer.contains("certificate") ||
      !answer["certificate"].is_string() || !answer.contains("ca") || !answer["ca"].is_string()) {
    return invalid_argument("the hub's enrollment answer has no certificate and CA");
  }
  const std::string cert = answer["certificate"].get<std::string>();
  const std::string ca = answer["ca"].get<std::string>();
  CANOPY_RETURN_IF_ERROR(check_pinned(ca, *pinned, "the enrollment answer"));
  if (Status st = daemon::verify_cert(ca, cert, key_pem); !st.ok()) {
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
    json creds = {{"user", n["user"]}, {"password", n["password"]}};
    if (n.contains("leaf_user")) {
      if (!n["leaf_user"].is_string() ||
          !model::is_dns1123_label(n["leaf_user"].get<std::string>())) {
        return invalid_argument("the hub's NATS leaf user is not a DNS-1123 label");
      }
      creds["leaf_user"] = n["leaf_user"];
    }
    nats = creds.dump() + "\n";
  }

  // 4. The files, 0600; the certificate last (it marks the site enrolled).
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/hub-url", r.hub_url + "\n"));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.key", key_pem));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/ca.crt", ca));
  if (!nats.empty()) CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/nats.json", nats));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.crt", cert));
  std::filesystem::remove(pending_path, ec);
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
  NatsCredentials creds{j["user"].get<std::string>(), j["password"].get<std::string>(), ""};
  if (j.contains("leaf_user")) {
    if (!j["leaf_user"].is_string()) return invalid_argument(path + ": leaf_user is not a string");
    creds.leaf_user = j["leaf_user"].get<std::string>();
  }
  return std::optional<NatsCredentials>(std::move(creds));
}

}  // namespace canopy::spoke
