// OpenSSL 3 behind daemon/identity.h: keys, CSRs, certificates, fingerprints
// and private files.
#include "daemon/identity.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <vector>

namespace canopy::daemon {
namespace {

struct Free {
  void operator()(BIO* p) const { BIO_free_all(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

constexpr char kHex[] = "0123456789abcdef";

std::string hex(const unsigned char* p, size_t n) {
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 0xf]);
  }
  return out;
}

// The last OpenSSL error, for a message (and the queue cleared).
std::string ssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Ptr<BIO> mem_bio(std::string_view text) {
  return Ptr<BIO>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

StatusOr<Ptr<EVP_PKEY>> read_key(std::string_view pem) {
  auto bio = mem_bio(pem);
  Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return invalid_argument("not a PEM private key: " + ssl_error());
  return key;
}

StatusOr<Ptr<X509>> read_cert(std::string_view pem) {
  auto bio = mem_bio(pem);
  Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return invalid_argument("not a PEM certificate: " + ssl_error());
  return cert;
}

StatusOr<Ptr<EVP_PKEY>> new_key() {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return internal_error("cannot generate an EC P-256 key: " + ssl_error());
  return key;
}

StatusOr<std::string> key_pem(EVP_PKEY* key) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return internal_error("cannot write a private key: " + ssl_error());
  }
  return bio_text(bio.get());
}

StatusOr<std::string> cert_pem(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) {
    return internal_error("cannot write a certificate: " + ssl_error());
  }
  return bio_text(bio.get());
}

Status set_cn(X509_NAME* name, std::string_view cn) {
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(cn.data()),
                                  static_cast<int>(cn.size()), -1, 0)) {
    return internal_error("cannot set the common name: " + ssl_error());
  }
  return ok_status();
}

std::string common_name_of(X509_NAME* name) {
  const int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return std::string();
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return std::string();
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

Status add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) {
    return internal_error(std::string("cannot add extension ") + value + ": " + ssl_error());
  }
  return ok_status();
}

Status random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return internal_error("no random bytes for a serial");
  bytes[0] &= 0x7f;  // positive
  Ptr<BIGNUM> bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) {
    return internal_error("cannot set a serial: " + ssl_error());
  }
  return ok_status();
}

// A new certificate for `subject_key`'s public half, named `cn`, valid for
// `validity_s` from now, and from an hour ago (clocks of sites drift; less
// for a certificate shorter than that, so that its lifetime is mostly
// ahead).
StatusOr<Ptr<X509>> new_cert(EVP_PKEY* subject_key, std::string_view cn, long validity_s) {
  Ptr<X509> cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), 2)) return internal_error("X509_new: " + ssl_error());
  CANOPY_RETURN_IF_ERROR(random_serial(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -std::min<long>(3600, validity_s));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), validity_s);
  if (!X509_set_pubkey(cert.get(), subject_key)) {
    return internal_error("cannot set the public key: " + ssl_error());
  }
  CANOPY_RETURN_IF_ERROR(set_cn(X509_get_subject_name(cert.get()), cn));
  return cert;
}

}  // namespace

StatusOr<std::string> generate_private_key() {
  auto key = new_key();
  if (!key.ok()) return key.status();
  return key_pem(key->get());
}

StatusOr<KeyAndCert> create_ca(std::string_view common_name, int days) {
  auto key = new_key();
  if (!key.ok()) return key.status();
  auto cert = new_cert(key->get(), common_name, static_cast<long>(days) * 24 * 3600);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (!X509_set_issuer_name(c, X509_get_subject_name(c))) {
    return internal_error("cannot set the issuer: " + ssl_error());
  }
  CANOPY_RETURN_IF_ERROR(add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, c, NID_subject_key_identifier, "hash"));
  if (!X509_sign(c, key->get(), EVP_sha256())) {
    return internal_error("cannot sign the CA certificate: " + ssl_error());
  }
  KeyAndCert out;
  auto kp = key_pem(key->get());
  if (!kp.ok()) return kp.status();
  auto cp = cert_pem(c);
  if (!cp.ok()) return cp.status();
  out.key_pem = std::move(*kp);
  out.cert_pem = std::move(*cp);
  return out;
}

StatusOr<std::string> make_csr(std::string_view key_pem_text, std::string_view common_name) {
  auto key = read_key(key_pem_text);
  if (!key.ok()) return key.status();
  Ptr<X509_REQ> req(X509_REQ_new());
  if (!req || !X509_REQ_set_version(req.get(), 0) || !X509_REQ_set_pubkey(req.get(), key->get())) {
    return internal_error("cannot build a CSR: " + ssl_error());
  }
  CANOPY_RETURN_IF_ERROR(set_cn(X509_REQ_get_subject_name(req.get()), common_name));
  if (!X509_REQ_sign(req.get(), key->get(), EVP_sha256())) {
    return internal_error("cannot sign the CSR: " + ssl_error());
  }
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_REQ(bio.get(), req.get())) {
    return internal_error("cannot write the CSR: " + ssl_error());
  }
  return bio_text(bio.get());
}

