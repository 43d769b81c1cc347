#include "sync/nats_tls.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

namespace canopy::sync::internal {
namespace {

std::string nats_detail(natsStatus s) {
  natsStatus ignored;
  const char* text = nats_GetLastError(&ignored);
  std::string detail = text != nullptr && text[0] != '\0' ? text : natsStatus_GetText(s);
  return detail;
}

Status readable(const std::string& path, const char* field) {
  if (::access(path.c_str(), R_OK) != 0) {
    return invalid_argument(std::string("NatsOptions.") + field + ": cannot read " + path);
  }
  return ok_status();
}

}  // namespace

bool tls_enabled(const NatsOptions& o) {
  if (o.tls) return true;
  for (const auto& url : o.urls) {
    if (url.rfind("tls://", 0) == 0) return true;
  }
  return false;
}

std::string url_host(const std::string& url) {
  std::string rest = url;
  if (const size_t scheme = rest.find("://"); scheme != std::string::npos) {
    rest = rest.substr(scheme + 3);
  }
  if (const size_t at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
  if (const size_t slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    return close == std::string::npos ? rest.substr(1) : rest.substr(1, close - 1);
  }
  if (const size_t colon = rest.rfind(':'); colon != std::string::npos) rest.resize(colon);
  return rest;
}

std::string tls_expected_host(const NatsOptions& o) {
  if (!o.tls_server_name.empty()) return o.tls_server_name;
  return o.urls.empty() ? std::string() : url_host(o.urls.front());
}

Status validate_tls(const NatsOptions& o) {
  if (!tls_enabled(o)) {
    if (!o.tls_ca_file.empty() || !o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
      return invalid_argument(
          "NatsOptions: TLS files are set but TLS is off (set tls or use tls:// URLs)");
    }
    return ok_status();
  }
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return invalid_argument("NatsOptions.tls_cert_file and tls_key_file go together");
  }
  if (!o.tls_ca_file.empty()) CANOPY_RETURN_IF_ERROR(readable(o.tls_ca_file, "tls_ca_file"));
  if (!o.tls_cert_file.empty()) {
    CANOPY_RETURN_IF_ERROR(readable(o.tls_cert_file, "tls_cert_file"));
    CANOPY_RETURN_IF_ERROR(readable(o.tls_key_file, "tls_key_file"));
  }
  if (o.tls_server_name.empty()) {
    const std::string host = url_host(o.urls.front());
    for (const auto& url : o.urls) {
      if (url_host(url) != host) {
        return invalid_argument("NatsOptions.tls_server_name: required when the URLs name " +
                                std::string("different hosts (") + host + ", " + url_host(url) +
                                "): the name the servers' certificates carry");
      }
    }
  }
  return ok_status();
}

Status apply_tls(natsOptions* opts, const NatsOptions& o) {
  if (!tls_enabled(o)) return ok_status();
  natsStatus s = natsOptions_SetSecure(opts, true);
  if (s != NATS_OK) return internal_error("NATS TLS: " + nats_detail(s));
  if (!o.tls_ca_file.empty()) {
    s = natsOptions_LoadCATrustedCertificates(opts, o.tls_ca_file.c_str());
    if (s != NATS_OK) {
      return invalid_argument("NATS TLS CA file " + o.tls_ca_file + ": " + nats_detail(s));
    }
  }
  if (!o.tls_cert_file.empty()) {
    s = natsOptions_LoadCertificatesChain(opts, o.tls_cert_file.c_str(), o.tls_key_file.c_str());
    if (s != NATS_OK) {
      return invalid_argument("NATS TLS certificate " + o.tls_cert_file + " with key " +
                              o.tls_key_file + ": " + nats_detail(s));
    }
  }
  const std::string host = tls_expected_host(o);
  if (!host.empty()) {
    s = natsOptions_SetExpectedHostname(opts, host.c_str());
    if (s != NATS_OK) return internal_error("NATS TLS host name " + host + ": " + nats_detail(s));
  }
  return ok_status();
}

std::string client_cert_problem(const NatsOptions& o) {
  if (o.tls_cert_file.empty()) return std::string();
  FILE* f = std::fopen(o.tls_cert_file.c_str(), "r");
  if (f == nullptr) return "client certificate " + o.tls_cert_file + " cannot be read";
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (cert == nullptr) return "client certificate " + o.tls_cert_file + " is not PEM";
  auto when = [](const ASN1_TIME* t) {
    std::tm tm{};
    char buf[32] = "?";
    if (ASN1_TIME_to_tm(t, &tm) == 1) std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return std::string(buf);
  };
  std::string problem;
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    problem =
        "client certificate " + o.tls_cert_file + " expired at " + when(X509_get0_notAfter(cert));
  } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    problem = "client certificate " + o.tls_cert_file + " is not valid before " +
              when(X509_get0_notBefore(cert));
  }
  X509_free(cert);
  return problem;
}

std::string explain_tls_failure(const NatsOptions& o, natsStatus s, const std::string& why) {
  if (!tls_enabled(o)) return why;
  if (std::string problem = client_cert_problem(o); !problem.empty()) {
    return why + "; " + problem;
  }
  if (!o.tls_cert_file.empty() &&
      (s == NATS_IO_ERROR || s == NATS_PROTOCOL_ERROR || s == NATS_CONNECTION_CLOSED)) {
    return why + "; the server closed the connection after the TLS handshake: it may refuse " +
           "the client certificate " + o.tls_cert_file +
           " (another CA, or revoked; the server's log says why)";
  }
  return why;
}

}  // namespace canopy::sync::internal
