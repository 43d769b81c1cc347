// The hub's enrollment over a real store with real OpenSSL (hub/enrollment.h,
// daemon/identity.h): the CA, tokens (forged, expired, replayed, bound to a
// site), certificates, the NATS authorization file, revocation, file modes.
#include "hub/enrollment.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "daemon/identity.h"
#include "model/keys.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_store.h"

namespace canopy::hub {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

class EnrollmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = open_test_store(dir_, "store", 1, &clock_);
    ASSERT_TRUE(store_);
    options_.hub_name = "hub";
    options_.data_dir = dir_.file("data");
    options_.nats_auth_file = dir_.file("nats/auth.conf");
    auto e = Enrollment::open(store_.get(), &clock_, options_);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    enrollment_ = std::move(*e);
  }

  // A key and CSR made as the spoke makes them.
  std::pair<std::string, std::string> key_and_csr(const std::string& cn) {
    auto key = daemon::generate_private_key();
    EXPECT_TRUE(key.ok());
    auto csr = daemon::make_csr(*key, cn);
    EXPECT_TRUE(csr.ok());
    return {*key, *csr};
  }

  testing::TempDir dir_{"canopy-enrollment-"};
  ManualClock clock_;
  std::unique_ptr<Store> store_;
  EnrollmentOptions options_;
  std::unique_ptr<Enrollment> enrollment_;
};

TEST_F(EnrollmentTest, CaIsMadeOncePrivatelyAndKeptAcrossRestarts) {
  EXPECT_EQ(mode_of(options_.data_dir + "/ca/ca.key"), 0600);
  EXPECT_EQ(mode_of(options_.data_dir + "/ca"), 0700);
  EXPECT_EQ(mode_of(options_.data_dir + "/nats-hub.password"), 0600);
  EXPECT_EQ(mode_of(options_.nats_auth_file), 0640);
  const std::string fp = enrollment_->ca_fingerprint();
  EXPECT_EQ(fp.size(), 7u + 64u);
  EXPECT_EQ(daemon::cert_fingerprint(enrollment_->ca_pem()).value(), fp);
  const std::string password = enrollment_->hub_nats_password();
  enrollment_.reset();
  auto again = Enrollment::open(store_.get(), &clock_, options_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->ca_fingerprint(), fp);
  EXPECT_EQ((*again)->hub_nats_password(), password);
  // Half a CA is an error, not a new CA.
  std::remove((options_.data_dir + "/ca/ca.crt").c_str());
  auto half = Enrollment::open(store_.get(), &clock_, options_);
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.status().message().find("restore both"), std::string::npos);
}