StatusOr<std::string> sign_csr(const KeyAndCert& ca, std::string_view csr_pem,
                               std::string_view expected_cn, int days) {
  return sign_csr_seconds(ca, csr_pem, expected_cn, static_cast<long>(days) * 24 * 3600);
}

StatusOr<std::string> sign_csr_seconds(const KeyAndCert& ca, std::string_view csr_pem,
                                       std::string_view expected_cn, long validity_s) {
  auto bio = mem_bio(csr_pem);
  Ptr<X509_REQ> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return invalid_argument("csr: not a PEM certificate signing request");
  ERR_clear_error();
  Ptr<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
  if (!pub || X509_REQ_verify(req.get(), pub.get()) != 1) {
    ERR_clear_error();
    return invalid_argument("csr: its signature does not verify with its own public key");
  }
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  const std::string cn = common_name_of(subject);
  if (cn != expected_cn || X509_NAME_entry_count(subject) != 1) {
    return invalid_argument("csr: subject must be exactly CN=" + std::string(expected_cn) +
                            " (the site the token is bound to), not CN=" + cn.substr(0, 80));
  }
  auto ca_key = read_key(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status();
  auto ca_cert = read_cert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status();
  auto cert = new_cert(pub.get(), expected_cn, validity_s);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (!X509_set_issuer_name(c, X509_get_subject_name(ca_cert->get()))) {
    return internal_error("cannot set the issuer: " + ssl_error());
  }
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_basic_constraints, "critical,CA:FALSE"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_key_usage, "critical,digitalSignature"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_ext_key_usage, "clientAuth"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_authority_key_identifier, "keyid"));
  if (!X509_sign(c, ca_key->get(), EVP_sha256())) {
    return internal_error("cannot sign the certificate: " + ssl_error());
  }
  return cert_pem(c);
}

StatusOr<KeyAndCert> issue_server_cert(const KeyAndCert& ca, const std::vector<std::string>& hosts,
                                       int days) {
  if (hosts.empty()) return invalid_argument("a serving certificate needs at least one host name");
  std::string san;
  for (const std::string& h : hosts) {
    if (h.empty() || h.find_first_of(", ") != std::string::npos) {
      return invalid_argument("host name \"" + h + "\" is empty or holds a comma or space");
    }
    unsigned char addr[16];
    const bool ip =
        inet_pton(AF_INET, h.c_str(), addr) == 1 || inet_pton(AF_INET6, h.c_str(), addr) == 1;
    if (!san.empty()) san += ",";
    san += (ip ? "IP:" : "DNS:") + h;
  }
  auto key = new_key();
  if (!key.ok()) return key.status();
  auto ca_key = read_key(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status();
  auto ca_cert = read_cert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status();
  auto cert = new_cert(key->get(), hosts.front(), static_cast<long>(days) * 24 * 3600);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (!X509_set_issuer_name(c, X509_get_subject_name(ca_cert->get()))) {
    return internal_error("cannot set the issuer: " + ssl_error());
  }
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_basic_constraints, "critical,CA:FALSE"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_key_usage, "critical,digitalSignature"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_ext_key_usage, "serverAuth"));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_subject_alt_name, san.c_str()));
  CANOPY_RETURN_IF_ERROR(add_ext(c, ca_cert->get(), NID_authority_key_identifier, "keyid"));
  if (!X509_sign(c, ca_key->get(), EVP_sha256())) {
    return internal_error("cannot sign the certificate: " + ssl_error());
  }
  KeyAndCert out;
  auto kp = key_pem(key->get());
  if (!kp.ok()) return kp.status();
  auto cp = cert_pem(c);
  if (!cp.ok()) return cp.status();
  out.key_pem = std::move(*kp);
  out.cert_pem = std::move(*cp);
  return out;
}

StatusOr<std::string> sign_bytes(std::string_view key_pem_text, std::string_view data) {
  auto key = read_key(key_pem_text);
  if (!key.ok()) return key.status();
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t n = 0;
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key->get()) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return internal_error("cannot sign: " + ssl_error());
  }
  std::string sig(n, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &n,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return internal_error("cannot sign: " + ssl_error());
  }
  sig.resize(n);
  return hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
}

Status verify_bytes(std::string_view cert_pem_text, std::string_view data,
                    std::string_view signature_hex) {
  auto cert = read_cert(cert_pem_text);
  if (!cert.ok()) return cert.status();
  if (signature_hex.size() % 2 != 0 || signature_hex.size() > 1024) {
    return invalid_argument("signature: not hex");
  }
  std::string sig;
  for (size_t i = 0; i < signature_hex.size(); i += 2) {
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = nibble(signature_hex[i]), lo = nibble(signature_hex[i + 1]);
    if (hi < 0 || lo < 0) return invalid_argument("signature: not lowercase hex");
    sig.push_back(static_cast<char>(hi * 16 + lo));
  }
  Ptr<EVP_PKEY> pub(X509_get_pubkey(cert->get()));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!pub || !md ||
      EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, pub.get()) != 1) {
    return internal_error("cannot verify: " + ssl_error());
  }
  const int ok =
      EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  if (ok != 1) return permission_denied("the signature does not verify with the certificate's key");
  return ok_status();
}

