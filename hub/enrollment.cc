// The hub's enrollment (hub/enrollment.h): CA, bootstrap tokens, site
// certificates and NATS users, revocation.
#include "hub/enrollment.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "daemon/password_hash.h"
#include "model/access.h"
#include "model/keys.h"
#include "model/names.h"
#include "sync/subjects.h"

namespace canopy::hub {
namespace {

constexpr int kCaDays = 3650;
constexpr uint64_t kMaxTokenTtlSeconds = 7 * 24 * 3600;
// NATS passwords are 40 random characters of [A-Za-z0-9] (238 bits): the
// cost of bcrypt protects guessable passwords, not these, and nats-server
// pays it at every connect, so the minimum is enough (as for the bus,
// spoke/bus/bus_config.cc).
constexpr size_t kNatsPasswordChars = 40;
// The secret a spoke polls a pending enrollment with (double opt-in).
constexpr size_t kPollSecretChars = 43;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + quoted(items[i]);
  return out + "]";
}

// The one answer for a token that is malformed, unknown, or whose secret does
// not match: nothing tells a forger which.
Status not_recognized() {
  return unauthenticated(
      "bootstrap token not recognized (mistyped, forged, or issued by another hub); ask a fleet "
      "admin for a new one: kubectl canopy enroll SITE");
}

std::string when(uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string site_nats_user(std::string_view site) { return "site-" + std::string(site); }
std::string site_leaf_user(std::string_view site) { return "leaf-" + std::string(site); }
std::string site_nats_account(std::string_view site) { return "CANOPY-SITE-" + std::string(site); }
std::vector<std::string> site_leaf_exports(std::string_view site) {
  return {sync::site_telemetry_subjects(site), sync::telemetry_barrier_subject(site)};
}
std::vector<std::string> site_leaf_imports(std::string_view site) {
  return {sync::telemetry_barrier_ack_subject(site)};
}

// What the spoke's sync uses (sync/nats_transport.cc publishes and
// subscribes only; no request/reply, so no _INBOX): it publishes its up
// subject and subscribes its down subject, under any parent (a site may move
// to a regional hub).
std::vector<std::string> site_publish_allow(std::string_view site) {
  return {sync::up_subject("*", site)};
}
std::vector<std::string> site_subscribe_allow(std::string_view site) {
  return {sync::down_subject("*", site)};
}

Enrollment::Enrollment(Store* store, Clock* clock, EnrollmentOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

StatusOr<std::unique_ptr<Enrollment>> Enrollment::open(Store* store, Clock* clock,
                                                       EnrollmentOptions options) {
  std::unique_ptr<Enrollment> e(new Enrollment(store, clock, std::move(options)));
  CANOPY_RETURN_IF_ERROR(e->load_ca());
  CANOPY_RETURN_IF_ERROR(e->load_revoked());
  if (e->manages_nats()) {
    CANOPY_RETURN_IF_ERROR(e->load_hub_password());
    CANOPY_RETURN_IF_ERROR(e->write_nats_authorization(true));
  }
  return e;
}

StatusOr<daemon::KeyAndCert> load_or_create_ca(const std::string& data_dir,
                                               const std::string& hub_name) {
  namespace fs = std::filesystem;
  const std::string dir = data_dir + "/ca";
  const std::string key_path = dir + "/ca.key";
  const std::string cert_path = dir + "/ca.crt";
  std::error_code ec;
  const bool have_key = fs::exists(key_path, ec);
  const bool have_cert = fs::exists(cert_path, ec);
  if (have_key != have_cert) {
    return failed_precondition("CA: " + (have_key ? cert_path : key_path) + " is missing but " +
                               (have_key ? key_path : cert_path) +
                               " exists; restore both from a backup (the CA cannot be half made)");
  }
  daemon::KeyAndCert ca;
  if (!have_key) {
    auto made = daemon::create_ca("canopy hub " + hub_name + " CA", kCaDays);
    if (!made.ok()) return made.status();
    CANOPY_RETURN_IF_ERROR(daemon::write_private_file(key_path, made->key_pem));
    // The certificate is public; it is written 0600 too, with its directory.
    CANOPY_RETURN_IF_ERROR(daemon::write_private_file(cert_path, made->cert_pem));
    ca = std::move(*made);
    spdlog::info("enrollment: created the hub's CA in {}", dir);
  } else {
    if (::access(key_path.c_str(), R_OK) != 0) {
      return unavailable("CA: cannot read " + key_path);
    }
    ca.key_pem = read_file(key_path);
    ca.cert_pem = read_file(cert_path);
  }
  auto fp = daemon::cert_fingerprint(ca.cert_pem);
  if (!fp.ok()) return invalid_argument("CA: " + cert_path + ": " + fp.status().message());
  // The key must be the certificate's: a mixed-up restore would issue
  // certificates that sites cannot verify.
  if (Status st = daemon::verify_cert(ca.cert_pem, ca.cert_pem, ca.key_pem); !st.ok()) {
    return failed_precondition("CA in " + dir + " is unusable: " + st.message());
  }
  return ca;
}

Status Enrollment::load_ca() {
  auto ca = load_or_create_ca(options_.data_dir, options_.hub_name);
  if (!ca.ok()) return ca.status();
  ca_ = std::move(*ca);
  auto fp = daemon::cert_fingerprint(ca_.cert_pem);
  if (!fp.ok()) return fp.status();
  ca_fingerprint_ = *fp;
  spdlog::info("enrollment: hub CA fingerprint {}", ca_fingerprint_);
  return ok_status();
}

Status Enrollment::load_hub_password() {
  const std::string path = options_.data_dir + "/nats-hub.password";
  hub_user_ = "canopy-hub-" + options_.hub_name;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    hub_password_ = read_file(path);
    while (!hub_password_.empty() &&
           (hub_password_.back() == '\n' || hub_password_.back() == '\r')) {
      hub_password_.pop_back();
    }
    if (hub_password_.size() < 16) {
      return failed_precondition(path + " holds no usable password (delete it to make a new one)");
    }
  } else {
    hub_password_ = daemon::random_password(kNatsPasswordChars);
    CANOPY_RETURN_IF_ERROR(daemon::write_private_file(path, hub_password_ + "\n"));
  }
  auto hash = daemon::bcrypt_hash(hub_password_, daemon::kMinBcryptCost);
  if (!hash.ok()) return hash.status();
  hub_password_hash_ = *hash;
  // canopy-nobody's password is thrown away: nobody logs in as it.
  auto nobody =
      daemon::bcrypt_hash(daemon::random_password(kNatsPasswordChars), daemon::kMinBcryptCost);
  if (!nobody.ok()) return nobody.status();
  nobody_password_hash_ = *nobody;
  return ok_status();
}

Status Enrollment::load_revoked() {
  auto ids = identities();
  if (!ids.ok()) return ids.status();
  std::lock_guard lock(revoked_mu_);
  revoked_.clear();
  for (const auto& i : *ids) {
    if (i.revoked) revoked_.insert(i.site);
  }
  return ok_status();
}

namespace {

// Every document under `prefix` (one per site), parsed by `parse(site,
// doc)`; one that does not parse is logged and skipped.
template <typename T, typename Parse>
StatusOr<std::vector<T>> scan_site_documents(Store* store, std::string_view prefix, Parse parse) {
  std::vector<T> out;
  std::string after;
  do {
    auto page = store->scan(prefix, after, 1000);
    if (!page.ok()) return page.status();
    for (const auto& item : page->items) {
      const std::string site = item.key.substr(prefix.size());
      StatusOr<T> parsed = parse(site, nlohmann::json::parse(item.json, nullptr, false));
      if (!parsed.ok()) {
        spdlog::warn("enrollment: {} skipped: {}", item.key, parsed.status().message());
        continue;
      }
      out.push_back(std::move(*parsed));
    }
    after = page->next_after;
  } while (!after.empty());
  return out;
}

}  // namespace

StatusOr<std::vector<model::SiteIdentity>> Enrollment::identities() {
  return scan_site_documents<model::SiteIdentity>(store_, model::kSiteIdentitiesPrefix,
                                                  model::parse_site_identity);
}

StatusOr<model::PendingEnrollment> Enrollment::load_pending(std::string_view site) {
  auto raw = store_->get(model::pending_enrollment_key(site));
  if (!raw.ok()) return raw.status();
  return model::parse_pending_enrollment(site, nlohmann::json::parse(*raw, nullptr, false));
}

StatusOr<IssuedBootstrap> Enrollment::issue(std::string_view site, uint64_t ttl_seconds) {
  if (Status st = sync::validate_node_name(site); !st.ok()) {
    return invalid_argument("site: " + st.message());
  }
  if (ttl_seconds == 0 || ttl_seconds > kMaxTokenTtlSeconds) {
    return invalid_argument("ttl: " + std::to_string(ttl_seconds) +
                            " s is outside 1 s to 7 days (a bootstrap token is short-lived)");
  }
  auto id = daemon::random_hex(model::kTokenIdChars / 2);
  if (!id.ok()) return id.status();
  auto secret = daemon::random_base64url(32);
  if (!secret.ok()) return secret.status();
  const model::BearerToken token{*id, *secret};
  model::BootstrapTokenRecord r;
  r.id = *id;
  r.site = std::string(site);
  r.hash = daemon::sha256_hex(token.secret);
  r.created_at_ms = clock_->now_ms();
  r.expires_at_ms = r.created_at_ms + ttl_seconds * 1000;
  auto put =
      store_->put_value(model::enrollment_token_key(r.id), model::bootstrap_record_document(r));
  if (!put.ok()) return put.status();
  ++tokens_issued_;
  // The id names the token; the secret is never logged.
  spdlog::info("enrollment: bootstrap token {} issued for site {} (expires {})", r.id, r.site,
               when(r.expires_at_ms));
  return IssuedBootstrap{model::bootstrap_token_text(token), r.site, r.expires_at_ms,
                         ca_fingerprint_};
}

StatusOr<EnrolledSite> Enrollment::enroll(std::string_view token_text, std::string_view csr_pem) {
  auto refused = [this](Status st) {
    ++refused_;
    spdlog::warn("enrollment refused: {}", st.message());
    return st;
  };
  auto token = model::parse_bootstrap_token(token_text);
  if (!token.ok()) return refused(not_recognized());
  std::lock_guard lock(mu_);
  const std::string key = model::enrollment_token_key(token->id);
  auto raw = store_->get(key);
  if (!raw.ok()) {
    if (raw.status().code() == StatusCode::kNotFound) return refused(not_recognized());
    return raw.status();
  }
  auto record =
      model::parse_bootstrap_record(token->id, nlohmann::json::parse(*raw, nullptr, false));
  if (!record.ok()) return refused(not_recognized());
  // Compared as digests: equal lengths, and the secret itself never compared.
  if (daemon::sha256_hex(token->secret) != record->hash) return refused(not_recognized());
  const uint64_t now = clock_->now_ms();
  if (record->used_at_ms != 0) {
    return refused(unauthenticated("bootstrap token " + record->id + " was already used at " +
                                   when(record->used_at_ms) +
                                   " (a token enrolls once); ask a fleet admin for a new one: "
                                   "kubectl canopy enroll " +
                                   record->site));
  }
  if (now >= record->expires_at_ms) {
    return refused(unauthenticated(
        "bootstrap token " + record->id + " expired at " + when(record->expires_at_ms) +
        "; ask a fleet admin for a new one: kubectl canopy enroll " + record->site));
  }
  // Check the CSR before the token is spent: a bad request costs no token.
  const std::string site = record->site;
  auto cert = sign(csr_pem, site);
  if (!cert.ok()) return refused(cert.status());
  // Spent before anything is handed out, durably: a replay, even after a
  // crash here, finds it used.
  record->used_at_ms = now;
  auto spent = store_->put_value(key, model::bootstrap_record_document(*record));
  if (!spent.ok()) return spent.status();
  if (options_.require_approval) return hold_for_approval(site, record->id, csr_pem, now);
  return issue_identity(site, std::move(*cert), now, "token " + record->id);
}

StatusOr<EnrolledSite> Enrollment::hold_for_approval(const std::string& site,
                                                     const std::string& token_id,
                                                     std::string_view csr_pem, uint64_t now) {
  model::PendingEnrollment p;
  p.site = site;
  p.token_id = token_id;
  p.csr_pem = std::string(csr_pem);
  p.request_fingerprint = "sha256:" + daemon::sha256_hex(csr_pem);
  p.requested_at_ms = now;
  const std::string secret = daemon::random_password(kPollSecretChars);
  p.poll_hash = daemon::sha256_hex(secret);
  auto put =
      store_->put_value(model::pending_enrollment_key(site), model::pending_enrollment_document(p));
  if (!put.ok()) return put.status();
  ++pending_requests_;
  spdlog::info(
      "enrollment: site {} asks to enroll with token {} (request {}); it waits for a fleet "
      "admin: kubectl canopy site approve {}",
      site, token_id, p.request_fingerprint, site);
  EnrolledSite out;
  out.site = site;
  out.ca_pem = ca_.cert_pem;
  out.pending = true;
  out.poll_secret = secret;
  out.request_fingerprint = p.request_fingerprint;
  return out;
}

StatusOr<EnrolledSite> Enrollment::poll(std::string_view site, std::string_view poll_secret) {
  auto refused = [this](Status st) {
    ++refused_;
    spdlog::warn("enrollment poll refused: {}", st.message());
    return st;
  };
  const Status unknown = unauthenticated(
      "no enrollment of this site waits under that poll secret (an approved one is answered "
      "once; ask a fleet admin for a new token: kubectl canopy enroll SITE)");
  if (!model::is_dns1123_label(site)) return refused(unknown);
  std::lock_guard lock(mu_);
  auto p = load_pending(site);
  if (!p.ok()) {
    // None, or a record that does not parse: a poller learns nothing more.
    if (p.status().code() == StatusCode::kNotFound ||
        p.status().code() == StatusCode::kInvalidArgument) {
      return refused(unknown);
    }
    return p.status();
  }
  if (daemon::sha256_hex(poll_secret) != p->poll_hash) return refused(unknown);
  if (p->state == "pending") {
    EnrolledSite out;
    out.site = p->site;
    out.ca_pem = ca_.cert_pem;
    out.pending = true;
    out.request_fingerprint = p->request_fingerprint;
    return out;
  }
  // Answered once: the record goes either way, after the identity is
  // issued (a failure on the way keeps it for the next poll).
  const std::string key = model::pending_enrollment_key(site);
  if (p->state == "denied") {
    auto gone = store_->remove(key);
    if (!gone.ok()) return gone.status();
    return refused(permission_denied("a fleet admin denied the enrollment of site " + p->site +
                                     " (request " + p->request_fingerprint + ") at " +
                                     when(p->decided_at_ms)));
  }
  auto cert = sign(p->csr_pem, p->site);
  if (!cert.ok()) return cert.status();
  auto issued = issue_identity(p->site, std::move(*cert), clock_->now_ms(),
                               "token " + p->token_id + ", approved");
  if (!issued.ok()) return issued.status();
  auto gone = store_->remove(key);
  if (!gone.ok()) return gone.status();
  return issued;
}

Status Enrollment::decide(std::string_view site, bool approve) {
  std::lock_guard lock(mu_);
  auto p = load_pending(site);
  if (!p.ok()) {
    if (p.status().code() == StatusCode::kNotFound) {
      return not_found("no enrollment of site " + std::string(site) +
                       " waits for approval (kubectl canopy enrollments lists them)");
    }
    return p.status();
  }
  if (p->state != "pending") {
    return failed_precondition("the enrollment of site " + p->site + " was already " + p->state +
                               " at " + when(p->decided_at_ms));
  }
  p->state = approve ? "approved" : "denied";
  p->decided_at_ms = clock_->now_ms();
  auto put = store_->put_value(model::pending_enrollment_key(site),
                               model::pending_enrollment_document(*p));
  if (!put.ok()) return put.status();
  spdlog::info("enrollment: site {} {} by a fleet admin (request {})", p->site, p->state,
               p->request_fingerprint);
  return ok_status();
}

StatusOr<std::vector<model::PendingEnrollment>> Enrollment::pending_enrollments() {
  return scan_site_documents<model::PendingEnrollment>(store_, model::kPendingEnrollmentsPrefix,
                                                       model::parse_pending_enrollment);
}

StatusOr<EnrolledSite> Enrollment::issue_identity(const std::string& site, std::string cert_pem,
                                                  uint64_t now, const std::string& how) {
  EnrolledSite out;
  out.site = site;
  out.certificate_pem = std::move(cert_pem);
  out.ca_pem = ca_.cert_pem;
  model::SiteIdentity identity;
  identity.site = site;
  auto fp = daemon::cert_fingerprint(out.certificate_pem);
  if (!fp.ok()) return fp.status();
  identity.cert_fingerprint = *fp;
  identity.cert_not_after_ms = now + cert_validity_ms();
  identity.enrolled_at_ms = now;
  identity.nats_user = site_nats_user(site);
  if (manages_nats()) {
    out.nats_user = identity.nats_user;
    out.nats_leaf_user = site_leaf_user(site);
    out.nats_password = daemon::random_password(kNatsPasswordChars);
    auto hash = daemon::bcrypt_hash(out.nats_password, daemon::kMinBcryptCost);
    if (!hash.ok()) return hash.status();
    identity.nats_password_hash = *hash;
  } else {
    identity.nats_password_hash = "-";  // no NATS user is made
  }
  auto put =
      store_->put_value(model::site_identity_key(site), model::site_identity_document(identity));
  if (!put.ok()) return put.status();
  {
    std::lock_guard rl(revoked_mu_);
    revoked_.erase(site);
  }
  if (manages_nats()) CANOPY_RETURN_IF_ERROR(write_nats_authorization(true));
  ++enrollments_;
  spdlog::info("enrollment: site {} enrolled ({}; certificate {})", site, how,
               identity.cert_fingerprint);
  return out;
}

StatusOr<std::string> Enrollment::sign(std::string_view csr_pem, const std::string& site) {
  if (options_.cert_seconds > 0) {
    return daemon::sign_csr_seconds(ca_, csr_pem, site, options_.cert_seconds);
  }
  return daemon::sign_csr(ca_, csr_pem, site, options_.cert_days);
}

uint64_t Enrollment::cert_validity_ms() const {
  if (options_.cert_seconds > 0) return static_cast<uint64_t>(options_.cert_seconds) * 1000;
  return static_cast<uint64_t>(options_.cert_days) * 24 * 3600 * 1000;
}

StatusOr<RenewedCertificate> Enrollment::renew(std::string_view cert_pem, std::string_view csr_pem,
                                               std::string_view signature_hex) {
  auto refused = [this](Status st) {
    ++refused_renewals_;
    spdlog::warn("certificate renewal refused: {}", st.message());
    return st;
  };
  if (Status st = daemon::verify_cert(ca_.cert_pem, cert_pem); !st.ok()) {
    return refused(
        unauthenticated("the current certificate does not verify against this hub's "
                        "CA: " +
                        st.message() +
                        " (an expired certificate cannot renew: enroll again with a "
                        "new token)"));
  }
  auto cn = daemon::cert_common_name(cert_pem);
  if (!cn.ok()) return refused(unauthenticated("the current certificate names no site"));
  const std::string site = *cn;
  if (Status st = daemon::verify_bytes(cert_pem, csr_pem, signature_hex); !st.ok()) {
    return refused(
        unauthenticated("site " + site + ": the renewal request's signature: " + st.message()));
  }
  std::lock_guard lock(mu_);
  const std::string key = model::site_identity_key(site);
  auto raw = store_->get(key);
  if (!raw.ok()) {
    if (raw.status().code() == StatusCode::kNotFound) {
      return refused(not_found("site " + site + " was never enrolled at this hub"));
    }
    return raw.status();
  }
  auto identity = model::parse_site_identity(site, nlohmann::json::parse(*raw, nullptr, false));
  if (!identity.ok()) return identity.status();
  if (identity->revoked || !admits(site)) {
    return refused(permission_denied("site " + site +
                                     " is revoked: it cannot renew its certificate; enroll it "
                                     "again with a new token"));
  }
  // Only the site's latest certificate renews, or the one it replaced: a
  // site whose last renewal answer was lost still holds that one (it keeps
  // its files until it has the answer, spoke/renew.cc). Any older
  // certificate, a copy taken from the site before, is refused even while
  // it has not expired.
  auto presented = daemon::cert_fingerprint(cert_pem);
  if (!presented.ok())
    return refused(unauthenticated("the current certificate: " + presented.status().message()));
  const bool latest = *presented == identity->cert_fingerprint;
  if (!latest && *presented != identity->previous_cert_fingerprint) {
    return refused(permission_denied(
        "site " + site + ": the certificate " + *presented +
        " was superseded by a later renewal; only the latest certificate renews"));
  }
  auto cert = sign(csr_pem, site);
  if (!cert.ok()) return refused(cert.status());
  auto fp = daemon::cert_fingerprint(*cert);
  if (!fp.ok()) return fp.status();
  const std::string old_fp = identity->cert_fingerprint;
  // Renewed again with the replaced certificate: the answer it never got is
  // discarded, and the replaced one stays the fallback.
  if (latest) identity->previous_cert_fingerprint = old_fp;
  identity->cert_fingerprint = *fp;
  identity->cert_not_after_ms = clock_->now_ms() + cert_validity_ms();
  auto put = store_->put_value(key, model::site_identity_document(*identity));
  if (!put.ok()) return put.status();
  ++renewals_;
  spdlog::info("enrollment: site {} renewed its certificate ({} -> {})", site, old_fp, *fp);
  return RenewedCertificate{site, std::move(*cert), ca_.cert_pem};
}

Status Enrollment::revoke(std::string_view site) {
  if (Status st = sync::validate_node_name(site); !st.ok()) {
    return invalid_argument("site: " + st.message());
  }
  std::lock_guard lock(mu_);
  const std::string key = model::site_identity_key(site);
  auto raw = store_->get(key);
  if (!raw.ok()) {
    if (raw.status().code() == StatusCode::kNotFound) {
      return not_found("site " + std::string(site) + " was never enrolled at this hub");
    }
    return raw.status();
  }
  auto identity = model::parse_site_identity(site, nlohmann::json::parse(*raw, nullptr, false));
  if (!identity.ok()) return identity.status();
  {
    std::lock_guard rl(revoked_mu_);
    revoked_.insert(std::string(site));
  }
  if (!identity->revoked) {
    identity->revoked = true;
    identity->revoked_at_ms = clock_->now_ms();
    auto put = store_->put_value(key, model::site_identity_document(*identity));
    if (!put.ok()) return put.status();
  }
  if (manages_nats()) CANOPY_RETURN_IF_ERROR(write_nats_authorization(true));
  ++revocations_;
  spdlog::info("enrollment: site {} revoked", site);
  return ok_status();
}

bool Enrollment::admits(const std::string& site) const {
  std::lock_guard lock(revoked_mu_);
  return !revoked_.contains(site);
}

Status Enrollment::write_nats_authorization(bool reload) {
  if (!manages_nats()) return ok_status();
  auto ids = identities();
  if (!ids.ok()) return ids.status();
  std::vector<const model::SiteIdentity*> sites;
  for (const auto& i : *ids) {
    if (!i.revoked && i.nats_password_hash != "-") sites.push_back(&i);
  }
  // The hub's account holds the hub's user and each site's client user
  // (confined by permissions to the site's sync subjects). Each site's bus
  // connects as a leaf node with its own user, bound to an account of its
  // own: nats-server 2.9 takes no permissions for leaf connections, so an
  // account is what confines one (docs/security.md). Between the two, only
  // the site's telemetry and barrier flow up and the barrier's echo down.
  std::ostringstream out;
  out << "# Written by canopy-hub " << options_.hub_name << ": its NATS users (docs/security.md).\n"
      << "# Rewritten at every enrollment and revocation: do not edit. Include it in\n"
      << "# nats-server's config at the top level: include \"" << options_.nats_auth_file
      << "\"\n"
      // Without this, nats-server 2.9 takes a leaf connection that brings no
      // credentials into its global account. Anonymous connections are
      // canopy-nobody's, which may connect only over WebSocket (which Canopy
      // does not use) into an account that has nothing: all are refused.
      << "no_auth_user: " << quoted(kNobodyNatsUser) << "\n"
      << "accounts {\n  \"CANOPY-NOBODY\": {users: [{user: " << quoted(kNobodyNatsUser)
      << ", password: " << quoted(nobody_password_hash_)
      << ", allowed_connection_types: [\"WEBSOCKET\"]}]}\n"
      << "  " << quoted(kHubNatsAccount) << ": {\n    users: [\n"
      << "      {user: " << quoted(hub_user_) << ", password: " << quoted(hub_password_hash_)
      << "}\n";
  for (const auto* i : sites) {
    out << "      {user: " << quoted(i->nats_user)
        << ", password: " << quoted(i->nats_password_hash)
        << ", allowed_connection_types: [\"STANDARD\"],\n       permissions: {publish: {allow: "
        << quoted_list(site_publish_allow(i->site))
        << "}, subscribe: {allow: " << quoted_list(site_subscribe_allow(i->site)) << "}}}\n";
  }
  out << "    ]\n";
  if (!sites.empty()) {
    out << "    exports: [\n";
    for (const auto* i : sites) {
      for (const auto& subject : site_leaf_imports(i->site)) {
        out << "      {stream: " << quoted(subject) << ", accounts: ["
            << quoted(site_nats_account(i->site)) << "]}\n";
      }
    }
    out << "    ]\n    imports: [\n";
    for (const auto* i : sites) {
      for (const auto& subject : site_leaf_exports(i->site)) {
        out << "      {stream: {account: " << quoted(site_nats_account(i->site))
            << ", subject: " << quoted(subject) << "}}\n";
      }
    }
    out << "    ]\n";
  }
  out << "  }\n";
  for (const auto* i : sites) {
    out << "  " << quoted(site_nats_account(i->site)) << ": {\n"
        << "    users: [{user: " << quoted(site_leaf_user(i->site))
        << ", password: " << quoted(i->nats_password_hash)
        << ", allowed_connection_types: [\"LEAFNODE\"]}]\n    exports: [\n";
    for (const auto& subject : site_leaf_exports(i->site)) {
      out << "      {stream: " << quoted(subject) << ", accounts: [" << quoted(kHubNatsAccount)
          << "]}\n";
    }
    out << "    ]\n    imports: [\n";
    for (const auto& subject : site_leaf_imports(i->site)) {
      out << "      {stream: {account: " << quoted(kHubNatsAccount)
          << ", subject: " << quoted(subject) << "}}\n";
    }
    out << "    ]\n  }\n";
  }
  out << "}\n";
  const std::string text = out.str();
  if (read_file(options_.nats_auth_file) == text) return ok_status();
  // 0640: nats-server reads it through its group (docs/security.md); it
  // holds bcrypt hashes only.
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(options_.nats_auth_file, text, 0640));
  spdlog::info("enrollment: NATS authorization {} written ({} site user(s))",
               options_.nats_auth_file, sites.size());
  return reload ? signal_reload() : ok_status();
}

Status Enrollment::signal_reload() {
  if (options_.nats_pid_file.empty()) return ok_status();
  std::string text = read_file(options_.nats_pid_file);
  char* end = nullptr;
  const long pid = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || pid <= 1 || end == text.c_str()) {
    // nats-server not started yet: it reads the file when it starts.
    spdlog::warn("enrollment: no pid in {}; nats-server not told to reload",
                 options_.nats_pid_file);
    return ok_status();
  }
  if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0) {
    spdlog::warn("enrollment: cannot signal nats-server (pid {} from {}): {}", pid,
                 options_.nats_pid_file, std::strerror(errno));
    return ok_status();
  }
  ++reloads_;
  return ok_status();
}

EnrollmentStats Enrollment::stats() const {
  return EnrollmentStats{tokens_issued_.load(),    enrollments_.load(),     refused_.load(),
                         revocations_.load(),      reloads_.load(),         renewals_.load(),
                         refused_renewals_.load(), pending_requests_.load()};
}

}  // namespace canopy::hub