TEST_F(EnrollmentTest, TokenEnrollsItsSiteOnce) {
  auto issued = enrollment_->issue("shop-1", 3600);
  ASSERT_TRUE(issued.ok()) << issued.status().to_string();
  EXPECT_TRUE(issued->text.starts_with("canopy-enroll_"));
  EXPECT_EQ(issued->ca_fingerprint, enrollment_->ca_fingerprint());
  // Only the hash is stored.
  auto token = model::parse_bootstrap_token(issued->text);
  ASSERT_TRUE(token.ok());
  const std::string stored = store_->get(model::enrollment_token_key(token->id)).value();
  EXPECT_EQ(stored.find(token->secret), std::string::npos);

  auto [key, csr] = key_and_csr("shop-1");
  auto site = enrollment_->enroll(issued->text, csr);
  ASSERT_TRUE(site.ok()) << site.status().to_string();
  EXPECT_EQ(site->site, "shop-1");
  EXPECT_TRUE(daemon::verify_cert(site->ca_pem, site->certificate_pem, key).ok());
  EXPECT_EQ(daemon::cert_common_name(site->certificate_pem).value(), "shop-1");
  EXPECT_EQ(site->nats_user, "site-shop-1");
  EXPECT_GE(site->nats_password.size(), 32u);

  // The authorization file lists the site, confined, with a hash only.
  const std::string auth = read(options_.nats_auth_file);
  EXPECT_NE(auth.find("\"site-shop-1\""), std::string::npos) << auth;
  EXPECT_NE(auth.find("publish: {allow: [\"canopy.v1.*.shop-1.up\"]}"), std::string::npos) << auth;
  EXPECT_NE(auth.find("subscribe: {allow: [\"canopy.v1.*.shop-1.down\"]}"), std::string::npos)
      << auth;
  // Its bus's leaf user, bound to an account of the site's own that
  // exchanges only the site's telemetry and barrier subjects with the hub's.
  EXPECT_EQ(site->nats_leaf_user, "leaf-shop-1");
  EXPECT_NE(auth.find("{user: \"leaf-shop-1\", password: \"$2"), std::string::npos) << auth;
  EXPECT_NE(auth.find("allowed_connection_types: [\"LEAFNODE\"]"), std::string::npos) << auth;
  EXPECT_NE(auth.find("{stream: \"tm.*.shop-1.>\", accounts: [\"CANOPY-HUB\"]}"), std::string::npos)
      << auth;
  EXPECT_NE(auth.find("{stream: {account: \"CANOPY-SITE-shop-1\", subject: "
                      "\"canopy.telemetry.v1.barrier.shop-1\"}}"),
            std::string::npos)
      << auth;
  EXPECT_NE(auth.find("{stream: {account: \"CANOPY-HUB\", subject: "
                      "\"canopy.telemetry.v1.barrier.shop-1.ack\"}}"),
            std::string::npos)
      << auth;
  EXPECT_NE(auth.find("no_auth_user: \"canopy-nobody\""), std::string::npos) << auth;
  EXPECT_EQ(auth.find(site->nats_password), std::string::npos);
  EXPECT_EQ(auth.find(enrollment_->hub_nats_password()), std::string::npos);

  // Replayed: refused, whatever the CSR.
  auto again = enrollment_->enroll(issued->text, csr);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(again.status().message().find("already used"), std::string::npos);
  EXPECT_EQ(enrollment_->stats().enrollments, 1u);
  EXPECT_EQ(enrollment_->stats().refused_enrollments, 1u);
}

