// Enrollment: the hub's side of site identities (docs/security.md).
//
//  - The hub's CA: created on first start in <data>/ca/ (ca.key 0600, never
//    logged nor served; ca.crt), its SHA-256 fingerprint what a site pins.
//  - Bootstrap tokens: issue() makes a one-time token bound to a site and
//    expiring; only a hash of its secret is stored (`enrollment/tokens/<id>`,
//    model/documents.h), and the token's text is returned once, never logged.
//  - enroll(): a spoke presents a token and a CSR; the token must exist, be
//    bound to the CSR's site, unexpired and unused (it is marked used before
//    anything is signed, under a lock, so a replay fails); the hub signs a
//    certificate (CN = site) and makes the site a NATS user with a fresh
//    password (bcrypt hash in `enrollment/sites/<site>`) whose permissions
//    allow only the site's subjects (sync/subjects.h).
//  - The NATS authorization file (nats_auth_file): the hub's account with its
//    own user (full rights) and one user per enrolled, unrevoked site, and
//    per site an account for its bus's leaf node; rewritten on every
//    change and nats-server told to reload (SIGHUP to the pid in
//    nats_pid_file), which cuts the connections of users it no longer lists.
//  - revoke(): the site's identity is marked revoked, its user leaves the
//    file, and admits() says no, so the hub refuses anything that still
//    arrives on its subjects.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "daemon/identity.h"
#include "model/documents.h"
#include "store/clock.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::hub {

struct EnrollmentOptions {
  std::string hub_name;
  std::string data_dir;  // the CA and the hub's NATS password live here
  // nats-server's authorization include file; empty: the hub manages no NATS
  // users (enrolled sites get no NATS credentials).
  std::string nats_auth_file;
  // nats-server's pid file (its `pid_file`): told to reload after each
  // change of nats_auth_file. Empty: not told (reload by hand).
  std::string nats_pid_file;
  // Double opt-in: an exchange of a valid token waits, as a pending
  // enrollment, until a fleet admin approves or denies it (decide()); the
  // spoke polls with the secret the exchange gave it (poll()).
  bool require_approval = false;
  int cert_days = 365;  // validity of a site's certificate
  // When not 0, the validity in seconds instead (tests of rotation).
  long cert_seconds = 0;
};

// A token as issue() returns it: the text is shown once.
struct IssuedBootstrap {
  std::string text;
  std::string site;
  uint64_t expires_at_ms = 0;
  std::string ca_fingerprint;
};

// What enroll() gives the site.
struct EnrolledSite {
  std::string site;
  std::string certificate_pem;
  std::string ca_pem;
  std::string nats_user;       // empty when the hub manages no NATS users
  std::string nats_password;   // shown once; only its hash is kept
  std::string nats_leaf_user;  // the bus's leaf node user (same password)
  // Double opt-in: nothing issued yet; poll with poll_secret (shown once;
  // only its hash is kept) until a fleet admin decides.
  bool pending = false;
  std::string poll_secret;
  std::string request_fingerprint;  // sha256 of the CSR: what the admin compares
};

struct EnrollmentStats {
  uint64_t tokens_issued = 0;
  uint64_t enrollments = 0;
  uint64_t refused_enrollments = 0;
  uint64_t revocations = 0;
  uint64_t nats_reloads = 0;
  uint64_t renewals = 0;
  uint64_t refused_renewals = 0;
  uint64_t pending_requests = 0;  // exchanges held for approval
};

// What renew() gives the site.
struct RenewedCertificate {
  std::string site;
  std::string certificate_pem;
  std::string ca_pem;
};

// The NATS user of a site, and the subjects it may use (docs/security.md).
std::string site_nats_user(std::string_view site);
// The user a site's bus connects its leaf node with (same password as the
// site's NATS user), and the account it is bound to, which exports to the
// hub's account only the site's telemetry and barrier subjects and imports
// only the barrier's echo (sync/subjects.h).
inline constexpr char kHubNatsAccount[] = "CANOPY-HUB";
// The user of connections that bring no credentials (nats-server's
// no_auth_user), which nats-server then refuses.
inline constexpr char kNobodyNatsUser[] = "canopy-nobody";
std::string site_leaf_user(std::string_view site);
std::string site_nats_account(std::string_view site);
std::vector<std::string> site_leaf_exports(std::string_view site);
std::vector<std::string> site_leaf_imports(std::string_view site);
std::vector<std::string> site_publish_allow(std::string_view site);
std::vector<std::string> site_subscribe_allow(std::string_view site);

// The hub's CA from <data_dir>/ca/, made there (key 0600) when missing.
StatusOr<daemon::KeyAndCert> load_or_create_ca(const std::string& data_dir,
                                               const std::string& hub_name);

