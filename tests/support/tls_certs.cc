// OpenSSL 3 behind tests/support/tls_certs.h.
#include "tests/support/tls_certs.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include "daemon/openssl_exit.h"

namespace canopy::testing {
namespace {

// A test process that speaks TLS ends as the daemons do, without OpenSSL's
// clean-up at exit (daemon/openssl_exit.h): its gRPC and NATS.c threads can
// still be ending then.
CANOPY_KEEP_OPENSSL_UNTIL_EXIT();

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(FILE* p) const { std::fclose(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

std::string ssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

bool fail(std::string* error, const std::string& message) {
  if (error != nullptr) *error = message + ": " + ssl_error();
  return false;
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value, std::string* error) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) return fail(error, "extension " + value);
  return true;
}

bool write_pem(const std::string& path, EVP_PKEY* key, X509* cert, std::string* error) {
  Ptr<FILE> f(std::fopen(path.c_str(), "w"));
  if (!f) {
    if (error != nullptr) *error = "cannot write " + path;
    return false;
  }
  const bool ok = key != nullptr
                      ? PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr)
                      : PEM_write_X509(f.get(), cert);
  if (!ok) return fail(error, "cannot write " + path);
  if (key != nullptr) ::chmod(path.c_str(), 0600);
  return true;
}

Ptr<EVP_PKEY> read_key(const std::string& path) {
  Ptr<FILE> f(std::fopen(path.c_str(), "r"));
  if (!f) return nullptr;
  return Ptr<EVP_PKEY>(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
}

Ptr<X509> read_cert(const std::string& path) {
  Ptr<FILE> f(std::fopen(path.c_str(), "r"));
  if (!f) return nullptr;
  return Ptr<X509>(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
}

// Signs a new certificate for a new key; `ca` null: self-signed CA.
CertFiles make(const CertFiles* ca, const std::string& base, const CertSpec& spec, bool is_ca,
               std::string* error) {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  Ptr<X509> cert(X509_new());
  if (!key || !cert) return fail(error, "key"), CertFiles{};
  Ptr<EVP_PKEY> ca_key;
  Ptr<X509> ca_cert;
  if (ca != nullptr) {
    ca_key = read_key(ca->key);
    ca_cert = read_cert(ca->cert);
    if (!ca_key || !ca_cert) return fail(error, "cannot read the CA " + ca->cert), CertFiles{};
  }
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(spec.not_before.count()));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(spec.not_after.count()));
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1,
                             -1, 0);
  X509* issuer = ca_cert ? ca_cert.get() : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer));
  bool ok = true;
  if (is_ca) {
    ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE", error) &&
         add_ext(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign", error) &&
         add_ext(cert.get(), issuer, NID_subject_key_identifier, "hash", error);
  } else {
    std::string eku;
    if (spec.server) eku = "serverAuth";
    if (spec.client) eku += eku.empty() ? "clientAuth" : ",clientAuth";
    std::string san;
    for (const auto& d : spec.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
    for (const auto& ip : spec.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
    ok = add_ext(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE", error) &&
         add_ext(cert.get(), issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment",
                 error) &&
         add_ext(cert.get(), issuer, NID_ext_key_usage, eku, error) &&
         add_ext(cert.get(), issuer, NID_authority_key_identifier, "keyid", error) &&
         (san.empty() || add_ext(cert.get(), issuer, NID_subject_alt_name, san, error));
  }
  if (!ok) return CertFiles{};
  if (!X509_sign(cert.get(), ca_key ? ca_key.get() : key.get(), EVP_sha256())) {
    return fail(error, "sign " + base), CertFiles{};
  }
  CertFiles files{base + ".crt", base + ".key"};
  if (!write_pem(files.key, key.get(), nullptr, error) ||
      !write_pem(files.cert, nullptr, cert.get(), error)) {
    return CertFiles{};
  }
  return files;
}

}  // namespace

TestCertificates::TestCertificates() : dir_("canopy-certs-") {}

CertFiles TestCertificates::make_ca(const std::string& name, std::string* error) {
  CertSpec spec;
  spec.common_name = name;
  spec.not_after = std::chrono::hours(24 * 30);
  return make(nullptr, dir_.file(name + "-ca"), spec, true, error);
}

CertFiles TestCertificates::issue(const CertFiles& ca, const std::string& file_name,
                                  const CertSpec& spec, std::string* error) {
  return make(&ca, dir_.file(file_name), spec, false, error);
}

CertFiles TestCertificates::issue_server(const CertFiles& ca, const std::string& file_name,
                                         std::vector<std::string> dns_names,
                                         std::vector<std::string> ip_addresses,
                                         std::string* error) {
  CertSpec spec;
  spec.common_name = dns_names.empty() ? file_name : dns_names.front();
  spec.dns_names = std::move(dns_names);
  spec.ip_addresses = std::move(ip_addresses);
  spec.server = true;
  spec.client = true;  // a nats-server also dials leaf remotes and routes with it
  return issue(ca, file_name, spec, error);
}

CertFiles TestCertificates::issue_client(const CertFiles& ca, const std::string& common_name,
                                         std::chrono::seconds not_after,
                                         std::chrono::seconds not_before, std::string* error) {
  CertSpec spec;
  spec.common_name = common_name;
  spec.not_after = not_after;
  spec.not_before = not_before;
  return issue(ca, common_name, spec, error);
}

}  // namespace canopy::testing
