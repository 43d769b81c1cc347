// Tests of model/access.h and of the tenant, grant and token records
// (model/documents.h): roles, who may do what, bearer token syntax.
#include "model/access.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "model/documents.h"

namespace canopy::model {
namespace {

using json = nlohmann::json;

const std::string kHash(64, 'a');

TEST(Roles, ParseAndNameRoundTrip) {
  for (Role r : {Role::kFleetAdmin, Role::kTenantAdmin, Role::kEditor, Role::kViewer}) {
    auto parsed = parse_role(role_name(r));
    ASSERT_TRUE(parsed.ok()) << role_name(r);
    EXPECT_EQ(*parsed, r);
  }
  auto bad = parse_role("admin");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("fleet-admin, tenant-admin, editor, viewer"),
            std::string::npos);
}

TEST(Roles, HolderTextNamesTheTenantWhenThereIsOne) {
  EXPECT_EQ(holder_text(Role::kEditor, "acme"), "editor of tenant acme");
  EXPECT_EQ(holder_text(Role::kFleetAdmin, ""), "fleet-admin");
}

TEST(Permits, TheWholeMatrix) {
  struct Row {
    Role role;
    bool read, write, manage, administer;
  };
  // On the role's own tenant.
  const Row rows[] = {
      {Role::kTenantAdmin, true, true, true, false},
      {Role::kEditor, true, true, false, false},
      {Role::kViewer, true, false, false, false},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(role_name(r.role)));
    EXPECT_EQ(permits(r.role, "acme", Action::kRead, "acme"), r.read);
    EXPECT_EQ(permits(r.role, "acme", Action::kWrite, "acme"), r.write);
    EXPECT_EQ(permits(r.role, "acme", Action::kManage, "acme"), r.manage);
    EXPECT_EQ(permits(r.role, "acme", Action::kAdminister, "acme"), r.administer);
    // Never another tenant's objects, nor fleet-level ones.
    for (Action a : {Action::kRead, Action::kWrite, Action::kManage, Action::kAdminister}) {
      EXPECT_FALSE(permits(r.role, "acme", a, "globex"));
      EXPECT_FALSE(permits(r.role, "acme", a, ""));
      // A tenant role with no tenant (a corrupt record) may do nothing.
      EXPECT_FALSE(permits(r.role, "", a, ""));
      EXPECT_FALSE(permits(r.role, "", a, "acme"));
    }
  }
  for (Action a : {Action::kRead, Action::kWrite, Action::kManage, Action::kAdminister}) {
    EXPECT_TRUE(permits(Role::kFleetAdmin, "", a, "acme"));
    EXPECT_TRUE(permits(Role::kFleetAdmin, "", a, ""));
    // A fleet-admin bound to a tenant is not a valid record: nothing.
    EXPECT_FALSE(permits(Role::kFleetAdmin, "acme", a, "acme"));
  }
}

TEST(Permits, WhoMayIssueWhichToken) {
  for (Role w : {Role::kFleetAdmin, Role::kTenantAdmin, Role::kEditor, Role::kViewer}) {
    EXPECT_TRUE(may_issue(Role::kFleetAdmin, w));
    EXPECT_FALSE(may_issue(Role::kEditor, w));
    EXPECT_FALSE(may_issue(Role::kViewer, w));
  }
  EXPECT_FALSE(may_issue(Role::kTenantAdmin, Role::kFleetAdmin));
  EXPECT_FALSE(may_issue(Role::kTenantAdmin, Role::kTenantAdmin));
  EXPECT_TRUE(may_issue(Role::kTenantAdmin, Role::kEditor));
  EXPECT_TRUE(may_issue(Role::kTenantAdmin, Role::kViewer));
}

TEST(Bearer, RoundTripAndMalformedTexts) {
  const BearerToken t{"0123456789abcdef", std::string(42, 'A') + "_"};
  const std::string text = bearer_text(t);
  EXPECT_EQ(text, "canopy_0123456789abcdef_" + t.secret);
  auto back = parse_bearer(text);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->id, t.id);
  EXPECT_EQ(back->secret, t.secret);
  for (const std::string& bad : {
           std::string(""),
           std::string("Bearer ") + text,                      // the scheme is the caller's
           "canopy-0123456789abcdef_" + t.secret,              // prefix
           "canopy_0123456789ABCDEF_" + t.secret,              // upper-case id
           "canopy_0123456789abcde_" + t.secret + "x",         // short id
           "canopy_0123456789abcdef-" + t.secret,              // separator
           "canopy_0123456789abcdef_" + t.secret + "=",        // long secret
           "canopy_0123456789abcdef_" + std::string(43, '+'),  // not base64url
       }) {
    auto p = parse_bearer(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kUnauthenticated) << bad;
    // The message never echoes the text (it may be a real secret, mistyped).
    EXPECT_EQ(p.status().message().find(t.secret), std::string::npos);
  }
}