// Double opt-in: a valid exchange is held until a fleet admin decides;
// nothing is issued before; the identity comes once, at the poll after the
// approval; a denial is told once; wrong secrets and unknown sites learn
// nothing.
TEST_F(EnrollmentTest, ApprovalHoldsTheExchangeUntilAFleetAdminDecides) {
  enrollment_.reset();
  options_.require_approval = true;
  auto e = Enrollment::open(store_.get(), &clock_, options_);
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  enrollment_ = std::move(*e);
  auto [key, csr] = key_and_csr("shop-1");
  auto issued = enrollment_->issue("shop-1", 3600);
  ASSERT_TRUE(issued.ok());
  auto held = enrollment_->enroll(issued->text, csr);
  ASSERT_TRUE(held.ok()) << held.status().to_string();
  EXPECT_TRUE(held->pending);
  EXPECT_TRUE(held->certificate_pem.empty());
  EXPECT_TRUE(held->nats_password.empty());
  EXPECT_EQ(held->request_fingerprint, "sha256:" + daemon::sha256_hex(csr));
  ASSERT_GE(held->poll_secret.size(), 40u);
  EXPECT_EQ(read(options_.nats_auth_file).find("site-shop-1"), std::string::npos);
  EXPECT_TRUE(enrollment_->identities()->empty());
  EXPECT_EQ(enrollment_->stats().pending_requests, 1u);
  // The token is spent.
  EXPECT_EQ(enrollment_->enroll(issued->text, csr).status().code(), StatusCode::kUnauthenticated);
  // Listed, pending; the poll secret's hash only.
  auto pending = enrollment_->pending_enrollments();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].state, "pending");
  EXPECT_EQ((*pending)[0].request_fingerprint, held->request_fingerprint);
  EXPECT_EQ(model::pending_enrollment_document((*pending)[0]).dump().find(held->poll_secret),
            std::string::npos);

  // Polls before the decision: still pending; a wrong secret or site: refused.
  auto early = enrollment_->poll("shop-1", held->poll_secret);
  ASSERT_TRUE(early.ok()) << early.status().to_string();
  EXPECT_TRUE(early->pending);
  EXPECT_TRUE(early->poll_secret.empty());
  EXPECT_EQ(enrollment_->poll("shop-1", "guess").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(enrollment_->poll("shop-2", held->poll_secret).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(enrollment_->poll("../x", held->poll_secret).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(enrollment_->decide("shop-2", true).code(), StatusCode::kNotFound);

  // Approved: the next poll issues the identity, once.
  clock_.advance_ms(60000);
  ASSERT_TRUE(enrollment_->decide("shop-1", true).ok());
  EXPECT_EQ(enrollment_->decide("shop-1", false).code(), StatusCode::kFailedPrecondition);
  auto site = enrollment_->poll("shop-1", held->poll_secret);
  ASSERT_TRUE(site.ok()) << site.status().to_string();
  EXPECT_FALSE(site->pending);
  EXPECT_TRUE(daemon::verify_cert(site->ca_pem, site->certificate_pem, key).ok());
  EXPECT_EQ(site->nats_user, "site-shop-1");
  EXPECT_EQ(site->nats_leaf_user, "leaf-shop-1");
  EXPECT_NE(read(options_.nats_auth_file).find("site-shop-1"), std::string::npos);
  ASSERT_EQ(enrollment_->identities()->size(), 1u);
  EXPECT_EQ(enrollment_->identities()->front().enrolled_at_ms, clock_.now_ms());
  EXPECT_EQ(enrollment_->poll("shop-1", held->poll_secret).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_TRUE(enrollment_->pending_enrollments()->empty());

  // Denied: told once, nothing issued.
  auto [key2, csr2] = key_and_csr("shop-2");
  auto issued2 = enrollment_->issue("shop-2", 3600);
  ASSERT_TRUE(issued2.ok());
  auto held2 = enrollment_->enroll(issued2->text, csr2);
  ASSERT_TRUE(held2.ok() && held2->pending);
  ASSERT_TRUE(enrollment_->decide("shop-2", false).ok());
  auto denied = enrollment_->poll("shop-2", held2->poll_secret);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("denied the enrollment of site shop-2"),
            std::string::npos);
  EXPECT_EQ(enrollment_->poll("shop-2", held2->poll_secret).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(read(options_.nats_auth_file).find("site-shop-2"), std::string::npos);
  EXPECT_EQ(enrollment_->identities()->size(), 1u);
}

TEST_F(EnrollmentTest, ForgedExpiredAndMisboundTokensAreRefused) {
  auto issued = enrollment_->issue("shop-1", 60);
  ASSERT_TRUE(issued.ok());
  auto [key, csr] = key_and_csr("shop-1");
  // Forged: another secret for a real id, an unknown id, garbage.
  std::string forged = issued->text;
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  for (const std::string& t :
       {forged, std::string("canopy-enroll_0123456789abcdef_") + std::string(43, 'x'),
        std::string("garbage"), std::string()}) {
    auto r = enrollment_->enroll(t, csr);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
    EXPECT_NE(r.status().message().find("not recognized"), std::string::npos);
    // The message never repeats the token.
    if (!t.empty()) {
      EXPECT_EQ(r.status().message().find(t), std::string::npos);
    }
  }
  // A CSR for another site: refused, and the token is not spent.
  auto [k2, other] = key_and_csr("shop-2");
  auto mis = enrollment_->enroll(issued->text, other);
  ASSERT_FALSE(mis.ok());
  EXPECT_EQ(mis.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(mis.status().message().find("CN=shop-1"), std::string::npos);
  auto bad = enrollment_->enroll(issued->text, "not a csr");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  // Expired.
  clock_.advance_ms(61'000);
  auto late = enrollment_->enroll(issued->text, csr);
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.status().message().find("expired"), std::string::npos);
  // Limits of issue().
  EXPECT_FALSE(enrollment_->issue("Shop_1", 60).ok());
  EXPECT_FALSE(enrollment_->issue("shop-1", 0).ok());
  EXPECT_FALSE(enrollment_->issue("shop-1", 8 * 24 * 3600).ok());
}

TEST_F(EnrollmentTest, RevokedSiteLeavesTheFileAndIsNotAdmitted) {
  auto issued = enrollment_->issue("shop-1", 60);
  ASSERT_TRUE(issued.ok());
  auto [key, csr] = key_and_csr("shop-1");
  ASSERT_TRUE(enrollment_->enroll(issued->text, csr).ok());
  EXPECT_TRUE(enrollment_->admits("shop-1"));
  ASSERT_TRUE(enrollment_->revoke("shop-1").ok());
  EXPECT_FALSE(enrollment_->admits("shop-1"));
  EXPECT_TRUE(enrollment_->admits("shop-2"));  // never enrolled: not revoked
  EXPECT_EQ(read(options_.nats_auth_file).find("site-shop-1"), std::string::npos);
  // Kept across a restart.
  enrollment_.reset();
  auto again = Enrollment::open(store_.get(), &clock_, options_);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->admits("shop-1"));
  auto missing = (*again)->revoke("nobody");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  // A new enrollment readmits it.
  auto fresh = (*again)->issue("shop-1", 60);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*again)->enroll(fresh->text, csr).ok());
  EXPECT_TRUE((*again)->admits("shop-1"));
}

// The CA as the hub keeps it, to make certificates the hub did not issue
// through enroll().
daemon::KeyAndCert hub_ca(const EnrollmentOptions& o) {
  return {read(o.data_dir + "/ca/ca.key"), read(o.data_dir + "/ca/ca.crt")};
}

TEST_F(EnrollmentTest, RenewalNeedsTheCurrentCertificateAndItsKey) {
  auto issued = enrollment_->issue("shop-1", 3600);
  ASSERT_TRUE(issued.ok());
  auto [key, csr] = key_and_csr("shop-1");
  auto site = enrollment_->enroll(issued->text, csr);
  ASSERT_TRUE(site.ok()) << site.status().to_string();
  const std::string cert = site->certificate_pem;

  // A new key, its CSR signed over with the current key: renewed.
  auto [new_key, new_csr] = key_and_csr("shop-1");
  auto sig = daemon::sign_bytes(key, new_csr);
  ASSERT_TRUE(sig.ok()) << sig.status().to_string();
  auto renewed = enrollment_->renew(cert, new_csr, *sig);
  ASSERT_TRUE(renewed.ok()) << renewed.status().to_string();
  EXPECT_EQ(renewed->site, "shop-1");
  EXPECT_TRUE(daemon::verify_cert(enrollment_->ca_pem(), renewed->certificate_pem, new_key).ok());
  auto ids = enrollment_->identities();
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  EXPECT_EQ((*ids)[0].cert_fingerprint, daemon::cert_fingerprint(renewed->certificate_pem).value());
  EXPECT_EQ(enrollment_->stats().renewals, 1u);

  // A signature by another key, over another CSR, or not hex: refused.
  auto [other_key, other_csr] = key_and_csr("shop-1");
  auto forged = enrollment_->renew(cert, new_csr, daemon::sign_bytes(other_key, new_csr).value());
  EXPECT_EQ(forged.status().code(), StatusCode::kUnauthenticated) << forged.status().to_string();
  auto swapped = enrollment_->renew(cert, other_csr, *sig);
  EXPECT_EQ(swapped.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(enrollment_->renew(cert, new_csr, "zz").status().code(), StatusCode::kUnauthenticated);
  // A CSR for another site.
  auto [k2, csr2] = key_and_csr("shop-2");
  auto other_site = enrollment_->renew(cert, csr2, daemon::sign_bytes(key, csr2).value());
  EXPECT_EQ(other_site.status().code(), StatusCode::kInvalidArgument);
  // A certificate of another CA, naming the site.
  auto foreign_ca = daemon::create_ca("other", 1);
  auto foreign = daemon::sign_csr(*foreign_ca, csr, "shop-1", 1);
  auto by_foreign = enrollment_->renew(*foreign, new_csr, *sig);
  EXPECT_EQ(by_foreign.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(by_foreign.status().message().find("does not verify"), std::string::npos);
  // A certificate of this CA for a site never enrolled.
  auto [gk, gcsr] = key_and_csr("ghost");
  auto ghost = daemon::sign_csr(hub_ca(options_), gcsr, "ghost", 1);
  auto [gk2, gcsr2] = key_and_csr("ghost");
  auto by_ghost = enrollment_->renew(*ghost, gcsr2, daemon::sign_bytes(gk, gcsr2).value());
  EXPECT_EQ(by_ghost.status().code(), StatusCode::kNotFound);

  // Revoked: no renewal, even with a valid certificate.
  ASSERT_TRUE(enrollment_->revoke("shop-1").ok());
  auto [k3, csr3] = key_and_csr("shop-1");
  auto revoked =
      enrollment_->renew(renewed->certificate_pem, csr3, daemon::sign_bytes(new_key, csr3).value());
  EXPECT_EQ(revoked.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(revoked.status().message().find("revoked"), std::string::npos);
  EXPECT_EQ(enrollment_->stats().renewals, 1u);
  EXPECT_EQ(enrollment_->stats().refused_renewals, 7u);
}

// Only the latest certificate renews, or the one it replaced (the site never
// got the answer of its last renewal); an older one is refused though it has
// not expired: a copy taken from the site cannot keep itself alive.
TEST_F(EnrollmentTest, OnlyTheLatestCertificateOrTheOneItReplacedRenews) {
  auto issued = enrollment_->issue("shop-1", 3600);
  ASSERT_TRUE(issued.ok());
  auto [key0, csr0] = key_and_csr("shop-1");
  auto site = enrollment_->enroll(issued->text, csr0);
  ASSERT_TRUE(site.ok()) << site.status().to_string();
  const std::string cert0 = site->certificate_pem;
  auto renew_from = [&](const std::string& cert, const std::string& key) {
    auto [k, csr] = key_and_csr("shop-1");
    auto out = enrollment_->renew(cert, csr, daemon::sign_bytes(key, csr).value());
    return std::make_pair(std::move(out), k);
  };
  auto [first, key1] = renew_from(cert0, key0);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  // The answer was lost: the site renews again from cert0 and gets another.
  auto [again, key1b] = renew_from(cert0, key0);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  // The certificate whose answer was discarded no longer renews.
  auto [lost, k_lost] = renew_from(first->certificate_pem, key1);
  EXPECT_EQ(lost.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(lost.status().message().find("superseded"), std::string::npos)
      << lost.status().to_string();
  // The site goes on from what it holds; then cert0 is two renewals old.
  auto [second, key2] = renew_from(again->certificate_pem, key1b);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  auto [stale, k_stale] = renew_from(cert0, key0);
  EXPECT_EQ(stale.status().code(), StatusCode::kPermissionDenied);
  auto ids = enrollment_->identities();
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  EXPECT_EQ((*ids)[0].cert_fingerprint, daemon::cert_fingerprint(second->certificate_pem).value());
  EXPECT_EQ((*ids)[0].previous_cert_fingerprint,
            daemon::cert_fingerprint(again->certificate_pem).value());
  EXPECT_EQ(enrollment_->stats().renewals, 3u);
  EXPECT_EQ(enrollment_->stats().refused_renewals, 2u);
}

TEST(IdentityTest, ServingCertificatesSignaturesAndValidity) {
  auto ca = daemon::create_ca("ca", 1);
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ(daemon::issue_server_cert(*ca, {}, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(daemon::issue_server_cert(*ca, {"a,b"}, 1).status().code(),
            StatusCode::kInvalidArgument);
  auto served = daemon::issue_server_cert(*ca, {"hub.example", "127.0.0.1", "::1"}, 2);
  ASSERT_TRUE(served.ok()) << served.status().to_string();
  EXPECT_TRUE(daemon::verify_cert(ca->cert_pem, served->cert_pem, served->key_pem).ok());
  EXPECT_EQ(daemon::cert_common_name(served->cert_pem).value(), "hub.example");
  auto v = daemon::cert_validity(served->cert_pem);
  ASSERT_TRUE(v.ok());
  // Two days ahead, back-dated an hour.
  // (Two calls to the clock: a second may pass between them.)
  EXPECT_NEAR(static_cast<double>(v->not_after_ms - v->not_before_ms), (2 * 24 + 1) * 3600e3, 1e3);
  // A short certificate is back-dated by its own length, not an hour.
  auto key = daemon::generate_private_key();
  auto csr = daemon::make_csr(*key, "s");
  auto short_cert = daemon::sign_csr_seconds(*ca, *csr, "s", 30);
  ASSERT_TRUE(short_cert.ok());
  auto sv = daemon::cert_validity(*short_cert);
  EXPECT_NEAR(static_cast<double>(sv->not_after_ms - sv->not_before_ms), 60e3, 1e3);

  auto sig = daemon::sign_bytes(*key, "data");
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(daemon::verify_bytes(*short_cert, "data", *sig).ok());
  EXPECT_EQ(daemon::verify_bytes(*short_cert, "other", *sig).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(daemon::verify_bytes(*short_cert, "data", "0").code(), StatusCode::kInvalidArgument);
}

TEST(IdentityTest, FingerprintsAndPrivateFiles) {
  EXPECT_EQ(daemon::normalize_fingerprint("SHA256:AB:" + std::string(62, 'c')).value(),
            "sha256:ab" + std::string(62, 'c'));
  EXPECT_FALSE(daemon::normalize_fingerprint("sha256:abc").ok());
  EXPECT_FALSE(daemon::normalize_fingerprint("sha256:" + std::string(64, 'z')).ok());
  EXPECT_FALSE(daemon::cert_fingerprint("not pem").ok());
  testing::TempDir dir("canopy-identity-");
  const std::string path = dir.file("sub/secret");
  ASSERT_TRUE(daemon::write_private_file(path, "x").ok());
  EXPECT_EQ(mode_of(path), 0600);
  EXPECT_EQ(mode_of(dir.file("sub")), 0700);
  EXPECT_EQ(read(path), "x");
  // A certificate from another CA does not verify.
  auto ca1 = daemon::create_ca("one", 1);
  auto ca2 = daemon::create_ca("two", 1);
  ASSERT_TRUE(ca1.ok() && ca2.ok());
  auto key = daemon::generate_private_key();
  auto csr = daemon::make_csr(*key, "s");
  auto cert = daemon::sign_csr(*ca1, *csr, "s", 1);
  ASSERT_TRUE(cert.ok()) << cert.status().to_string();
  EXPECT_TRUE(daemon::verify_cert(ca1->cert_pem, *cert, *key).ok());
  EXPECT_FALSE(daemon::verify_cert(ca2->cert_pem, *cert).ok());
  auto other_key = daemon::generate_private_key();
  EXPECT_FALSE(daemon::verify_cert(ca1->cert_pem, *cert, *other_key).ok());
}

}  // namespace
}  // namespace canopy::hub
