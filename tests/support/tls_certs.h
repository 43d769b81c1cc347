// TestCertificates: throwaway certificate authorities and certificates for
// tests of TLS (NATS mTLS, leaf nodes), made with OpenSSL in a TempDir.
//
// Each call writes PEM files and returns their paths. Keys are EC P-256,
// certificates X.509 v3 signed with SHA-256. A certificate's validity is
// given relative to now, so a test can make one that expired an hour ago or
// is not valid yet. Server certificates carry subjectAltNames (Go's TLS, in
// nats-server, ignores the common name); client certificates carry
// extendedKeyUsage clientAuth.
//
// Failures are reported by an empty path and the reason in *error (tests
// ASSERT on it). REQUIRES: external synchronization.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace canopy::testing {

struct CertFiles {
  std::string cert;  // PEM certificate
  std::string key;   // PEM private key (0600)
  bool ok() const { return !cert.empty(); }
};

struct CertSpec {
  std::string common_name;
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries
  bool server = false;                    // serverAuth (else clientAuth only)
  bool client = true;                     // clientAuth
  // Validity, relative to now.
  std::chrono::seconds not_before{-3600};
  std::chrono::seconds not_after{24 * 3600};
};

class TestCertificates {
 public:
  TestCertificates();

  // A self-signed CA named `name`; its files are <dir>/<name>-ca.{crt,key}.
  CertFiles make_ca(const std::string& name, std::string* error = nullptr);
  // A certificate signed by `ca`, files <dir>/<file_name>.{crt,key}.
  CertFiles issue(const CertFiles& ca, const std::string& file_name, const CertSpec& spec,
                  std::string* error = nullptr);
  // A server certificate for 127.0.0.1 and "localhost" (plus `extra_dns`).
  CertFiles issue_server(const CertFiles& ca, const std::string& file_name,
                         std::vector<std::string> dns_names = {"localhost"},
                         std::vector<std::string> ip_addresses = {"127.0.0.1"},
                         std::string* error = nullptr);
  // A client certificate named `common_name`.
  CertFiles issue_client(const CertFiles& ca, const std::string& common_name,
                         std::chrono::seconds not_after = std::chrono::hours(24),
                         std::chrono::seconds not_before = std::chrono::hours(-1),
                         std::string* error = nullptr);

  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
};

}  // namespace canopy::testing