TEST(TenantRecord, ParsesAndRefuses) {
  auto t = parse_tenant("acme", json{{"name", "acme"}, {"description", "Acme retail"}});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->name, "acme");
  EXPECT_EQ(t->description, "Acme retail");
  auto again = parse_tenant("acme", tenant_document(*t));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->description, "Acme retail");
  EXPECT_TRUE(parse_tenant("acme", json::object()).ok());
  EXPECT_FALSE(parse_tenant("Acme", json::object()).ok());
  EXPECT_FALSE(parse_tenant("acme", json{{"name", "globex"}}).ok());
  EXPECT_FALSE(parse_tenant("acme", json{{"owner", "x"}}).ok());
  EXPECT_FALSE(parse_tenant("acme", json{{"description", 5}}).ok());
  EXPECT_FALSE(parse_tenant("acme", json::array()).ok());
}

TEST(GrantRecord, ChoosesSitesByNameOrSelector) {
  auto g = parse_grant(json::parse(R"({"sites": ["tower-2", "tower-1"],
      "selector": {"matchExpressions": [{"key": "region", "operator": "In",
                                         "values": ["eu-west"]}]}})"));
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_TRUE(g->choice.matches("tower-1", {}));
  EXPECT_TRUE(g->choice.matches("shop-9", {{"region", "eu-west"}}));
  EXPECT_FALSE(g->choice.matches("shop-9", {{"region", "us-east"}}));
  auto empty = parse_grant(json::object());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("a grant must say which sites"), std::string::npos);
  EXPECT_FALSE(parse_grant(json{{"sites", {"Tower"}}}).ok());
  EXPECT_FALSE(parse_grant(json{{"sites", {"a"}}, {"tenant", "acme"}}).ok());
  EXPECT_FALSE(parse_grant(json{{"selector", {{"matchLabels", {{"a", 1}}}}}}).ok());
  EXPECT_TRUE(g->grants("tower-1", {}));
  EXPECT_FALSE(g->grants("shop-9", {}));
}

TEST(GrantRecord, AllSitesGrantsTheWholeFleetAndNothingElse) {
  auto g = parse_grant(json{{"allSites", true}});
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_TRUE(g->grants("any-site", {}));
  EXPECT_TRUE(g->grants("shop-9", {{"region", "us-east"}}));
  auto both = parse_grant(json{{"allSites", true}, {"sites", {"a"}}});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("sites and selector must be left out"), std::string::npos);
  EXPECT_FALSE(parse_grant(json{{"allSites", "yes"}}).ok());
  auto none = parse_grant(json{{"allSites", false}});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("a grant must say which sites"), std::string::npos);
}

TEST(TokenRecord, ParsesWritesAndRefuses) {
  const TokenRecord t{"0123456789abcdef", Role::kEditor, "acme", kHash, 1000, 5000, false, "ci"};
  const json doc = token_document(t);
  EXPECT_EQ(doc["role"], "editor");
  auto back = parse_token(t.id, doc);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->role, Role::kEditor);
  EXPECT_EQ(back->tenant, "acme");
  EXPECT_EQ(back->hash, kHash);
  EXPECT_EQ(back->created_at_ms, 1000u);
  EXPECT_EQ(back->expires_at_ms, 5000u);
  EXPECT_FALSE(back->revoked);
  EXPECT_TRUE(back->valid_at(4999));
  EXPECT_FALSE(back->valid_at(5000));

  TokenRecord forever = t;
  forever.expires_at_ms = 0;
  EXPECT_TRUE(forever.valid_at(UINT64_MAX));
  forever.revoked = true;
  EXPECT_FALSE(forever.valid_at(0));

  const json fleet = {{"role", "fleet-admin"}, {"hash", kHash}};
  EXPECT_TRUE(parse_token(t.id, fleet).ok());

  struct Bad {
    std::string id;
    json doc;
    std::string says;
  };
  const Bad bad[] = {
      {"0123456789ABCDEF", doc, "lowercase hex"},
      {"0123", doc, "lowercase hex"},
      {t.id, json{{"tenant", "acme"}, {"hash", kHash}}, "role is missing"},
      {t.id, json{{"role", "root"}, {"tenant", "acme"}, {"hash", kHash}}, "is not one of"},
      {t.id, json{{"role", "editor"}, {"hash", kHash}}, "is not a DNS-1123 label"},
      {t.id, json{{"role", "fleet-admin"}, {"tenant", "acme"}, {"hash", kHash}}, "no tenant"},
      {t.id, json{{"role", "viewer"}, {"tenant", "acme"}, {"hash", "abc"}}, "SHA-256"},
      {t.id, json{{"role", "viewer"}, {"tenant", "acme"}, {"hash", kHash}, {"expiresAtMs", -1}},
       "non-negative"},
      {t.id, json{{"role", "viewer"}, {"tenant", "acme"}, {"hash", kHash}, {"revoked", "no"}},
       "boolean"},
      {t.id, json{{"role", "viewer"}, {"tenant", "acme"}, {"hash", kHash}, {"secret", "x"}},
       "not a field"},
  };
  for (const Bad& b : bad) {
    auto p = parse_token(b.id, b.doc);
    ASSERT_FALSE(p.ok()) << b.doc.dump();
    EXPECT_NE(p.status().message().find(b.says), std::string::npos)
        << p.status().message() << " / " << b.says;
  }
}

