// Enrollment at the site (`canopy-spoke --enroll TOKEN --hub-url URL
// --ca-fingerprint FP`; docs/security.md): the site's key is made here and
// never leaves it; the hub signs a certificate for it and hands out the
// site's NATS credentials. Files (all 0600, in <data_dir>/identity/):
//
//   site.key   the site's EC P-256 private key
//   site.crt   its certificate (CN = the site), signed by the hub's CA
//   ca.crt     the hub's CA certificate, whose fingerprint was pinned
//   nats.json  {"user": "...", "password": "..."}: the site's NATS user
//
// The token is never logged nor written anywhere.
#pragma once

#include <optional>
#include <string>

#include "store/status.h"

namespace canopy::spoke {

struct EnrollRequest {
  std::string site;
  std::string token;
  std::string hub_url;         // the hub's HTTP API: http://host:port
  std::string ca_fingerprint;  // sha256:<hex>, from `kubectl canopy enroll`
  std::string data_dir;
};

// The identity files' directory for a data directory.
std::string identity_dir(const std::string& data_dir);

// Enrolls: fetches the hub's CA and checks it against the pinned
// fingerprint before the token is sent, makes the key and a CSR, exchanges
// them with the token (POST <hub_url>/v1/enroll), checks that the answer's
// CA is the pinned one and that the certificate is for this key and site,
// and only then writes the files. Errors say what failed and change nothing
// on disk (but a key already made). FailedPrecondition when the site was
// already enrolled (site.crt exists).
Status enroll_site(const EnrollRequest& request);

struct NatsCredentials {
  std::string user;
  std::string password;
};
// The site's NATS credentials from `path` (nats.json); nullopt when the file
// does not exist; an error when it is unreadable, malformed, or readable by
// others than its owner.
StatusOr<std::optional<NatsCredentials>> load_nats_credentials(const std::string& path);

}  // namespace canopy::spoke
