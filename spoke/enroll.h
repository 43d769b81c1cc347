// Enrollment at the site (`canopy-spoke --enroll TOKEN --hub-url URL
// --ca-fingerprint FP`; docs/security.md): the site's key is made here and
// never leaves it; the hub signs a certificate for it and hands out the
// site's NATS credentials. Files (all 0600, in <data_dir>/identity/):
//
//   site.key   the site's EC P-256 private key
//   site.crt   its certificate (CN = the site), signed by the hub's CA
//   ca.crt     the hub's CA certificate, whose fingerprint was pinned
//   nats.json  {"user": "...", "password": "...", "leaf_user": "..."}: the
//              site's NATS user, and its device bus's leaf user
//   pending.json  only while an enrollment waits for approval (double opt-in)
//
// The token is never logged nor written anywhere.
//   hub-url    the hub URL it enrolled at, where it renews (spoke/renew.h)
//
// Over https:// (the hub serves TLS: docs/security.md), the CA is fetched
// without verification, its fingerprint checked against the pin, and every
// later request verifies the hub's certificate (chain and host name) against
// that CA: the token goes only to a hub whose certificate the pinned CA
// issued.
#pragma once

#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "store/status.h"

namespace canopy::spoke {

struct EnrollRequest {
  std::string site;
  std::string token;
  std::string hub_url;         // the hub's HTTP API: http(s)://host:port
  std::string ca_fingerprint;  // sha256:<hex>, from `kubectl canopy enroll`
  std::string data_dir;
  // Double opt-in (the hub answers 202): how often to ask whether a fleet
  // admin decided.
  std::chrono::milliseconds poll_interval{3000};
  // Waits up to its argument between polls; false: stop waiting (the daemon
  // was told to stop), and enroll_site answers Cancelled. Empty: sleeps.
  std::function<bool(std::chrono::milliseconds)> wait;
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
//
// Double opt-in: when the hub holds the exchange for a fleet admin (202),
// the key, the pinned CA and the poll secret are written (pending.json, 0600)
// and the hub is asked every poll_interval until it answers the identity or
// that the enrollment was denied (PermissionDenied; the pending files are
// removed). Called again with pending.json present (a restart), it polls on
// without spending a token.
Status enroll_site(const EnrollRequest& request);

// A client of the hub's HTTP API at `hub_url` (http:// or https://). Over
// https, the hub's certificate is verified against `ca_pem` (chain and host
// name) unless it is empty (then nothing is verified: only to fetch the CA
// whose pin is then checked); `cert_pem` and `key_pem`, when set, are the
// client certificate presented. InvalidArgument for a bad URL or PEM.
StatusOr<std::unique_ptr<httplib::ClientImpl>> hub_http_client(const std::string& hub_url,
                                                               const std::string& ca_pem,
                                                               const std::string& cert_pem = "",
                                                               const std::string& key_pem = "");
// Why a request to the hub failed, in words (the TLS reason when the
// handshake failed or the hub's certificate did not verify), or the hub's
// {"error": ...} with the HTTP status.
std::string hub_error(const httplib::ClientImpl& client, const httplib::Result& res);

struct NatsCredentials {
  std::string user;
  std::string password;
  // The user the site's bus connects its leaf node with (same password);
  // empty for an enrollment by a hub of an earlier release.
  std::string leaf_user;
};
// The site's NATS credentials from `path` (nats.json); nullopt when the file
// does not exist; an error when it is unreadable, malformed, or readable by
// others than its owner.
StatusOr<std::optional<NatsCredentials>> load_nats_credentials(const std::string& path);

}  // namespace canopy::spoke
