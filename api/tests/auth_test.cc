// Tests of api/auth.h over a real store (RocksDB in a temporary directory):
// issuing, authenticating, expiry, revocation, the bootstrap admin token.
#include "api/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "model/keys.h"
#include "tests/support/temp_dir.h"

namespace canopy::api {
namespace {

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }

  void open() {
    auth_.reset();
    store_.reset();
    StoreOptions o;
    o.path = dir_.file("hub");
    o.durability = Durability::kSync;
    auto s = Store::open(o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    auth_ = std::make_unique<Authenticator>(store_.get(), &clock_);
  }

  IssuedToken issue(model::Role role, std::string tenant, uint64_t ttl_ms = 0) {
    auto t = auth_->issue(TokenRequest{role, std::move(tenant), ttl_ms, "test"});
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? *t : IssuedToken{};
  }

  canopy::testing::TempDir dir_;
  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<Store> store_;
  std::unique_ptr<Authenticator> auth_;
};

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(AuthTest, AnIssuedTokenAuthenticatesAsItsRecordAndOnlyTheHashIsStored) {
  const IssuedToken t = issue(model::Role::kEditor, "acme");
  auto r = auth_->authenticate("Bearer " + t.bearer);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->id, t.record.id);
  EXPECT_EQ(r->role, model::Role::kEditor);
  EXPECT_EQ(r->tenant, "acme");
  // The scheme is case-insensitive; surrounding blanks are ignored.
  EXPECT_TRUE(auth_->authenticate("  bearer " + t.bearer + " ").ok());

  auto stored = store_->get(model::token_key(t.record.id));
  ASSERT_TRUE(stored.ok());
  auto bearer = model::parse_bearer(t.bearer);
  ASSERT_TRUE(bearer.ok());
  EXPECT_EQ(stored->find(bearer->secret), std::string::npos) << *stored;
  EXPECT_NE(stored->find(sha256_hex(bearer->secret)), std::string::npos);
}

TEST_F(AuthTest, TokensAreDistinct) {
  std::set<std::string> ids, bearers;
  for (int i = 0; i < 50; ++i) {
    const IssuedToken t = issue(model::Role::kViewer, "acme");
    ids.insert(t.record.id);
    bearers.insert(t.bearer);
  }
  EXPECT_EQ(ids.size(), 50u);
  EXPECT_EQ(bearers.size(), 50u);
}

TEST_F(AuthTest, WrongMissingOrMalformedTokensAreRefusedWithoutEchoingThem) {
  const IssuedToken t = issue(model::Role::kViewer, "acme");
  std::string wrong = t.bearer;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';  // right id, wrong secret
  std::string unknown = t.bearer;
  unknown[7] = unknown[7] == '0' ? '1' : '0';  // an id with no record
  for (const std::string& header :
       {std::string(""), std::string("Bearer"), "Basic " + t.bearer, t.bearer, "Bearer " + wrong,
        "Bearer " + unknown, std::string("Bearer canopy_x")}) {
    auto r = auth_->authenticate(header);
    ASSERT_FALSE(r.ok()) << header;
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << header;
    EXPECT_EQ(r.status().message().find(t.bearer.substr(24)), std::string::npos)
        << r.status().message();
  }
}

TEST_F(AuthTest, ExpiredAndRevokedTokensAreRefused) {
  const IssuedToken shortlived = issue(model::Role::kViewer, "acme", /*ttl_ms=*/60'000);
  const IssuedToken revoked = issue(model::Role::kEditor, "acme");
  EXPECT_TRUE(auth_->authenticate("Bearer " + shortlived.bearer).ok());
  clock_.advance_ms(59'999);
  EXPECT_TRUE(auth_->authenticate("Bearer " + shortlived.bearer).ok());
  clock_.advance_ms(1);
  auto expired = auth_->authenticate("Bearer " + shortlived.bearer);
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos);

  ASSERT_TRUE(auth_->revoke(revoked.record.id).ok());
  ASSERT_TRUE(auth_->revoke(revoked.record.id).ok());  // idempotent
  auto r = auth_->authenticate("Bearer " + revoked.bearer);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("revoked"), std::string::npos);
  EXPECT_EQ(auth_->revoke("00000000000000ff").code(), StatusCode::kNotFound);

  // Revocation is durable: it holds after the store is reopened.
  open();
  EXPECT_FALSE(auth_->authenticate("Bearer " + revoked.bearer).ok());
}