class Enrollment {
 public:
  // Loads the CA from <data_dir>/ca/ or creates it, loads or creates the
  // hub's NATS password (when nats_auth_file is set) and the revoked sites.
  static StatusOr<std::unique_ptr<Enrollment>> open(Store* store, Clock* clock,
                                                    EnrollmentOptions options);

  const std::string& ca_pem() const { return ca_.cert_pem; }
  const std::string& ca_fingerprint() const { return ca_fingerprint_; }
  bool manages_nats() const { return !options_.nats_auth_file.empty(); }
  // The hub's own NATS user and password (empty unless manages_nats()).
  const std::string& hub_nats_user() const { return hub_user_; }
  const std::string& hub_nats_password() const { return hub_password_; }

  // A bootstrap token for `site`, valid for `ttl_seconds` (1 s to 7 days).
  StatusOr<IssuedBootstrap> issue(std::string_view site, uint64_t ttl_seconds);
  // Exchanges a token and a CSR for the site's identity. Unauthenticated for
  // a token that is malformed, unknown or whose secret does not match (one
  // message for all, so that nothing tells them apart), expired or used;
  // InvalidArgument for a bad CSR.
  StatusOr<EnrolledSite> enroll(std::string_view token_text, std::string_view csr_pem);
  // Rotation before expiry: a site proves itself with its current
  // certificate (issued by this CA, unexpired) and a signature over
  // `csr_pem` made with that certificate's key (`signature_hex`,
  // daemon::sign_bytes), and gets a new certificate for the CSR's key
  // (CN = the site). Unauthenticated for a certificate that does not verify
  // (expired, another CA) or a bad signature; PermissionDenied for a revoked
  // site; NotFound for one never enrolled; InvalidArgument for a bad CSR.
  StatusOr<RenewedCertificate> renew(std::string_view cert_pem, std::string_view csr_pem,
                                     std::string_view signature_hex);
  // Double opt-in (options.require_approval; enroll() then answers
  // `pending`). poll(): the pending enrollment's state for its poll secret:
  // still pending; the identity, issued now, once approved (answered once);
  // PermissionDenied once denied; Unauthenticated for an unknown site or a
  // wrong secret. decide(): a fleet admin's answer; NotFound when nothing
  // waits, FailedPrecondition when already decided.
  StatusOr<EnrolledSite> poll(std::string_view site, std::string_view poll_secret);
  Status decide(std::string_view site, bool approve);
  StatusOr<std::vector<model::PendingEnrollment>> pending_enrollments();
  bool requires_approval() const { return options_.require_approval; }

  // Cuts `site` off: NotFound when it was never enrolled.
  Status revoke(std::string_view site);
  // Whether messages from `site` are accepted: false once revoked (until it
  // enrolls again). Cheap: called for every sync message.
  bool admits(const std::string& site) const;

  // Writes the NATS authorization file (and tells nats-server to reload
  // when `reload`). Done by open() too.
  Status write_nats_authorization(bool reload);

  StatusOr<std::vector<model::SiteIdentity>> identities();
  EnrollmentStats stats() const;

 private:
  Enrollment(Store* store, Clock* clock, EnrollmentOptions options);
  Status load_ca();
  Status load_hub_password();
  Status load_revoked();
  Status signal_reload();
  // With mu_ held: the rest of an enrollment once the token (or a fleet
  // admin) allowed it; `how` is logged.
  StatusOr<EnrolledSite> issue_identity(const std::string& site, std::string cert_pem, uint64_t now,
                                        const std::string& how);
  // The pending enrollment of `site`; NotFound when none waits.
  StatusOr<model::PendingEnrollment> load_pending(std::string_view site);
  StatusOr<EnrolledSite> hold_for_approval(const std::string& site, const std::string& token_id,
                                           std::string_view csr_pem, uint64_t now);

  Store* const store_;
  Clock* const clock_;
  const EnrollmentOptions options_;
  daemon::KeyAndCert ca_;
  std::string ca_fingerprint_;
  std::string hub_user_;
  std::string hub_password_;
  std::string hub_password_hash_;
  std::string nobody_password_hash_;

  std::mutex mu_;  // one enrollment, revocation or file write at a time
  mutable std::mutex revoked_mu_;
  std::set<std::string> revoked_;
  std::atomic<uint64_t> tokens_issued_{0}, enrollments_{0}, refused_{0}, revocations_{0},
      reloads_{0}, renewals_{0}, refused_renewals_{0}, pending_requests_{0};
  StatusOr<std::string> sign(std::string_view csr_pem, const std::string& site);
  uint64_t cert_validity_ms() const;
};

}  // namespace canopy::hub
