// Site identities with OpenSSL: the hub's certificate authority, the site's
// key and certificate signing request, the certificate the hub signs, the
// fingerprint a site pins, and private files written 0600. Shared by the hub
// (hub/enrollment.h) and the spoke (spoke/enroll.h); docs/security.md says
// how they fit together.
//
// Keys are EC P-256 in PEM (PKCS#8); certificates X.509 v3 in PEM, signed
// with SHA-256. A fingerprint is "sha256:" and 64 lowercase hex digits of the
// SHA-256 of the certificate's DER bytes (what `openssl x509 -fingerprint
// -sha256` prints, without the colons).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/status.h"

namespace canopy::daemon {

struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;
};

// A new EC P-256 private key, PEM.
StatusOr<std::string> generate_private_key();

// A self-signed CA certificate for `common_name` (basicConstraints CA:TRUE,
// keyUsage keyCertSign and cRLSign), valid for `days`, with a new key.
StatusOr<KeyAndCert> create_ca(std::string_view common_name, int days);

// A certificate signing request for `common_name`, signed with `key_pem`.
StatusOr<std::string> make_csr(std::string_view key_pem, std::string_view common_name);

// Signs `csr_pem` with the CA: checks the request's signature and that its
// subject is exactly CN=`expected_cn` (InvalidArgument otherwise, saying
// what it found), and issues a client certificate (CA:FALSE, digitalSignature,
// clientAuth) valid for `days` with a random serial.
StatusOr<std::string> sign_csr(const KeyAndCert& ca, std::string_view csr_pem,
                               std::string_view expected_cn, int days);

// A serving certificate with a new key, signed by the CA: CN = hosts[0],
// subjectAltName one IP entry per host that is an IPv4 or IPv6 address and one
// DNS entry per other host, serverAuth, valid for `days`. InvalidArgument
// when `hosts` is empty.
StatusOr<KeyAndCert> issue_server_cert(const KeyAndCert& ca, const std::vector<std::string>& hosts,
                                       int days);

// The certificate's notBefore and notAfter, in milliseconds since the epoch.
struct CertValidity {
  uint64_t not_before_ms = 0;
  uint64_t not_after_ms = 0;
};
StatusOr<CertValidity> cert_validity(std::string_view cert_pem);

// sign_csr with a validity in seconds (tests of rotation use short ones).
StatusOr<std::string> sign_csr_seconds(const KeyAndCert& ca, std::string_view csr_pem,
                                       std::string_view expected_cn, long validity_s);

// An ECDSA-SHA256 signature of `data` with `key_pem`, as lowercase hex; and
// its check against the public key of `cert_pem` (PermissionDenied when it
// does not verify).
StatusOr<std::string> sign_bytes(std::string_view key_pem, std::string_view data);
Status verify_bytes(std::string_view cert_pem, std::string_view data,
                    std::string_view signature_hex);

// "sha256:<64 hex>" of the certificate's DER; InvalidArgument for bad PEM.
StatusOr<std::string> cert_fingerprint(std::string_view cert_pem);
// Lowercases a fingerprint and accepts it with or without the "sha256:"
// prefix and with or without colons; InvalidArgument unless 64 hex digits.
StatusOr<std::string> normalize_fingerprint(std::string_view text);

// The certificate's subject common name.
StatusOr<std::string> cert_common_name(std::string_view cert_pem);

// Checks that `cert_pem` was issued by `ca_pem` (signature, validity dates)
// and, when `key_pem` is not empty, that it holds that key's public half.
Status verify_cert(std::string_view ca_pem, std::string_view cert_pem,
                   std::string_view key_pem = {});

// Writes `content` to `path` with mode `mode` (0600 unless told: never wider
// than 0640) from the start (a temporary file created with that mode in the
// same directory, fsynced, then renamed over `path`), so that no other user
// can ever read it. Creates the parent directory (0700) when missing.
Status write_private_file(const std::string& path, std::string_view content, unsigned mode = 0600);

// `bytes` random bytes from OpenSSL, as base64url without padding.
StatusOr<std::string> random_base64url(size_t bytes);
// `bytes` random bytes from OpenSSL, as lowercase hex.
StatusOr<std::string> random_hex(size_t bytes);
// SHA-256 of `data`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view data);

}  // namespace canopy::daemon
