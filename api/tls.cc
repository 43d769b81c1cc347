#include "api/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>

namespace canopy::api {
namespace {

std::string ssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// At most kMaxHandshakeLogsPerMinute a minute, over all listeners.
bool may_log() {
  static std::atomic<int64_t> window{0};
  static std::atomic<int> count{0};
  const int64_t minute = std::chrono::duration_cast<std::chrono::minutes>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  int64_t w = window.load();
  if (w != minute && window.compare_exchange_strong(w, minute)) count = 0;
  return count.fetch_add(1) < kMaxHandshakeLogsPerMinute;
}

std::string peer_of(const SSL* ssl) {
  const int fd = SSL_get_fd(ssl);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (fd < 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

// Whether this thread's handshake (one at a time per thread) refused a
// client certificate: the alert that follows is then not for a missing one.
thread_local bool client_cert_refused = false;

// A client certificate that does not verify: why (expired, unknown issuer).
int log_client_verify(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1) return 1;
  client_cert_refused = true;
  const int err = X509_STORE_CTX_get_error(store);
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (may_log()) {
    char subject[256] = "?";
    if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
      X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    }
    spdlog::info("TLS handshake from {}: client certificate {} refused: {}",
                 ssl != nullptr ? peer_of(ssl) : "?", subject, X509_verify_cert_error_string(err));
  }
  return 0;
}

// Alerts: sent by us (no client certificate, one that did not verify) or by
// the client (it does not trust our certificate, or the name on it).
void log_alerts(const SSL* ssl, int where, int ret) {
  if ((where & SSL_CB_HANDSHAKE_START) != 0) client_cert_refused = false;
  if ((where & SSL_CB_ALERT) == 0) return;
  const bool fatal = std::string_view(SSL_alert_type_string(ret)) == "F";
  if (!fatal || !may_log()) return;
  const std::string desc = SSL_alert_desc_string_long(ret);
  if ((where & SSL_CB_READ) != 0) {
    spdlog::info(
        "TLS handshake from {} failed: the client refused the hub's certificate "
        "(alert \"{}\": does it trust the CA that issued it, and is the host name it "
        "dialled on it?)",
        peer_of(ssl), desc);
  } else {
    const bool required = (SSL_get_verify_mode(ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) != 0;
    const bool no_cert =
        required && !client_cert_refused &&
        (desc == "certificate required" || SSL_get0_peer_certificate(ssl) == nullptr);
    spdlog::info("TLS handshake from {} failed: sent alert \"{}\"{}", peer_of(ssl), desc,
                 no_cert ? " (no client certificate: this listener requires one)" : "");
  }
}

}  // namespace

Status check_server_tls(const TlsServerFiles& files) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return internal_error("SSL_CTX_new: " + ssl_error());
  Status st = configure_server_tls(ctx, files);
  SSL_CTX_free(ctx);
  return st;
}

StatusOr<std::string> read_tls_file(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument(what + " " + path + ": cannot read it");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status configure_server_tls(SSL_CTX* ctx, const TlsServerFiles& f) {
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, f.cert_file.c_str()) != 1) {
    return invalid_argument("tls_cert_file " + f.cert_file + ": " + ssl_error());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, f.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return invalid_argument("tls_key_file " + f.key_file + ": " + ssl_error() +
                            " (it must be the key of tls_cert_file " + f.cert_file + ")");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return invalid_argument("tls_key_file " + f.key_file + " is not the key of tls_cert_file " +
                            f.cert_file + ": " + ssl_error());
  }
  SSL_CTX_set_info_callback(ctx, log_alerts);
  if (f.requires_client_cert()) {
    if (SSL_CTX_load_verify_locations(ctx, f.client_ca_file.c_str(), nullptr) != 1) {
      return invalid_argument("tls_client_ca_file " + f.client_ca_file + ": " + ssl_error());
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(f.client_ca_file.c_str());
    if (names == nullptr) {
      return invalid_argument("tls_client_ca_file " + f.client_ca_file + ": no certificate in it");
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, log_client_verify);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  return ok_status();
}

}  // namespace canopy::api