// Records are cached once read; every change of a record in the store, also
// one that does not come through this authenticator (a replicated record, a
// removal), is seen by the next request.
TEST_F(AuthTest, ACachedTokenFollowsChangesOfItsRecordInTheStore) {
  const IssuedToken a = issue(model::Role::kEditor, "acme");
  const IssuedToken b = issue(model::Role::kEditor, "acme");
  const IssuedToken c = issue(model::Role::kEditor, "acme");
  for (const IssuedToken* t : {&a, &b, &c}) {
    ASSERT_TRUE(auth_->authenticate("Bearer " + t->bearer).ok());
  }
  // Revoked by a write to the store itself, as a replicated record would be.
  ASSERT_TRUE(store_->patch(model::token_key(a.record.id), R"({"revoked":true})").ok());
  auto r = auth_->authenticate("Bearer " + a.bearer);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("revoked"), std::string::npos) << r.status().message();
  // Its role changed: the request gets the new one.
  ASSERT_TRUE(store_->patch(model::token_key(b.record.id), R"({"role":"viewer"})").ok());
  auto viewer = auth_->authenticate("Bearer " + b.bearer);
  ASSERT_TRUE(viewer.ok()) << viewer.status().to_string();
  EXPECT_EQ(viewer->role, model::Role::kViewer);
  // Its record removed: the token authenticates nobody.
  ASSERT_TRUE(store_->remove(model::token_key(c.record.id)).ok());
  auto gone = auth_->authenticate("Bearer " + c.bearer);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), StatusCode::kUnauthenticated);
  // A cached record still checks the secret and the expiry on every request.
  const IssuedToken d = issue(model::Role::kViewer, "acme", /*ttl_ms=*/1'000);
  ASSERT_TRUE(auth_->authenticate("Bearer " + d.bearer).ok());
  std::string wrong = d.bearer;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  EXPECT_FALSE(auth_->authenticate("Bearer " + wrong).ok());
  clock_.advance_ms(1'000);
  EXPECT_FALSE(auth_->authenticate("Bearer " + d.bearer).ok());
}

TEST_F(AuthTest, ListsTokensOfOneTenantOrAll) {
  issue(model::Role::kEditor, "acme");
  issue(model::Role::kViewer, "acme");
  issue(model::Role::kViewer, "globex");
  issue(model::Role::kFleetAdmin, "");
  auto acme = auth_->list("acme");
  ASSERT_TRUE(acme.ok());
  EXPECT_EQ(acme->size(), 2u);
  for (const auto& r : *acme) EXPECT_EQ(r.tenant, "acme");
  auto all = auth_->list("");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
}

TEST_F(AuthTest, BootstrapWritesOneAdminTokenFileOnAnEmptyStoreOnly) {
  const std::string path = dir_.file("admin.token");
  auto first = auth_->bootstrap_admin(path);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_TRUE(*first);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string text;
  std::getline(std::ifstream(path), text);
  auto r = auth_->authenticate("Bearer " + text);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->role, model::Role::kFleetAdmin);
  EXPECT_EQ(r->expires_at_ms, 0u);

  // A restart finds a token and writes nothing.
  open();
  std::filesystem::remove(path);
  auto again = auth_->bootstrap_admin(path);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(AuthTest, BootstrapThatCannotWriteItsFileLeavesNoToken) {
  auto r = auth_->bootstrap_admin(dir_.file("no-such-dir/admin.token"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no-such-dir"), std::string::npos);
  auto all = auth_->list("");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  // So the next start, with the directory there, bootstraps.
  std::filesystem::create_directories(dir_.file("no-such-dir"));
  auto ok = auth_->bootstrap_admin(dir_.file("no-such-dir/admin.token"));
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_TRUE(*ok);
}

}  // namespace
}  // namespace canopy::api
