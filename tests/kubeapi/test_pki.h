// Test PKI: certificate authorities and leaf certificates made with OpenSSL in
// memory, for the test API server and its clients.
//
// Keys are ECDSA P-256 (fast to generate). Leaf certificates carry what Go's
// TLS stack (and so kubectl) requires: subjectAltName for servers (Go ignores
// the common name), extended key usage serverAuth or clientAuth, and a
// validity window that tests may place in the past to get an expired
// certificate. A client certificate names its user in the common name and its
// groups in organization fields, as kube-apiserver's x509 authenticator reads
// them. Everything is PEM text; nothing touches disk unless the caller writes
// it. Thread-safe (no shared state).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "store/status.h"

namespace canopy::kubeapi {

struct KeyPair {
  std::string cert_pem;
  std::string key_pem;
};

struct CertificateRequest {
  std::string common_name;
  std::vector<std::string> organizations;  // groups, for a client certificate
  std::vector<std::string> ip_addresses;   // subjectAltName IP entries
  std::vector<std::string> dns_names;      // subjectAltName DNS entries
  bool server = false;                     // extendedKeyUsage serverAuth, else clientAuth
  // Validity relative to now: not before now+not_before, not after now+not_after.
  std::chrono::seconds not_before{-3600};
  std::chrono::seconds not_after{24 * 3600};
};

// A self-signed certificate authority named `common_name`.
StatusOr<KeyPair> make_certificate_authority(const std::string& common_name);

// A leaf certificate for `request`, signed by `ca`.
StatusOr<KeyPair> make_certificate(const KeyPair& ca, const CertificateRequest& request);

}  // namespace canopy::kubeapi
