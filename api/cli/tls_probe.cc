#include "api/cli/tls_probe.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "api/cli/client.h"

namespace canopy::cli {
namespace {

struct Free {
  void operator()(BIO* p) const { BIO_free_all(p); }
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
  void operator()(SSL* p) const { SSL_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

std::string read_whole(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(what + " " + path + ": cannot read it");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ssl_reason() {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "the connection closed during the handshake";
  const char* r = ERR_reason_error_string(e);
  return r != nullptr ? r : "unknown OpenSSL error";
}

std::string subject_cn(X509* cert) {
  char buf[256] = "?";
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

std::string not_after(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(bio.get(), X509_get0_notAfter(cert));
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : "?";
}

// Adds the PEM certificates in `pem` to `store`; false when there are none.
bool add_pem_certs(X509_STORE* store, const std::string& pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  int added = 0;
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, c);
    X509_free(c);
    ++added;
  }
  ERR_clear_error();
  return added > 0;
}

}  // namespace

void load_client_tls(ClientTls* tls) {
  if (!tls->ca_file.empty()) {
    tls->ca_pem = read_whole("--ca", tls->ca_file);
    Ptr<X509_STORE> store(X509_STORE_new());
    if (!add_pem_certs(store.get(), tls->ca_pem)) {
      fail("--ca " + tls->ca_file + ": holds no PEM certificate");
    }
  }
  if (tls->cert_file.empty() != tls->key_file.empty()) {
    fail(tls->cert_file.empty() ? "--key needs --cert (the client certificate)"
                                : "--cert needs --key (the client certificate's key)");
  }
  if (!tls->cert_file.empty()) {
    tls->cert_pem = read_whole("--cert", tls->cert_file);
    tls->key_pem = read_whole("--key", tls->key_file);
  }
}

std::string probe_tls(const std::string& address, const ClientTls& tls) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned char addr[16];
  const bool ip =
      inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1;

  Ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return "";
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (!tls.cert_pem.empty()) {
    Ptr<BIO> cb(BIO_new_mem_buf(tls.cert_pem.data(), static_cast<int>(tls.cert_pem.size())));
    Ptr<X509> cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    Ptr<BIO> kb(BIO_new_mem_buf(tls.key_pem.data(), static_cast<int>(tls.key_pem.size())));
    Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
    if (!cert || !key || SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1) {
      ERR_clear_error();
      return "--cert " + tls.cert_file + " and --key " + tls.key_file +
             " are not a PEM certificate and its key";
    }
  }
  Ptr<BIO> conn(BIO_new_connect(address.c_str()));
  if (!conn || BIO_do_connect(conn.get()) != 1) {
    ERR_clear_error();
    return "";  // not a TLS matter: the caller's message says the hub is unreachable
  }
  int fd = -1;
  BIO_get_fd(conn.get(), &fd);
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  Ptr<SSL> ssl(SSL_new(ctx.get()));
  BIO* raw = conn.release();
  SSL_set_bio(ssl.get(), raw, raw);
  if (!ip) SSL_set_tlsext_host_name(ssl.get(), host.c_str());
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof kAlpn);
  const bool connected = SSL_connect(ssl.get()) == 1;
  std::string handshake_error = connected ? "" : ssl_reason();
  Ptr<X509> leaf(SSL_get1_peer_certificate(ssl.get()));
  if (!leaf) {
    if (!connected && handshake_error.find("alert") != std::string::npos) {
      return "the hub ended the handshake (" + handshake_error + ")" +
             (tls.cert_pem.empty() ? ": it may require a client certificate (--cert and --key)"
                                   : ": it refused the client certificate --cert " + tls.cert_file);
    }
    return connected ? "" : "no TLS from the hub (" + handshake_error + "): does it serve TLS?";
  }
  // The hub's certificate against the roots the channel uses.
  Ptr<X509_STORE> store(X509_STORE_new());
  if (tls.ca_pem.empty()) {
    X509_STORE_set_default_paths(store.get());
  } else {
    add_pem_certs(store.get(), tls.ca_pem);
  }
  Ptr<X509_STORE_CTX> vctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(vctx.get(), store.get(), leaf.get(), SSL_get_peer_cert_chain(ssl.get()));
  X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(vctx.get()), X509_PURPOSE_SSL_SERVER);
  const std::string roots =
      tls.ca_file.empty() ? "the system's CAs (set --ca)" : "the CA in --ca " + tls.ca_file;
  if (X509_verify_cert(vctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(vctx.get());
    std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_CERT_HAS_EXPIRED) {
      why += " (it was valid until " + not_after(leaf.get()) + "; the hub needs a new certificate)";
    } else if (err == X509_V_ERR_CERT_NOT_YET_VALID) {
      why += " (check the clocks)";
    } else if (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
               err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
               err == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
               err == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE) {
      why += " (it was not issued by that CA: wrong --ca?)";
    }
    return "the hub's certificate (CN=" + subject_cn(leaf.get()) + ") does not verify against " +
           roots + ": " + why;
  }
  const int name_ok = ip ? X509_check_ip_asc(leaf.get(), host.c_str(), 0)
                         : X509_check_host(leaf.get(), host.c_str(), host.size(), 0, nullptr);
  if (name_ok != 1) {
    return "the hub's certificate (CN=" + subject_cn(leaf.get()) + ") does not name \"" + host +
           "\", the host dialled (use a name the certificate holds in --hub, or give the hub a "
           "certificate for this one)";
  }
  if (!connected) {
    return "the handshake failed (" + handshake_error + ")" +
           (tls.cert_pem.empty()
                ? ": the hub may require a client certificate (--cert, --key)"
                : ": the hub may refuse the client certificate --cert " + tls.cert_file);
  }
  // TLS 1.3: the hub judges the client certificate after the handshake, and
  // answers with an alert (or gRPC: closes); a good one gets the HTTP/2
  // settings.
  char buf[64];
  if (SSL_read(ssl.get(), buf, sizeof buf) <= 0) {
    const std::string why = ssl_reason();
    if (tls.cert_pem.empty()) {
      return "the hub requires a client certificate (it ended the connection after the "
             "handshake: " +
             why + "): set --cert and --key";
    }
    Ptr<BIO> cb(BIO_new_mem_buf(tls.cert_pem.data(), static_cast<int>(tls.cert_pem.size())));
    Ptr<X509> mine(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    if (mine && X509_cmp_current_time(X509_get0_notAfter(mine.get())) < 0) {
      return "the hub refused the client certificate --cert " + tls.cert_file + ": it expired at " +
             not_after(mine.get());
    }
    if (mine && X509_cmp_current_time(X509_get0_notBefore(mine.get())) > 0) {
      return "the hub refused the client certificate --cert " + tls.cert_file +
             ": it is not valid yet (check the clocks)";
    }
    return "the hub refused the client certificate --cert " + tls.cert_file + " (" + why +
           "): is it issued by a CA the hub trusts (its tls_client_ca_file)?";
  }
  return "";
}

}  // namespace canopy::cli
