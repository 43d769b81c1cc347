#include "tests/kubeapi/test_pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace canopy::kubeapi {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

Status openssl_error(const std::string& what) {
  char buf[256] = {0};
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  return internal_error(what + ": " + buf);
}

StatusOr<std::string> bio_text(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  if (n < 0) return internal_error("reading a memory BIO");
  return std::string(data, static_cast<size_t>(n));
}

StatusOr<KeyPair> to_pem(X509* cert, EVP_PKEY* key) {
  Bio cert_bio(BIO_new(BIO_s_mem()));
  Bio key_bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(cert_bio.get(), cert)) return openssl_error("writing certificate");
  if (!PEM_write_bio_PrivateKey(key_bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return openssl_error("writing private key");
  }
  auto c = bio_text(cert_bio.get());
  auto k = bio_text(key_bio.get());
  if (!c.ok()) return c.status();
  if (!k.ok()) return k.status();
  return KeyPair{*c, *k};
}

bool add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate with a random positive serial, subject `cn`/`orgs` and the
// given validity; the caller adds extensions and signs it.
Cert new_certificate(EVP_PKEY* key, const std::string& cn, const std::vector<std::string>& orgs,
                     std::chrono::seconds not_before, std::chrono::seconds not_after) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(not_before.count()));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(not_after.count()));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  for (const auto& o : orgs) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

StatusOr<std::pair<Cert, PKey>> load(const KeyPair& pair) {
  Bio cb(BIO_new_mem_buf(pair.cert_pem.data(), static_cast<int>(pair.cert_pem.size())));
  Bio kb(BIO_new_mem_buf(pair.key_pem.data(), static_cast<int>(pair.key_pem.size())));
  Cert cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  PKey key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!cert || !key) return openssl_error("reading the CA's PEM");
  return std::make_pair(std::move(cert), std::move(key));
}

}  // namespace

StatusOr<KeyPair> make_certificate_authority(const std::string& common_name) {
  PKey key(EVP_EC_gen("P-256"));
  if (!key) return openssl_error("generating a P-256 key");
  Cert cert = new_certificate(key.get(), common_name, {}, std::chrono::seconds(-3600),
                              std::chrono::seconds(10 * 365 * 24 * 3600));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  if (!add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !add_extension(cert.get(), cert.get(), NID_key_usage,
                     "critical,keyCertSign,cRLSign,digitalSignature") ||
      !add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash")) {
    return openssl_error("adding CA extensions");
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return openssl_error("signing CA");
  return to_pem(cert.get(), key.get());
}

StatusOr<KeyPair> make_certificate(const KeyPair& ca, const CertificateRequest& request) {
  auto issuer = load(ca);
  if (!issuer.ok()) return issuer.status();
  auto& [ca_cert, ca_key] = *issuer;
  PKey key(EVP_EC_gen("P-256"));
  if (!key) return openssl_error("generating a P-256 key");
  Cert cert = new_certificate(key.get(), request.common_name, request.organizations,
                              request.not_before, request.not_after);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  std::string san;
  for (const auto& ip : request.ip_addresses) san += (san.empty() ? "" : ",") + ("IP:" + ip);
  for (const auto& dns : request.dns_names) san += (san.empty() ? "" : ",") + ("DNS:" + dns);
  bool ok = add_extension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            add_extension(cert.get(), ca_cert.get(), NID_key_usage,
                          "critical,digitalSignature,keyEncipherment") &&
            add_extension(cert.get(), ca_cert.get(), NID_ext_key_usage,
                          request.server ? "serverAuth" : "clientAuth") &&
            add_extension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid");
  if (ok && !san.empty()) ok = add_extension(cert.get(), ca_cert.get(), NID_subject_alt_name, san);
  if (!ok) return openssl_error("adding certificate extensions");
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) {
    return openssl_error("signing certificate");
  }
  return to_pem(cert.get(), key.get());
}

}  // namespace canopy::kubeapi