TEST(Access, BootstrapTokenTextRoundTripsAndIsNotABearer) {
  const BearerToken t{"0123456789abcdef", std::string(43, 'Q')};
  const std::string text = bootstrap_token_text(t);
  EXPECT_EQ(text, "canopy-enroll_0123456789abcdef_" + std::string(43, 'Q'));
  auto back = parse_bootstrap_token(text);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->id, t.id);
  EXPECT_EQ(back->secret, t.secret);
  // Neither kind of token passes for the other.
  EXPECT_FALSE(parse_bearer(text).ok());
  EXPECT_FALSE(parse_bootstrap_token(bearer_text(t)).ok());
  for (const std::string& bad : {std::string(), std::string("canopy-enroll_"),
                                 "canopy-enroll_0123456789ABCDEF_" + std::string(43, 'Q'),
                                 "canopy-enroll_0123456789abcdef_" + std::string(42, 'Q'),
                                 "canopy-enroll_0123456789abcdef_" + std::string(42, 'Q') + "="}) {
    auto p = parse_bootstrap_token(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kUnauthenticated);
    EXPECT_NE(p.status().message().find("kubectl canopy enroll"), std::string::npos);
  }
}

TEST(Access, EnrollmentDocumentsRoundTripAndRefuseBadFields) {
  BootstrapTokenRecord r{"0123456789abcdef", "shop-1", kHash, 1, 2, 0};
  auto back = parse_bootstrap_record(r.id, bootstrap_record_document(r));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->site, "shop-1");
  EXPECT_EQ(back->expires_at_ms, 2u);
  json no_expiry = bootstrap_record_document(r);
  no_expiry["expiresAtMs"] = 0;
  EXPECT_FALSE(parse_bootstrap_record(r.id, no_expiry).ok());
  json bad_site = bootstrap_record_document(r);
  bad_site["site"] = "Shop_1";
  EXPECT_FALSE(parse_bootstrap_record(r.id, bad_site).ok());

  SiteIdentity i;
  i.site = "shop-1";
  i.nats_user = "site-shop-1";
  i.nats_password_hash = "$2b$04$abcdefghijklmnopqrstuv";
  i.cert_fingerprint = "sha256:00";
  i.revoked = true;
  auto id = parse_site_identity("shop-1", site_identity_document(i));
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  EXPECT_TRUE(id->revoked);
  EXPECT_EQ(id->nats_user, "site-shop-1");
  // Nothing that would break out of nats-server's quoted strings.
  json quote = site_identity_document(i);
  quote["natsUser"] = "a\"b";
  EXPECT_FALSE(parse_site_identity("shop-1", quote).ok());
  quote["natsUser"] = "a b";
  EXPECT_FALSE(parse_site_identity("shop-1", quote).ok());
  EXPECT_FALSE(parse_site_identity("Shop_1", site_identity_document(i)).ok());
  json revoked_text = site_identity_document(i);
  revoked_text["revoked"] = "yes";
  auto not_bool = parse_site_identity("shop-1", revoked_text);
  ASSERT_FALSE(not_bool.ok());
  EXPECT_EQ(not_bool.status().message(), "revoked must be a boolean, not string");
}

}  // namespace
}  // namespace canopy::model