StatusOr<CertValidity> cert_validity(std::string_view pem) {
  auto cert = read_cert(pem);
  if (!cert.ok()) return cert.status();
  auto ms = [](const ASN1_TIME* t) -> StatusOr<uint64_t> {
    struct tm tm {};
    if (ASN1_TIME_to_tm(t, &tm) != 1) return invalid_argument("certificate: unreadable validity");
    return static_cast<uint64_t>(timegm(&tm)) * 1000;
  };
  auto nb = ms(X509_get0_notBefore(cert->get()));
  if (!nb.ok()) return nb.status();
  auto na = ms(X509_get0_notAfter(cert->get()));
  if (!na.ok()) return na.status();
  return CertValidity{*nb, *na};
}

StatusOr<std::string> cert_fingerprint(std::string_view pem) {
  auto cert = read_cert(pem);
  if (!cert.ok()) return cert.status();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!X509_digest(cert->get(), EVP_sha256(), md, &n)) {
    return internal_error("cannot digest the certificate: " + ssl_error());
  }
  return "sha256:" + hex(md, n);
}

StatusOr<std::string> normalize_fingerprint(std::string_view text) {
  std::string_view t = text;
  if (t.starts_with("sha256:") || t.starts_with("SHA256:")) t.remove_prefix(7);
  std::string digits;
  for (char c : t) {
    if (c == ':') continue;
    const char l = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    if (!((l >= '0' && l <= '9') || (l >= 'a' && l <= 'f'))) {
      return invalid_argument("CA fingerprint: not hex digits (want sha256:<64 hex digits>)");
    }
    digits.push_back(l);
  }
  if (digits.size() != 64) {
    return invalid_argument("CA fingerprint: " + std::to_string(digits.size()) +
                            " hex digits, want 64 (sha256:<64 hex digits>)");
  }
  return "sha256:" + digits;
}

StatusOr<std::string> cert_common_name(std::string_view pem) {
  auto cert = read_cert(pem);
  if (!cert.ok()) return cert.status();
  return common_name_of(X509_get_subject_name(cert->get()));
}

Status verify_cert(std::string_view ca_pem, std::string_view pem, std::string_view key_pem_text) {
  auto ca = read_cert(ca_pem);
  if (!ca.ok()) return invalid_argument("CA: " + ca.status().message());
  auto cert = read_cert(pem);
  if (!cert.ok()) return invalid_argument("certificate: " + cert.status().message());
  Ptr<X509_STORE> store(X509_STORE_new());
  Ptr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  if (!store || !ctx || !X509_STORE_add_cert(store.get(), ca->get()) ||
      !X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr)) {
    return internal_error("cannot set up verification: " + ssl_error());
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return invalid_argument(std::string("certificate does not verify against the CA: ") +
                            X509_verify_cert_error_string(err));
  }
  if (!key_pem_text.empty()) {
    auto key = read_key(key_pem_text);
    if (!key.ok()) return key.status();
    if (X509_check_private_key(cert->get(), key->get()) != 1) {
      ERR_clear_error();
      return invalid_argument("certificate does not hold this site's public key");
    }
  }
  return ok_status();
}

Status write_private_file(const std::string& path, std::string_view content, unsigned mode) {
  if ((mode & ~0640u) != 0)
    return invalid_argument(path + ": a private file's mode is at most 0640");
  namespace fs = std::filesystem;
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path() && !fs::exists(p.parent_path(), ec)) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) return unavailable("cannot create " + p.parent_path().string() + ": " + ec.message());
    fs::permissions(p.parent_path(), fs::perms::owner_all, ec);
  }
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return unavailable("cannot create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return unavailable("cannot write " + tmp + ": " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  // A umask may narrow the mode and an inherited ACL widen it: set it again.
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return unavailable("cannot sync " + tmp + ": " + std::strerror(e));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return unavailable("cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
  return ok_status();
}

StatusOr<std::string> random_base64url(size_t bytes) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    return unavailable("no random bytes (OpenSSL RAND_bytes failed)");
  }
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kB64[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kB64[(acc << (6 - bits)) & 0x3f]);
  OPENSSL_cleanse(raw.data(), raw.size());
  return out;
}

StatusOr<std::string> random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    return unavailable("no random bytes (OpenSSL RAND_bytes failed)");
  }
  return hex(raw.data(), raw.size());
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) != 1) {
    return std::string();  // only an OpenSSL without SHA-256; no digest matches then
  }
  return hex(md, n);
}

}  // namespace canopy::daemon
